//! Where images come from and go to. `oci:DIR[:REF]` is an OCI image layout on disk; registry
//! references join it later behind the same [`ImageRef`] seam.

pub mod layout;

use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, optionally naming one of its images.
    Layout {
        dir: PathBuf,
        reference: Option<String>,
    },
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                bail!("{s:?}: oci: needs a directory");
            }
            // oci:DIR:REF, where DIR itself may contain no colon after the last slash.
            let (dir, reference) = match rest.rfind(':') {
                Some(i) if !rest[i + 1..].contains('/') && i > 0 => {
                    (&rest[..i], Some(rest[i + 1..].to_string()))
                }
                _ => (rest, None),
            };
            return Ok(ImageRef::Layout {
                dir: PathBuf::from(dir),
                reference,
            });
        }
        bail!(
            "{s:?}: unsupported image reference (expected oci:DIR[:REF]; registry references are not supported yet)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layout_references() {
        assert_eq!(
            ImageRef::parse("oci:/tmp/x").unwrap(),
            ImageRef::Layout {
                dir: "/tmp/x".into(),
                reference: None
            }
        );
        assert_eq!(
            ImageRef::parse("oci:out:latest").unwrap(),
            ImageRef::Layout {
                dir: "out".into(),
                reference: Some("latest".into())
            }
        );
        assert!(ImageRef::parse("oci:").is_err());
        assert!(ImageRef::parse("docker.io/library/busybox").is_err());
    }
}
