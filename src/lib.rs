//! pingress: a Kubernetes Ingress controller and edge gateway on Cloudflare Pingora.
//!
//! Data flow: a source (manifests directory, or the Kubernetes API) fills a [`source::Snapshot`];
//! [`translate::translate`] turns it, purely, into routes and diagnostics; the
//! [`controller::Controller`] attaches live [`upstream::Pool`]s and publishes an immutable
//! [`generation::Generation`] with one atomic swap; the [`proxy::Gateway`] reads it on every
//! request without locks. EndpointSlice-only changes swap pool endpoint sets and leave routes
//! alone.
//! Safe Rust throughout, except one audited descriptor borrow (`edge::handshake::duplicate`).
#![deny(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod check;
pub mod client;
pub mod config;
pub mod controller;
pub mod convert;
pub mod debug;
pub mod echo;
pub mod edge;
pub mod generation;
pub mod listen;
pub mod metrics;
pub mod policy;
#[cfg(test)]
mod props;
pub mod proxy;
pub mod proxy_protocol;
pub mod routing;
pub mod server;
pub mod source;
pub mod status;
pub mod tls;
pub mod trace;
pub mod translate;
pub mod upstream;
