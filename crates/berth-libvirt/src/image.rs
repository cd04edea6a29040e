//! Disk images through the `qemu-img` CLI (run by `berth-exec`): `info` to learn a template's
//! format and size, overlays (`-F` always given: QEMU refuses a backing file without its
//! format), full copies and growth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::ProviderError;
use berth_exec::{ExecError, ExecSpec};
use serde::Deserialize;

/// `info` is quick; a full copy of a large template is not.
const INFO_TIMEOUT: Duration = Duration::from_secs(30);
const COPY_TIMEOUT: Duration = Duration::from_secs(3600);

/// What `qemu-img info --output=json` says of an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
}

/// The `qemu-img` executable.
#[derive(Debug, Clone)]
pub struct QemuImg {
    pub program: PathBuf,
}

impl QemuImg {
    async fn run(&self, args: &[&str], timeout: Duration) -> Result<String, ExecError> {
        let out = berth_exec::run(ExecSpec::new(&self.program, timeout).args(args)).await?;
        out.check_success()?;
        Ok(out.stdout_utf8()?.to_owned())
    }

    /// Format and size of `path` (`-U`: also while a running guest holds it).
    pub async fn info(&self, path: &Path) -> Result<ImageInfo, ProviderError> {
        let p = path.to_string_lossy();
        let text = self
            .run(&["info", "-U", "--output=json", &p], INFO_TIMEOUT)
            .await
            .map_err(|e| exec_error(e, &format!("reading image {p}")))?;
        serde_json::from_str(&text)
            .map_err(|e| ProviderError::internal(format!("qemu-img info for {p} printed unexpected JSON: {e}")))
    }

    /// A qcow2 overlay at `dest` backed by `base` (absolute path, its `format`), `size` bytes.
    pub async fn overlay(&self, base: &Path, format: &str, dest: &Path, size: u64) -> Result<(), ProviderError> {
        let (b, d, s) = (base.to_string_lossy(), dest.to_string_lossy(), size.to_string());
        self.run(
            &["create", "-q", "-f", "qcow2", "-b", &b, "-F", format, &d, &s],
            INFO_TIMEOUT,
        )
        .await
        .map(|_| ())
        .map_err(|e| exec_error(e, &format!("creating overlay {d} on {b}")))
    }

    /// An independent qcow2 copy of `base` at `dest`.
    pub async fn copy(&self, base: &Path, format: &str, dest: &Path) -> Result<(), ProviderError> {
        let (b, d) = (base.to_string_lossy(), dest.to_string_lossy());
        self.run(&["convert", "-q", "-f", format, "-O", "qcow2", &b, &d], COPY_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| exec_error(e, &format!("copying {b} to {d}")))
    }

    /// Grows the qcow2 image at `path` to `size` bytes (never shrinks: callers check).
    pub async fn grow(&self, path: &Path, size: u64) -> Result<(), ProviderError> {
        let (p, s) = (path.to_string_lossy(), size.to_string());
        self.run(&["resize", "-q", "-f", "qcow2", &p, &s], INFO_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| exec_error(e, &format!("resizing {p}")))
    }
}

fn exec_error(e: ExecError, what: &str) -> ProviderError {
    match e {
        ExecError::Timeout { after, .. } => ProviderError::Timeout {
            what: format!("{what}: {e}"),
            after,
        },
        ExecError::Spawn { .. } => ProviderError::unavailable(format!("{what}: {e} (is qemu-utils installed?)")),
        _ => ProviderError::internal(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_img_info() {
        let text = r#"{"virtual-size": 1073741824, "filename": "/x/disk.qcow2", "cluster-size": 65536,
            "format": "qcow2", "actual-size": 200704, "backing-filename": "/t/base.qcow2",
            "backing-filename-format": "qcow2", "dirty-flag": false}"#;
        let info: ImageInfo = serde_json::from_str(text).unwrap();
        assert_eq!(info.format, "qcow2");
        assert_eq!(info.virtual_size, 1 << 30);
        assert_eq!(info.backing_filename.as_deref(), Some("/t/base.qcow2"));
    }
}
