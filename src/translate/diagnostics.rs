//! Diagnostics: what translation rejected or ignored, tied to the Ingress it belongs to.
//! Logs, metrics and (in-cluster) Events all read this one list.

use crate::source::ObjKey;

/// The kind of a diagnostic; also its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiagKind {
    ServiceNotFound,
    PortNotFound,
    ResourceBackend,
    InvalidBackend,
    UnsupportedBackend,
    InvalidHost,
    InvalidPath,
    Conflict,
    UnsupportedAnnotation,
    InvalidAnnotation,
    TlsSecret,
    Canary,
    AuthSecret,
}

impl DiagKind {
    pub const ALL: [DiagKind; 13] = [
        DiagKind::ServiceNotFound,
        DiagKind::PortNotFound,
        DiagKind::ResourceBackend,
        DiagKind::InvalidBackend,
        DiagKind::UnsupportedBackend,
        DiagKind::InvalidHost,
        DiagKind::InvalidPath,
        DiagKind::Conflict,
        DiagKind::UnsupportedAnnotation,
        DiagKind::InvalidAnnotation,
        DiagKind::TlsSecret,
        DiagKind::Canary,
        DiagKind::AuthSecret,
    ];

    /// Snake-case name, used as the metric label and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DiagKind::ServiceNotFound => "service_not_found",
            DiagKind::PortNotFound => "port_not_found",
            DiagKind::ResourceBackend => "resource_backend",
            DiagKind::InvalidBackend => "invalid_backend",
            DiagKind::UnsupportedBackend => "unsupported_backend",
            DiagKind::InvalidHost => "invalid_host",
            DiagKind::InvalidPath => "invalid_path",
            DiagKind::Conflict => "conflict",
            DiagKind::UnsupportedAnnotation => "unsupported_annotation",
            DiagKind::InvalidAnnotation => "invalid_annotation",
            DiagKind::TlsSecret => "tls_secret",
            DiagKind::Canary => "canary",
            DiagKind::AuthSecret => "auth_secret",
        }
    }
}

/// One rejected or ignored part of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The Ingress it belongs to; None for config-level problems (the global default backend).
    pub ingress: Option<ObjKey>,
    pub kind: DiagKind,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ingress {
            Some(k) => write!(f, "ingress {k}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
