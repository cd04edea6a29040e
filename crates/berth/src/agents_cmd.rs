//! `berth agent list|show|revoke`: the agents as the control plane knows them.

use std::process::ExitCode;

use berth_api::wire::AgentView;

use crate::api_cmd::{client, show};
use crate::cli::OutputFormat;
use crate::cli_api::AgentAction;
use crate::cli_error::{bad_flag, confirm};

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".into(), berth_core::utc)
}

fn state(a: &AgentView) -> &'static str {
    match (a.revoked_at, a.alive) {
        (Some(_), _) => "revoked",
        (None, true) => "alive",
        (None, false) => "silent",
    }
}

fn table(list: &[AgentView]) -> String {
    if list.is_empty() {
        return "no agents (enroll one with berth agent enroll --token …)".into();
    }
    let row = |id: &str, name: &str, st: &str, seen: &str, version: &str| {
        format!("{id:<36}  {name:<20}  {st:<8}  {seen:<20}  {version}")
    };
    let mut lines = vec![row("ID", "NAME", "STATE", "LAST SEEN", "VERSION")];
    for a in list {
        let version = a.heartbeat.as_ref().map_or("-", |h| h.version.as_str());
        lines.push(row(&a.id, &a.name, state(a), &when(a.last_seen), version));
    }
    lines.join("\n")
}

fn detail(a: &AgentView) -> String {
    let mut lines = vec![
        format!("agent        {}", a.id),
        format!("name         {}", a.name),
        format!("provider     {}", a.provider_id),
        format!("state        {}", state(a)),
        format!("last seen    {}", when(a.last_seen)),
        format!("enrolled     {}", berth_core::utc(a.created_at)),
    ];
    if let Some(r) = a.revoked_at {
        lines.push(format!("revoked      {}", berth_core::utc(r)));
    }
    if let Some(skew) = &a.version_skew {
        lines.push(format!("version      {skew}"));
    }
    if let Some(h) = &a.heartbeat {
        let c = &h.capacity;
        lines.push(format!("version      {}", h.version));
        lines.push(format!(
            "free         {}/{} cores, {}/{} MiB, {}/{} GiB",
            c.cores_free, c.cores_total, c.memory_mib_free, c.memory_mib_total, c.disk_gib_free, c.disk_gib_total
        ));
        if c.unmetered {
            lines.push("capacity     unmetered: a backend cannot report it, orders are not limited".to_owned());
        }
        for p in &h.pools {
            lines.push(format!(
                "pool         {}",
                berth_agent::cmd::pool_line(p).trim_start_matches("pool ")
            ));
        }
        for b in &h.backends {
            let health = if b.healthy { "healthy" } else { "unhealthy" };
            let detail = b.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            let fixed = if b.reconfigure == Some(false) {
                ", cannot resize"
            } else {
                ""
            };
            lines.push(format!("backend      {} ({}{fixed}) {health}{detail}", b.name, b.kind));
        }
        for d in &h.drift {
            let what = d.detail.as_deref().unwrap_or("");
            lines.push(format!(
                "drift        {} {} on {}: {what}",
                d.kind, d.instance_id, d.backend
            ));
        }
    }
    lines.join("\n")
}

pub async fn agents(action: AgentAction, out: OutputFormat) -> anyhow::Result<ExitCode> {
    match action {
        AgentAction::List { api } => show(out, &client(&api)?.agents().await?, |l| table(l)),
        AgentAction::Show { id, api } => show(out, &client(&api)?.agent(&id).await?, detail),
        AgentAction::Revoke { id, yes, api } => {
            let c = client(&api)?;
            confirm(&format!("agent {id}'s access (it can no longer claim work)"), yes)
                .map_err(|m| bad_flag("--yes", m))?;
            show(out, &c.revoke_agent(&id).await?, detail)
        }
        AgentAction::Enroll(_)
        | AgentAction::Run
        | AgentAction::Status
        | AgentAction::Release { .. }
        | AgentAction::Drain(_) => {
            unreachable!("the local agent's commands are dispatched in main")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentView {
        serde_json::from_value(serde_json::json!({
            "id": "a1", "provider_id": "p1", "name": "pve-fra-1", "public_key": "k",
            "revoked_at": null, "created_at": 1_796_544_000_000_i64,
            "last_seen": 1_796_544_060_000_i64, "alive": true,
            "heartbeat": {
                "version": "0.1.0",
                "capacity": {"cores_total": 32, "cores_free": 20, "memory_mib_total": 131072,
                             "memory_mib_free": 65536, "disk_gib_total": 2000, "disk_gib_free": 1500},
                "backends": [{"name": "pve", "kind": "proxmox", "healthy": true},
                             {"name": "lab", "kind": "script", "healthy": false,
                              "detail": "circuit breaker open: the backend kept failing", "reconfigure": false}],
                "drift": [{"instance_id": "i9", "kind": "orphan", "backend": "pve",
                           "detail": "the control plane has no such instance; stopped and quarantined",
                           "since": 1_796_544_000_000_i64}]
            }
        }))
        .unwrap()
    }

    /// Golden: the list under a header; one agent in full, with its backends and drift.
    #[test]
    fn agents_list_and_show() {
        assert_eq!(
            table(&[sample()]),
            "\
ID                                    NAME                  STATE     LAST SEEN             VERSION
a1                                    pve-fra-1             alive     2026-12-06T08:01:00Z  0.1.0"
        );
        assert!(table(&[]).starts_with("no agents"));
        assert_eq!(
            detail(&sample()),
            "\
agent        a1
name         pve-fra-1
provider     p1
state        alive
last seen    2026-12-06T08:01:00Z
enrolled     2026-12-06T08:00:00Z
version      0.1.0
free         20/32 cores, 65536/131072 MiB, 1500/2000 GiB
backend      pve (proxmox) healthy
backend      lab (script, cannot resize) unhealthy: circuit breaker open: the backend kept failing
drift        orphan i9 on pve: the control plane has no such instance; stopped and quarantined"
        );
    }
}
