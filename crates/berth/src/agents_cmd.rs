//! `berth agent list|show|revoke`: the agents as the control plane knows them.

use std::process::ExitCode;

use berth_api::wire::AgentView;

use crate::api_cmd::{client, show};
use crate::cli::OutputFormat;
use crate::cli_api::{AgentAction, ApiArgs};
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
        format!("{id:<36}  {name:<20}  {st:<8}  {seen:<23}  {version}")
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
        for b in &h.backends {
            let health = if b.healthy { "healthy" } else { "unhealthy" };
            let detail = b.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            lines.push(format!("backend      {} ({}) {health}{detail}", b.name, b.kind));
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

pub async fn agents(action: AgentAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match action {
        AgentAction::List => show(out, &c.agents().await?, |l| table(l)),
        AgentAction::Show { id } => show(out, &c.agent(&id).await?, detail),
        AgentAction::Revoke { id, yes } => {
            confirm(&format!("agent {id}'s access (it can no longer claim work)"), yes)
                .map_err(|m| bad_flag("--yes", m))?;
            show(out, &c.revoke_agent(&id).await?, detail)
        }
        AgentAction::Enroll(_) | AgentAction::Run | AgentAction::Status => {
            unreachable!("the local agent's commands are dispatched in main")
        }
    }
}
