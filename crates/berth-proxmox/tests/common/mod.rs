//! Test support shared by the integration tests: a seeded PVE emulator over HTTPS with its
//! certificate pinned, a provider and a client configured for it, and spec builders.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{GuestKind, InstanceId, ProgressSink, SshPublicKey, StageEvent, VmSpec};
use berth_proxmox::client::{ClientOptions, Fingerprint, RetryPolicy, TlsOptions};
use berth_proxmox::{ProxmoxConfig, ProxmoxProvider, PveClient};
use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, GuestSnapshot, Timings};

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";
pub const CT_TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// A seeded emulator with fast timings and the schema (when present).
pub async fn emulator() -> EmulatorHandle {
    let cfg = EmulatorConfig {
        timings: Timings::fast(),
        schema_path: EmulatorConfig::default_schema_path(),
        ..EmulatorConfig::default()
    };
    Emulator::start(cfg).await.expect("emulator starts")
}

/// The provider's configuration for an emulator: node pve1, template 9000, storage local-lvm,
/// pool berth, the certificate pinned, polling every 10 ms.
pub fn config(emu: &EmulatorHandle) -> ProxmoxConfig {
    let mut c = ProxmoxConfig::new(&emu.base_url(), &emu.token_id(), "pve1", 9000, "local-lvm");
    c.api_token_secret = Some(berth_core::Secret::new(emu.token_secret()));
    c.tls_fingerprint = emu.fingerprint();
    c.pool = Some("berth".into());
    c.ct_template = Some(CT_TEMPLATE.into());
    c.poll_interval_ms = 10;
    c.task_timeout_secs = 30;
    c.clone_timeout_secs = 30;
    c.network_timeout_secs = 30;
    c
}

pub fn provider(emu: &EmulatorHandle) -> ProxmoxProvider {
    ProxmoxProvider::new(config(emu)).expect("provider builds")
}

/// A bare client for an emulator, pinned, with quick retries.
pub fn client(emu: &EmulatorHandle) -> PveClient {
    client_as(emu, &emu.token_id(), &emu.token_secret())
}

/// The same with another token (one made with `add_token`).
pub fn client_as(emu: &EmulatorHandle, token_id: &str, secret: &str) -> PveClient {
    let mut o = ClientOptions::new(&emu.base_url(), token_id, berth_core::Secret::new(secret));
    o.tls = TlsOptions {
        fingerprints: vec![Fingerprint::parse(&emu.fingerprint().expect("tls")).expect("fingerprint")],
        ..TlsOptions::default()
    };
    o.retry = fast_retry();
    o.poll_interval = Duration::from_millis(10);
    PveClient::new(o).expect("client builds")
}

/// Sets `lock` on a stopped guest's config, as an operator (root) would; returns what the
/// emulator now shows.
pub async fn set_lock(emu: &EmulatorHandle, node: &str, vmid: u32, lock: &str) -> Option<String> {
    emu.add_token(
        "root@pam!test",
        "root-secret",
        vec![("/".into(), vec!["VM.Config.Options".into(), "VM.Audit".into()])],
    );
    let mut o = ClientOptions::new(
        &emu.base_url(),
        "root@pam!test",
        berth_core::Secret::new("root-secret".to_owned()),
    );
    o.tls = TlsOptions {
        fingerprints: vec![Fingerprint::parse(&emu.fingerprint().expect("tls")).expect("fingerprint")],
        ..TlsOptions::default()
    };
    PveClient::new(o)
        .expect("client builds")
        .update_config(
            node,
            berth_proxmox::client::GuestType::Qemu,
            vmid,
            &berth_proxmox::client::Params::new()
                .str("lock", lock)
                .bool("skiplock", true),
        )
        .await
        .expect("lock set");
    emu.guests().into_iter().find(|g| g.vmid == vmid).and_then(|g| g.lock)
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(5),
        max: Duration::from_millis(20),
    }
}

/// A valid spec; `tag` makes the instance id and name unique.
pub fn spec(kind: GuestKind, tag: &str) -> VmSpec {
    let prefix = match kind {
        GuestKind::Vm => "vm",
        GuestKind::Container => "ct",
    };
    VmSpec {
        instance_id: InstanceId::parse(&format!("{prefix}-{tag}")).expect("id"),
        name: format!("{prefix}-{tag}"),
        kind,
        cores: 2,
        memory_mib: 2048,
        disk_gib: 10,
        template: None,
        ssh_keys: vec![SshPublicKey::parse(KEY).expect("key")],
        user: None,
        network: Default::default(),
    }
}

/// Guests carrying `name`, templates excluded.
pub fn named(emu: &EmulatorHandle, name: &str) -> Vec<GuestSnapshot> {
    emu.guests()
        .into_iter()
        .filter(|g| g.name == name && !g.template)
        .collect()
}

/// Guests that carry the instance's marker (tag or description).
pub fn marked(emu: &EmulatorHandle, id: &str) -> Vec<GuestSnapshot> {
    let tag = format!("berth-{id}");
    let line = format!("berth-instance-id: {id}");
    emu.guests()
        .into_iter()
        .filter(|g| g.tags.contains(&tag) || g.description.contains(&line))
        .collect()
}

/// Every non-GET request the emulator saw.
pub fn writes(emu: &EmulatorHandle) -> Vec<String> {
    emu.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Records stage events.
#[derive(Default, Clone)]
pub struct Events(pub Arc<Mutex<Vec<StageEvent>>>);

impl ProgressSink for Events {
    fn event(&self, e: StageEvent) {
        self.0.lock().unwrap().push(e);
    }
}

impl Events {
    pub fn list(&self) -> Vec<StageEvent> {
        self.0.lock().unwrap().clone()
    }
}
