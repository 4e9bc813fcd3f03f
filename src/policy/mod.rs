//! Runtime state of policies that must outlive a generation, in registries keyed by a
//! stable identity: a route edit elsewhere does not reset a client's limits.

pub mod htpasswd;
pub mod limits;
