//! What the benchmark binaries share: the control plane's configuration under load, and the
//! machine every create benchmark asks for.

use berth_server::ServerConfig;

pub mod rig;

/// The Proxmox backend of a `berth.toml` for the emulator (node pve1, template 9000, storage
/// local-lvm, its certificate pinned), as the agent and the CLI build it; `poll_ms` sets
/// `poll_interval_ms`.
pub fn emulator_provider(
    emu: &berth_pve_emulator::EmulatorHandle,
    poll_ms: Option<u64>,
) -> anyhow::Result<std::sync::Arc<dyn berth_core::Provider>> {
    let text = emulator_config(emu, poll_ms)?;
    let cfg = berth_agent::parse_config(std::path::Path::new("bench.toml"), &text, &|_| None)?;
    Ok(berth_agent::build_provider(&cfg, &cfg.backends[0])?)
}

/// The `berth.toml` text of [`emulator_provider`].
pub fn emulator_config(emu: &berth_pve_emulator::EmulatorHandle, poll_ms: Option<u64>) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mut text = format!(
        "[provisioner]\ntype = \"proxmox\"\n[provisioner.proxmox]\napi_url = \"{}\"\napi_token_id = \"{}\"\n\
         api_token_secret = \"{}\"\nnode = \"pve1\"\ntemplate_vmid = 9000\nstorage = \"local-lvm\"\n\
         tls_fingerprint = \"sha256:{}\"\n",
        emu.base_url(),
        emu.token_id(),
        emu.token_secret(),
        emu.fingerprint().context("TLS emulator")?
    );
    if let Some(ms) = poll_ms {
        text.push_str(&format!("poll_interval_ms = {ms}\n"));
    }
    Ok(text)
}

/// The SSH key every benchmark machine carries.
pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bench@berth";

/// The benchmarks' machine: 2 cores, 2 GiB, 20 GiB, the backend's default template, DHCP;
/// `tag` is its instance id and name.
pub fn spec(tag: &str) -> anyhow::Result<berth_core::VmSpec> {
    Ok(berth_core::VmSpec {
        instance_id: berth_core::InstanceId::parse(tag)?,
        name: tag.to_owned(),
        kind: berth_core::GuestKind::Vm,
        cores: 2,
        memory_mib: 2048,
        disk_gib: 20,
        template: None,
        ssh_keys: vec![berth_core::SshPublicKey::parse(KEY)?],
        user: None,
        network: berth_core::NetworkSpec::default(),
    })
}

/// A `server.toml` for a benchmark whose `[database]` table is `database` (and `extra` lines
/// before it, such as `listen`). Every simulated agent and customer connects from 127.0.0.1 and
/// one customer places every order, so the per-address rate limit and the account quotas —
/// bounds on one real client — are raised out of the way; their machinery (the connection
/// table, timeouts, rate buckets, quota counts) still runs on every request and is measured.
pub fn server_config(extra: &str, database: &str) -> anyhow::Result<ServerConfig> {
    let text = format!(
        "{extra}\n[database]\n{database}\n[limits]\naddress_rate = 1000000\naddress_burst = 1000000\n\
         credential_rate = 1000000\ncredential_burst = 1000000\nmax_connections = 8192\n\
         [quotas]\ninstances = 1000000\npending_instances = 1000000\nofferings = 1000000\n"
    );
    Ok(ServerConfig::parse(&text, "bench server.toml")?)
}

/// Prints the emulator's request log from `t0` on, one request a line: when it arrived, how
/// long its answer took, status, method, path (`--trace`).
pub fn print_timeline(requests: &[berth_pve_emulator::RequestRecord], t0: std::time::Instant) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    for r in requests {
        println!(
            "  {:>6.0} ms {:>5.0} ms  {} {} {}",
            ms(r.received.saturating_duration_since(t0)),
            ms(r.answered.saturating_duration_since(r.received)),
            r.status,
            r.method,
            r.path
        );
    }
}
