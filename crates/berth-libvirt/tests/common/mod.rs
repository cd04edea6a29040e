//! Real-VM test support: the tiny guest image (built once by `scripts/build-test-image.sh`,
//! cached under `target/`) and a private `virtlogd` + `libvirtd` pair started by
//! `scripts/test-libvirtd.sh` in their own mount and network namespaces (guests use QEMU user
//! networking). One daemon pair serves every test process of a run; `scripts/test.sh` stops it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey, VmSpec};
use berth_libvirt::{DomainTypeSetting, LibvirtConfig, LibvirtProvider};

pub const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl berth-test@outside";

/// A small VM spec: instance id `tag`, name `vm-<tag>`, 1 core, 256 MiB, 1 GiB, one key.
pub fn spec(tag: &str) -> VmSpec {
    VmSpec {
        instance_id: InstanceId::parse(tag).unwrap(),
        name: format!("vm-{tag}"),
        kind: GuestKind::Vm,
        cores: 1,
        memory_mib: 256,
        disk_gib: 1,
        template: None,
        ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
        user: None,
        network: NetworkSpec::default(),
    }
}

/// Set to 1 (as `scripts/test.sh` does) to fail instead of skipping when prerequisites are missing.
pub const REQUIRE_ENV: &str = "BERTH_REQUIRE_LIBVIRT";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn skip_or_fail<T>(why: &str) -> Option<T> {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_ENV}=1 but real-VM tests cannot run: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

fn have(program: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).is_file())
}

/// The template image, built (or taken from the cache) by the documented script.
pub fn test_image() -> Option<PathBuf> {
    let out = workspace().join("target/berth-test-image");
    std::fs::create_dir_all(&out).unwrap();
    // The script serialises concurrent builds itself (flock on OUTDIR/.lock).
    let script = workspace().join("scripts/build-test-image.sh");
    let res = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    if !res.status.success() {
        return skip_or_fail(&format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&res.stderr)
        ));
    }
    Some(out.join("berth-test.qcow2"))
}

/// The private daemons' URI, started by `scripts/test-libvirtd.sh` unless they already answer.
pub fn libvirtd() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return skip_or_fail("real-VM tests need root (libvirtd in its own namespaces)");
    }
    for p in ["libvirtd", "virtlogd", "qemu-system-x86_64", "unshare", "virsh"] {
        if !have(p) {
            return skip_or_fail(&format!(
                "{p} is not installed (scripts/test.sh installs libvirt-daemon-system and qemu-system-x86)"
            ));
        }
    }
    let script = workspace().join("scripts/test-libvirtd.sh");
    let out = Command::new("bash").arg(&script).arg("start").output().unwrap();
    assert!(
        out.status.success(),
        "{} start failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// A provider on the private libvirtd, TCG guests on user networking, files in `root`.
pub fn provider(uri: &str, root: &Path, image: &Path) -> LibvirtProvider {
    use std::os::unix::fs::PermissionsExt;
    // QEMU runs as libvirt-qemu: it must be able to reach the instance files.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = LibvirtConfig::with_images_dir(image.parent().unwrap());
    cfg.uri = uri.to_owned();
    cfg.instances_dir = root.join("instances");
    cfg.template = Some("berth-test".into());
    cfg.network = "user".into();
    // KVM misbehaves on the build machines; the probe would pick TCG anyway, this is quicker.
    cfg.domain_type = DomainTypeSetting::Qemu;
    cfg.network_timeout_seconds = 180;
    LibvirtProvider::new(cfg, root).unwrap()
}

/// A provider on the private libvirtd booting the test image, its files in the directory
/// returned; `None` (printed) without root or libvirt.
pub fn real_guests() -> Option<(tempfile::TempDir, LibvirtProvider)> {
    // Prerequisites first: without root or libvirt there is no point building the image.
    let uri = libvirtd()?;
    let image = test_image()?;
    let dir = tempfile::tempdir().unwrap();
    let p = provider(&uri, dir.path(), &image);
    Some((dir, p))
}

/// Waits for `needle` in a file (a guest's console log); returns the whole text.
pub fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if started.elapsed() > limit {
            panic!(
                "{needle:?} did not appear in {} within {limit:?}; it holds:\n{text}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A provider on libvirt's in-process `test:///default` driver, its files in `dir`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub provider: LibvirtProvider,
}

pub fn qemu_img(args: &[&str]) {
    let st = std::process::Command::new("qemu-img")
        .args(args)
        .status()
        .expect("qemu-img runs");
    assert!(st.success(), "qemu-img {args:?}");
}

/// The test-driver setup: a 64 MiB qcow2 template `tiny`; `None` (printed) without qemu-img.
pub fn test_driver() -> Option<Setup> {
    if std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: qemu-img is not installed (apt-get install qemu-utils)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        images.join("tiny.qcow2").to_str().unwrap(),
        "64M",
    ]);
    let mut cfg = LibvirtConfig::with_images_dir(&images);
    cfg.uri = "test:///default".into();
    cfg.instances_dir = dir.path().join("instances");
    cfg.template = Some("tiny".into());
    cfg.domain_type = DomainTypeSetting::Qemu;
    cfg.network_timeout_seconds = 5;
    let provider = LibvirtProvider::new(cfg, dir.path()).unwrap();
    Some(Setup { dir, provider })
}

/// The names in `root`/instances.
pub fn instance_dirs(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root.join("instances")) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
