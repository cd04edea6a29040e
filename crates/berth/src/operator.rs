//! The operator's side of the manual backend: `berth vm list --pending`, `complete`, `fail` and
//! `cancel`, working on the same state directory the waiting `create` (or agent) watches.

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use berth_agent::Config;
use berth_core::{InstanceId, ProviderError, Secret};
use berth_manual::{OperatorDetails, OperatorError, PendingRequest};
use serde_json::json;

use crate::cli::{OutputFormat, VmAction};
use crate::output::Printer;

pub fn is_operator_action(a: &VmAction) -> bool {
    matches!(
        a,
        VmAction::Complete { .. }
            | VmAction::Fail { .. }
            | VmAction::Cancel { .. }
            | VmAction::List { pending: true, .. }
    )
}

pub async fn run(config: &Config, backend: Option<&str>, action: VmAction, out: &Printer) -> anyhow::Result<ExitCode> {
    let manual = match berth_agent::manual_provider(config, backend) {
        Ok(m) => m,
        Err(e) => return Ok(out.config_error(&e)),
    };
    Ok(match act(&manual, action, out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => out.error(&e),
    })
}

async fn act(manual: &berth_manual::ManualProvider, action: VmAction, out: &Printer) -> Result<(), ProviderError> {
    let result = match action {
        VmAction::List { .. } => manual.pending().await.map(|p| print_pending(out, &p)),
        VmAction::Complete {
            id,
            ips,
            ssh_port,
            password_file,
        } => {
            let id = parse_id(&id)?;
            let details = OperatorDetails {
                ipv4: ips.iter().find_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                }),
                ipv6: ips.iter().find_map(|ip| match ip {
                    IpAddr::V6(v6) => Some(*v6),
                    IpAddr::V4(_) => None,
                }),
                ssh_port,
                root_password: password_file.as_deref().map(read_password).transpose()?,
            };
            manual.complete(&id, details).await.map(|i| out.instance("manual", &i))
        }
        VmAction::Fail { id, reason } => manual
            .fail(&parse_id(&id)?, &reason)
            .await
            .map(|()| done(out, &id, "failed")),
        VmAction::Cancel { id, reason } => manual
            .cancel(&parse_id(&id)?, &reason)
            .await
            .map(|()| done(out, &id, "cancelled")),
        _ => unreachable!("is_operator_action chose this action"),
    };
    result.map_err(operator_error)
}

fn parse_id(s: &str) -> Result<InstanceId, ProviderError> {
    InstanceId::parse(s)
}

fn read_password(path: &Path) -> Result<Secret, ProviderError> {
    let bad = |why: String| ProviderError::invalid("password_file", why);
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let pw = text.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(bad(format!("{} is empty", path.display())));
    }
    Ok(Secret::new(pw))
}

fn operator_error(e: OperatorError) -> ProviderError {
    match e {
        OperatorError::NotFound { .. } => ProviderError::not_found(e.to_string()),
        OperatorError::NotPending { .. } => ProviderError::conflict(e.to_string()),
        OperatorError::Invalid { field, message } => ProviderError::invalid(field, message),
        OperatorError::Store(_) => ProviderError::internal(e.to_string()),
    }
}

fn done(out: &Printer, id: &str, what: &str) {
    if out.format() == OutputFormat::Json {
        println!("{}", json!({ "id": id, "status": what }));
    } else {
        println!("{what} {id}");
    }
}

fn print_pending(out: &Printer, list: &[PendingRequest]) {
    if out.format() == OutputFormat::Json {
        let v: Vec<_> = list
            .iter()
            .map(|p| {
                json!({
                    "instance_id": p.instance_id, "name": p.name, "kind": p.kind, "cores": p.cores,
                    "memory_mib": p.memory_mib, "disk_gib": p.disk_gib, "template": p.template,
                    "age_secs": p.age.as_secs(), "notified": p.notified,
                    "deadline_in_secs": p.deadline.duration_since(std::time::SystemTime::now()).map(|d| d.as_secs()).unwrap_or(0),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "{:<38} {:<20} {:<24} {:>8} {:>10} NOTIFIED",
        "INSTANCE", "NAME", "SIZE", "WAITING", "DEADLINE"
    );
    for p in list {
        let left = p
            .deadline
            .duration_since(std::time::SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        println!(
            "{:<38} {:<20} {:<24} {:>7}m {:>9}m {}",
            p.instance_id,
            berth_core::text::printable(&p.name),
            p.size(),
            p.age.as_secs() / 60,
            left / 60,
            if p.notified { "yes" } else { "no" }
        );
    }
}
