//! Registry flags shared by the commands that talk to registries.

use crate::exit::UsageError;
use crate::registry::address_policy::AddressPolicy;
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
    /// Talk plain HTTP to this registry (`host[:port]`); repeatable. Loopback registries
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
    /// Only registries matching one of these host globs may be named (`*.example.com`,
    /// `registry.local:5000`; a glob without a port matches every port); repeatable or
    /// comma-separated. Default: any registry. Token realms and blob redirects a registry
    /// sends us to are not restricted by this list.
    #[arg(
        long = "allowed-registries",
        value_name = "GLOB",
        value_delimiter = ','
    )]
    pub allowed_registries: Vec<String>,
    /// Registries (and any other host: token realms, redirect targets) matching one of these
    /// host globs are never contacted; repeatable or comma-separated. Link-local and cloud
    /// metadata addresses (169.254.0.0/16, fd00:ec2::254, metadata.google.internal, ...) are
    /// always refused.
    #[arg(long = "denied-registries", value_name = "GLOB", value_delimiter = ',')]
    pub denied_registries: Vec<String>,
}

impl RegistryArgs {
    pub fn client(&self) -> Result<Arc<RegistryClient>> {
        let policy = self.address_policy()?;
        let credentials = CredentialStore::load_all(&self.registry_config)?;
        Ok(Arc::new(RegistryClient::with_policy(
            RegistryOptions {
                credentials,
                insecure_registries: self.insecure_registries.clone(),
                ca_bundle: self.ca_file.clone(),
                retry: RetryPolicy {
                    max_retries: self.max_retries,
                    ..RetryPolicy::default()
                },
            },
            policy,
        )?))
    }

    pub fn address_policy(&self) -> Result<AddressPolicy, UsageError> {
        AddressPolicy::new(&self.allowed_registries, &self.denied_registries)
            .map_err(|e| UsageError(format!("--allowed-registries / --denied-registries: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        registry: RegistryArgs,
    }

    fn parse(args: &[&str]) -> RegistryArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .registry
    }

    #[test]
    fn allowed_and_denied_registries_are_repeatable_and_comma_separated() {
        let a = parse(&[
            "--allowed-registries",
            "*.corp.example,registry.local:5000",
            "--allowed-registries",
            "127.0.0.1:*",
            "--denied-registries",
            "bad.corp.example",
        ]);
        assert_eq!(
            a.allowed_registries,
            ["*.corp.example", "registry.local:5000", "127.0.0.1:*"]
        );
        let policy = a.address_policy().unwrap();
        assert!(policy.check_registry("r.corp.example").is_ok());
        assert!(policy.check_registry("127.0.0.1:5000").is_ok());
        assert!(policy.check_registry("bad.corp.example").is_err());
        assert!(policy.check_registry("docker.io").is_err());
        let none = parse(&[]).address_policy().unwrap();
        assert!(none.check_registry("docker.io").is_ok());
        assert!(none.check_registry("169.254.169.254").is_err());
    }

    #[test]
    fn bad_globs_are_usage_errors() {
        let e = parse(&["--denied-registries", "https://x.example/"])
            .address_policy()
            .unwrap_err();
        assert!(e.0.contains("--denied-registries"), "{}", e.0);
        assert!(parse(&["--allowed-registries", "a:b"]).client().is_err());
    }
}
