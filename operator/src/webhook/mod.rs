pub mod cert_rotator;
pub mod certs;
pub mod tls;
