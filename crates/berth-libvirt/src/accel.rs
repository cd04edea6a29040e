//! Which domain type guests get. `/dev/kvm` existing proves little (on some hosts KVM guests
//! abort setting an MSR with `-cpu host`, or never power off), so the probe boots a real guest:
//! a 512-byte boot sector that writes to QEMU's `isa-debug-exit` port. Only when that guest runs
//! under KVM with the CPU model Berth's domains use, and exits as told, is KVM taken.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_exec::ExecSpec;

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// The boot sector writes this to port 0xf4; QEMU then exits with `(v << 1) | 1`.
const EXIT_VALUE: u8 = 0x31;

/// The decision and why it was made (doctor prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accel {
    /// `kvm` or `qemu`.
    pub domain_type: &'static str,
    pub reason: String,
}

/// A BIOS boot sector: `mov al, 0x31; out 0xf4, al; hlt; jmp $-1`, padded, signed 0x55AA.
fn boot_sector() -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..7].copy_from_slice(&[0xB0, EXIT_VALUE, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// Why the probe did not take KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// `/dev/kvm` is missing, or KVM guests do not run as they should: use TCG.
    Broken(String),
    /// The probe could not be made here (no access to `/dev/kvm` for this user, no temporary
    /// directory): it says nothing about KVM.
    Inconclusive(String),
}

/// Boots the probe guest under KVM with `qemu`; `Ok` with how long it took, or why not.
pub async fn probe_kvm(qemu: &Path) -> Result<Duration, ProbeError> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ProbeError::Inconclusive(format!("this user cannot open /dev/kvm: {e}")));
        }
        Err(e) => return Err(ProbeError::Broken(format!("/dev/kvm cannot be opened: {e}"))),
    }
    // A private directory (mode 0700, unpredictable name): nothing else can plant the image.
    let dir = tempfile::Builder::new()
        .prefix("berth-kvm-probe-")
        .tempdir()
        .map_err(|e| ProbeError::Inconclusive(format!("cannot create a temporary directory: {e}")))?;
    let disk = dir.path().join("boot.img");
    std::fs::write(&disk, boot_sector())
        .map_err(|e| ProbeError::Inconclusive(format!("cannot write {}: {e}", disk.display())))?;
    let drive = format!("file={},format=raw,if=ide,index=0", disk.display());
    let started = Instant::now();
    let out = berth_exec::run(
        ExecSpec::new(qemu, PROBE_TIMEOUT)
            .args([
                "-machine",
                "pc,accel=kvm",
                "-cpu",
                "host",
                "-m",
                "32",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-drive",
                &drive,
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ])
            .name("kvm probe"),
    )
    .await
    .map_err(|e| ProbeError::Broken(format!("the KVM probe guest did not finish: {e}")))?;
    let want = i32::from(EXIT_VALUE) << 1 | 1;
    let how = match (out.status.code(), out.status.signal()) {
        (Some(code), _) if code == want => return Ok(started.elapsed()),
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended abnormally".to_owned(),
    };
    let last = out.stderr_tail.trim().lines().next().unwrap_or("no message");
    Err(ProbeError::Broken(format!(
        "QEMU {how} running a probe guest under KVM with -cpu host ({last})"
    )))
}

/// The QEMU system emulator for x86_64 guests on this host.
pub fn local_qemu() -> Option<PathBuf> {
    [
        "/usr/bin/qemu-system-x86_64",
        "/usr/libexec/qemu-kvm",
        "/usr/local/bin/qemu-system-x86_64",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Whether `uri` names a hypervisor on this machine (so a local probe says something about it).
pub fn is_local_uri(uri: &str) -> bool {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or("");
    let host = rest.split('/').next().unwrap_or("");
    host.is_empty() || host == "localhost"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_is_signed_and_exits() {
        let s = boot_sector();
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        assert_eq!(&s[..4], &[0xB0, 0x31, 0xE6, 0xF4]);
    }

    #[test]
    fn local_uris() {
        assert!(is_local_uri("qemu:///system"));
        assert!(is_local_uri("qemu+unix:///system?socket=/tmp/s"));
        assert!(!is_local_uri("qemu+ssh://root@kvm1/system"));
    }
}
