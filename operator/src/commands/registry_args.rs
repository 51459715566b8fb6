//! Registry flags shared by the commands that talk to registries.

use crate::registry::auth::CredentialStore;
use crate::registry::{RegistryClient, RegistryOptions, RetryPolicy};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Docker config with registry credentials (config.json, or a directory holding one);
    /// repeatable: for each registry the first config that names it wins.
    /// Default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
    #[arg(long, value_name = "PATH")]
    pub registry_config: Vec<PathBuf>,
    /// Talk plain HTTP to this registry (host[:port]); repeatable. Loopback registries
    /// (localhost, 127.0.0.0/8, ::1) always use plain HTTP.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM bundle) to trust for registries.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Retries of a transient registry failure (with capped exponential backoff) before giving
    /// up with exit code 3.
    #[arg(long, default_value_t = RetryPolicy::default().max_retries)]
    pub max_retries: u32,
}

impl RegistryArgs {
    pub fn client(&self) -> Result<Arc<RegistryClient>> {
        let credentials = CredentialStore::load_all(&self.registry_config)?;
        Ok(Arc::new(RegistryClient::new(RegistryOptions {
            credentials,
            insecure_registries: self.insecure_registries.clone(),
            ca_bundle: self.ca_file.clone(),
            retry: RetryPolicy {
                max_retries: self.max_retries,
                ..RetryPolicy::default()
            },
        })?))
    }
}
