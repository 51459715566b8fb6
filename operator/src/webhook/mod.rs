//! The opt-in admission webhook that moves Pods to the SOCI-enabled image of what they name:
//! the decision ([`rewrite`], pure), what it answers from ([`view`], kept current by [`sync`]),
//! the fresh tag resolutions ([`resolve`]) and the endpoint ([`admission`]).

pub mod admission;
pub mod resolve;
pub mod rewrite;
#[cfg(test)]
mod rewrite_tests;
pub mod sync;
pub mod view;
