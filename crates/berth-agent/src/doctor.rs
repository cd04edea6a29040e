//! `berth doctor`: the configuration file first, then every check the backend offers, one line
//! each; exits non-zero if anything failed.

use std::path::Path;
use std::process::ExitCode;

use berth_core::{Check, CheckStatus};

/// Checks `path` and prints one line per check (`json`: the checks as JSON).
pub async fn run(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    match crate::load_config(path) {
        Err(e) => checks.push(Check::fail("config", e.to_string())),
        Ok(config) => {
            let noun = if config.backends.len() == 1 {
                "backend"
            } else {
                "backends"
            };
            checks.push(Check::ok(
                "config",
                format!("{} is valid ({noun} {})", path.display(), config.describe_backends()),
            ));
            if let Some(settings) = &config.agent {
                checks.extend(agent_checks(settings).await);
            }
            let several = config.backends.len() > 1;
            for b in &config.backends {
                // With several backends, each check says whose it is.
                let named = |mut c: Check| {
                    if several {
                        c.name = format!("{}: {}", b.name, c.name);
                    }
                    c
                };
                match crate::build_provider(&config, b) {
                    Err(e) => checks.push(named(Check::fail("backend", e.to_string()))),
                    Ok(provider) => {
                        checks.extend(provider.validate().await.into_iter().map(named));
                        let pools: Vec<&str> = config
                            .pools
                            .iter()
                            .filter(|p| p.backend == b.name)
                            .map(|p| p.name.as_str())
                            .collect();
                        if !pools.is_empty() {
                            checks.push(named(pools_check(&*provider, &pools).await));
                        }
                        if let Some(settings) = &config.agent {
                            let cfg = b.capacity.as_ref().unwrap_or(&settings.capacity);
                            checks.push(named(capacity_check(b, provider, cfg).await));
                        }
                    }
                }
            }
        }
    }
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let tag = match c.status {
                CheckStatus::Ok => " ok ",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "FAIL",
                CheckStatus::Skipped => "skip",
            };
            println!("[{tag}] {:<22} {}", c.name, c.detail);
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The agent's side: its key, its enrollment, and whether the control plane answers and knows
/// the key (a signed `GET /agent/me`).
async fn agent_checks(settings: &crate::AgentSettings) -> Vec<Check> {
    use crate::identity;
    let mut out = Vec::new();
    match identity::load_key(&settings.key_file) {
        Ok(_) => out.push(Check::ok("agent key", settings.key_file.display().to_string())),
        Err(e) => {
            out.push(Check::fail(
                "agent key",
                format!("{e:#}; `berth agent enroll --token …` creates it"),
            ));
            return out;
        }
    }
    let (client, enrollment) = match identity::signed_client(settings) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail("enrollment", format!("{e:#}")));
            return out;
        }
    };
    out.push(Check::ok(
        "enrollment",
        format!("agent {} of provider {}", enrollment.agent_id, enrollment.provider_id),
    ));
    match client.me().await {
        Ok(me) if me.revoked_at.is_some() => out.push(Check::fail(
            "control plane",
            format!(
                "{}: this agent was revoked; enroll again with a new setup token",
                settings.endpoint
            ),
        )),
        Ok(me) => out.push(Check::ok(
            "control plane",
            format!("{} knows this key (agent {})", settings.endpoint, me.name),
        )),
        Err(e) if e.code().is_some() => out.push(Check::fail(
            "control plane",
            format!("{} refused this agent's signature: {e}", settings.endpoint),
        )),
        Err(e) => out.push(Check::fail("control plane", format!("unreachable: {e}"))),
    }
    out
}

/// Whether the backend can keep the warm pools configured on it.
async fn pools_check(provider: &dyn berth_core::Provider, pools: &[&str]) -> Check {
    let names = pools.join(", ");
    match provider.capabilities().await {
        Ok(c) if c.pools => Check::ok("warm pools", format!("{names}: the backend keeps warm pools")),
        Ok(_) => Check::fail(
            "warm pools",
            format!(
                "{names}: the {} backend cannot keep warm pools (Proxmox can); orders for them would always be created",
                provider.backend()
            ),
        ),
        Err(e) => Check::fail("warm pools", format!("{names}: cannot ask the backend: {e}")),
    }
}

/// For an agent: whether the backend has room to report. A backend that cannot tell its host's
/// totals (the script backend) and no `[capacity]` numbers would make every order `no_capacity`.
async fn capacity_check(
    b: &crate::config::BackendConfig,
    provider: std::sync::Arc<dyn berth_core::Provider>,
    cfg: &crate::config::CapacitySection,
) -> Check {
    let backend = crate::agent::Backend::new(b.name.clone(), provider, 1).with_capacity(b.capacity.clone());
    let refused = "so every order for it would be refused (no_capacity)";
    match crate::heartbeat::capacity(&backend, cfg).await {
        Err(e) => Check::fail("capacity", format!("{e}; {refused}")),
        Ok(c) if c.unmetered => Check::warn(
            "capacity",
            "the backend cannot report its capacity and [capacity] sets none: orders are admitted without a capacity check (set cores, memory_mib and disk_gib in [capacity] to limit them)",
        ),
        Ok(c) if c.cores_total == 0 || c.memory_mib_total == 0 || c.disk_gib_total == 0 => Check::fail(
            "capacity",
            format!(
                "{} cores, {} MiB, {} GiB in all, {refused}: set cores, memory_mib and disk_gib in [capacity]",
                c.cores_total, c.memory_mib_total, c.disk_gib_total
            ),
        ),
        Ok(c) => Check::ok(
            "capacity",
            format!(
                "{}/{} cores, {}/{} MiB, {}/{} GiB free",
                c.cores_free, c.cores_total, c.memory_mib_free, c.memory_mib_total, c.disk_gib_free, c.disk_gib_total
            ),
        ),
    }
}
