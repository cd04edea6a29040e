//! Shared test support: a per-test wrapper script around the `fake_multipass.py` stand-in (its
//! state in a fresh temp dir), and providers pointed at it.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey, VmSpec};
use berth_multipass::{MultipassConfig, MultipassProvider};

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

pub fn stand_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_multipass.py")
}

/// A temp dir holding the stand-in's state (`state/`), a log of calls (`calls.log`) and a
/// `multipass` wrapper script passing `switches` to the stand-in.
pub struct FakeMultipass {
    pub dir: tempfile::TempDir,
}

impl FakeMultipass {
    pub fn new(switches: &[&str]) -> FakeMultipass {
        let dir = tempfile::tempdir().unwrap();
        let quoted: Vec<String> = switches
            .iter()
            .map(|s| format!("'{}'", s.replace('\'', "'\\''")))
            .collect();
        let script = format!(
            "#!/bin/sh\nexec python3 '{}' --state '{}' --calls '{}' {} \"$@\"\n",
            stand_in().display(),
            dir.path().join("state").display(),
            dir.path().join("calls.log").display(),
            quoted.join(" ")
        );
        let bin = dir.path().join("multipass");
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeMultipass { dir }
    }

    pub fn binary(&self) -> PathBuf {
        self.dir.path().join("multipass")
    }

    pub fn config(&self) -> MultipassConfig {
        MultipassConfig {
            binary: self.binary(),
            timeout_seconds: 30,
            launch_timeout_seconds: 30,
            pass_env: Vec::new(),
            ..MultipassConfig::default()
        }
    }

    pub fn provider(&self) -> MultipassProvider {
        MultipassProvider::new(self.config(), self.dir.path()).expect("valid config")
    }

    /// Runs the wrapper directly (as an operator would run `multipass`), e.g. to make a
    /// machine Berth does not own.
    pub fn run(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new(self.binary())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The stand-in's stored record of an instance.
    pub fn stored(&self, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("state").join(format!("{name}.json"))).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }
}

/// A valid spec whose name is the Multipass name its id maps to (`berth-<id>`): Multipass keeps
/// one name per instance, and that is the name Berth reports.
pub fn spec(id: &str) -> VmSpec {
    let instance_id = InstanceId::parse(id).unwrap();
    VmSpec {
        name: berth_multipass::name_for(&instance_id),
        instance_id,
        kind: GuestKind::Vm,
        cores: 2,
        memory_mib: 1024,
        disk_gib: 5,
        template: None,
        ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
        user: None,
        network: NetworkSpec::default(),
    }
}
