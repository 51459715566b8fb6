//! Test support for soci-operator.
