//! Serving a provider in-process on loopback or a Unix socket, and the remote side's config.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use berth_core::{GuestKind, InstanceId, NetworkSpec, Provider, Secret, SshPublicKey, VmSpec};
use berth_provider_grpc::{Listen, RemoteConfig, RemoteProvider, ServeOptions, ServerTls, bind};
use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Timings};
use tokio::sync::oneshot;

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

/// A served provider; stopped when dropped.
pub struct Running {
    pub local: Listen,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

pub async fn serve(provider: Arc<dyn Provider>, listen: &str, tls: Option<ServerTls>, token: Option<&str>) -> Running {
    let served = bind(ServeOptions {
        listen: listen.parse().unwrap(),
        tls,
        token: token.map(Secret::new),
        allow_unauthenticated: true,
    })
    .await
    .expect("binds");
    let local = served.local.clone();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        served
            .run(provider, async {
                let _ = stopped.await;
            })
            .await
            .expect("serves");
    });
    Running {
        local,
        stop: Some(stop),
        task,
    }
}

/// `http://ADDR` or `unix:/path` for a served provider.
pub fn endpoint(r: &Running) -> String {
    match &r.local {
        Listen::Tcp(a) => format!("http://{a}"),
        Listen::Unix(p) => format!("unix:{}", p.display()),
    }
}

pub fn config(endpoint: &str) -> RemoteConfig {
    toml::from_str(&format!("endpoint = {endpoint:?}\ncall_timeout_secs = 30\n")).unwrap()
}

pub fn remote(config: &RemoteConfig, base: &Path) -> RemoteProvider {
    RemoteProvider::new(config, base).expect("remote provider builds")
}

/// A token in `dir/name`, the config naming it.
pub fn with_token(mut c: RemoteConfig, dir: &Path, token: &str) -> RemoteConfig {
    let path = dir.join("provider.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    c.token_file = Some(path);
    c
}

pub async fn emulator() -> EmulatorHandle {
    let cfg = EmulatorConfig {
        timings: Timings::fast(),
        schema_path: EmulatorConfig::default_schema_path(),
        ..EmulatorConfig::default()
    };
    Emulator::start(cfg).await.expect("emulator starts")
}

/// The Proxmox backend for an emulator (node pve1, template 9000, pinned, quick polls).
pub fn proxmox(emu: &EmulatorHandle) -> berth_proxmox::ProxmoxProvider {
    let mut c = berth_proxmox::ProxmoxConfig::new(&emu.base_url(), &emu.token_id(), "pve1", 9000, "local-lvm");
    c.api_token_secret = Some(Secret::new(emu.token_secret()));
    c.tls_fingerprint = emu.fingerprint();
    c.pool = Some("berth".into());
    c.ct_template = Some("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into());
    c.poll_interval_ms = 10;
    c.task_timeout_secs = 30;
    c.clone_timeout_secs = 30;
    c.network_timeout_secs = 30;
    berth_proxmox::ProxmoxProvider::new(c).expect("provider builds")
}

pub fn spec(kind: GuestKind, tag: &str) -> VmSpec {
    VmSpec {
        instance_id: InstanceId::parse(&format!("grpc-{tag}")).unwrap(),
        name: format!("grpc-{tag}"),
        kind,
        cores: 2,
        memory_mib: 1024,
        disk_gib: 10,
        template: None,
        ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
        user: None,
        network: NetworkSpec::default(),
    }
}
