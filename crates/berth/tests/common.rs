//! Shared setup for the CLI tests: an emulator on loopback and a `berth.toml` pointing at it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Timings};

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

pub struct Env {
    pub emu: EmulatorHandle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

pub fn timings() -> Timings {
    Timings::fast()
}

pub async fn start(timings: Timings) -> Env {
    let emu = Emulator::start(EmulatorConfig {
        timings,
        schema_path: EmulatorConfig::default_schema_path(),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, config_text(&emu, &emu.token_secret())).unwrap();
    Env { emu, dir, config }
}

pub fn config_text(emu: &EmulatorHandle, secret: &str) -> String {
    format!(
        r#"[provisioner]
type = "proxmox"

[provisioner.proxmox]
api_url = "{url}"
api_token_id = "{token}"
api_token_secret = "{secret}"
node = "pve1"
template_vmid = 9000
storage = "local-lvm"
pool = "berth"
tls_fingerprint = "sha256:{fp}"
ct_template = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
poll_interval_ms = 20
"#,
        url = emu.base_url(),
        token = emu.token_id(),
        fp = emu.fingerprint().expect("TLS emulator has a fingerprint"),
    )
}

pub fn berth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env_remove("BERTH_CONFIG")
        .env_remove("BERTH_PROXMOX_TOKEN_SECRET")
        .env("BERTH_LOG", "info");
    c
}

impl Env {
    /// Runs `berth ARGS --config <test config>` off the async runtime.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = berth();
        cmd.args(args).arg("--config").arg(&self.config);
        tokio::task::spawn_blocking(move || cmd.output().expect("berth runs"))
            .await
            .unwrap()
    }

    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend(["--output", "json"]);
        let out = self.run(&full).await;
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("berth {args:?} printed no JSON: {e}"))
    }

    /// Guests that are not templates.
    pub fn machines(&self) -> Vec<berth_pve_emulator::GuestSnapshot> {
        self.emu.guests().into_iter().filter(|g| !g.template).collect()
    }

    /// Requests that change something (anything but GET).
    pub fn mutations(&self) -> usize {
        self.emu.requests().iter().filter(|r| r.method != "GET").count()
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub const SHORT: Duration = Duration::from_millis(50);
