//! The opt-in admission webhook that moves Pods to the SOCI-enabled image of what they name:
//! the decision ([`rewrite`], pure), what it answers from ([`view`], kept current by [`sync`]),
//! the fresh tag resolutions ([`resolve`]), the endpoint ([`admission`]), its serving
//! certificates ([`certs`], pure; [`cert_rotator`]), the TLS server ([`tls`]) and the start-up
//! of all of it on a replica ([`serve`]).

pub mod admission;
pub mod cert_rotator;
pub mod certs;
pub mod resolve;
pub mod rewrite;
#[cfg(test)]
mod rewrite_tests;
pub mod serve;
pub mod sync;
pub mod tls;
pub mod view;
