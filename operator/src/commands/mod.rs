//! One module per subcommand: argument parsing and output; the work lives elsewhere.

pub mod convert;
pub mod ztoc;
