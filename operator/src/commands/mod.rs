//! One module per subcommand: argument parsing and output; the work lives elsewhere.

pub mod build;
pub mod convert;
pub mod crd;
pub mod inspect;
pub mod registry_args;
pub mod run;
pub mod verify;
pub mod ztoc;

/// `--index-version`, as `convert` and `build` take it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum IndexVersionArg {
    V1,
    V2,
}

impl From<IndexVersionArg> for soci_format::conversion_plan::IndexVersion {
    fn from(v: IndexVersionArg) -> Self {
        match v {
            IndexVersionArg::V1 => Self::V1,
            IndexVersionArg::V2 => Self::V2,
        }
    }
}

/// The async runtime of the commands that do I/O. Multi-threaded: layer reads and registry
/// requests run on it while indexing runs on blocking threads.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// One TLS crypto provider for the process (aws-lc-rs, which reqwest and kube both use), so
/// rustls never has to guess; installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
