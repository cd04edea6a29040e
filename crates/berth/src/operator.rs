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
            | VmAction::Request { .. }
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
        VmAction::Request { id } => {
            let id = parse_id(&id)?;
            match manual.pending().await {
                Ok(all) => match all.iter().find(|p| p.instance_id == id) {
                    Some(p) => {
                        print_request(out, p);
                        Ok(())
                    }
                    None => {
                        return Err(ProviderError::not_found(format!(
                            "no request {id} waits for an operator (`berth vm list --pending` lists those that do)"
                        )));
                    }
                },
                Err(e) => Err(e),
            }
        }
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
        let v = json!({ "id": id, "status": what });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{what} {id}");
    }
}

fn left_secs(p: &PendingRequest) -> u64 {
    p.deadline
        .duration_since(std::time::SystemTime::now())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn request_json(p: &PendingRequest) -> serde_json::Value {
    json!({
        "instance_id": p.instance_id, "name": p.name, "kind": p.kind, "cores": p.cores,
        "memory_mib": p.memory_mib, "disk_gib": p.disk_gib, "template": p.template,
        "age_secs": p.age.as_secs(), "notified": p.notified, "deadline_in_secs": left_secs(p),
        "ssh_keys": p.ssh_keys, "user": p.user, "network": p.network,
    })
}

fn print_pending(out: &Printer, list: &[PendingRequest]) {
    if out.format() == OutputFormat::Json {
        let v: Vec<_> = list.iter().map(request_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!("{}", berth_core::text::printable(&pending_table(list)));
}

fn pending_table(list: &[PendingRequest]) -> String {
    if list.is_empty() {
        return "no requests wait for an operator".into();
    }
    let mut lines = vec![format!(
        "{:<38} {:<20} {:<34} {:>8} {:>10} NOTIFIED",
        "INSTANCE", "NAME", "SIZE", "WAITING", "DEADLINE"
    )];
    for p in list {
        lines.push(format!(
            "{:<38} {:<20} {:<34} {:>7}m {:>9}m {}",
            p.instance_id,
            p.name,
            p.size(),
            p.age.as_secs() / 60,
            left_secs(p) / 60,
            if p.notified { "yes" } else { "no" }
        ));
    }
    lines.join("\n")
}

fn print_request(out: &Printer, p: &PendingRequest) {
    if out.format() == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&request_json(p)).unwrap_or_default());
    } else {
        println!("{}", berth_core::text::printable(&request_sheet(p, left_secs(p))));
    }
}

/// What the operator builds: one request in full, and the command that hands it over.
fn request_sheet(p: &PendingRequest, left_secs: u64) -> String {
    use berth_core::{Ipv4Config, Ipv6Config};
    let ipv4 = match p.network.ipv4 {
        Ipv4Config::Dhcp => "dhcp".to_owned(),
        Ipv4Config::Static {
            address,
            prefix_len,
            gateway,
        } => format!(
            "{address}/{prefix_len}{}",
            gateway.map(|g| format!(" via {g}")).unwrap_or_default()
        ),
    };
    let ipv6 = match p.network.ipv6 {
        None => "-".to_owned(),
        Some(Ipv6Config::Dhcp) => "dhcp".into(),
        Some(Ipv6Config::Auto) => "auto (SLAAC)".into(),
        Some(Ipv6Config::Static {
            address,
            prefix_len,
            gateway,
        }) => format!(
            "{address}/{prefix_len}{}",
            gateway.map(|g| format!(" via {g}")).unwrap_or_default()
        ),
    };
    let mut lines = vec![
        format!("request      {}", p.instance_id),
        format!("name         {} ({})", p.name, p.kind),
        format!("size         {}", p.size()),
        format!(
            "template     {}",
            p.template.as_deref().unwrap_or("- (your usual image)")
        ),
        format!("login user   {}", p.user.as_deref().unwrap_or("- (your usual one)")),
    ];
    match p.ssh_keys.as_slice() {
        [] => lines.push("ssh keys     none given".into()),
        keys => {
            for (i, k) in keys.iter().enumerate() {
                lines.push(format!("{:<12} {k}", if i == 0 { "ssh keys" } else { "" }));
            }
        }
    }
    lines.extend([
        format!("ipv4         {ipv4}"),
        format!("ipv6         {ipv6}"),
        format!(
            "nameservers  {}",
            if p.network.nameservers.is_empty() {
                "- (the network's)".to_owned()
            } else {
                p.network
                    .nameservers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        format!(
            "waiting      {}m (fails in {}m unless completed)",
            p.age.as_secs() / 60,
            left_secs / 60
        ),
        format!(
            "when built   berth vm complete {} --ip ADDRESS [--ssh-port PORT] [--password-file FILE]",
            p.instance_id
        ),
    ]);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PendingRequest {
        let created = std::time::SystemTime::UNIX_EPOCH;
        PendingRequest {
            instance_id: InstanceId::parse("web1-order-7").unwrap(),
            name: "web1".into(),
            kind: berth_core::GuestKind::Vm,
            cores: 2,
            memory_mib: 2048,
            disk_gib: 20,
            template: None,
            created_at: created,
            age: std::time::Duration::from_secs(600),
            deadline: created,
            notified: true,
            ssh_keys: vec!["ssh-ed25519 AAAAC3Nz alice@laptop".into()],
            user: Some("debian".into()),
            network: berth_core::NetworkSpec {
                ipv4: berth_core::Ipv4Config::parse("10.0.0.5/24,gw=10.0.0.1").unwrap(),
                ipv6: None,
                nameservers: vec!["9.9.9.9".parse().unwrap()],
            },
        }
    }

    /// Golden: what waits, under a header (the deadline long past here: 0m left).
    #[test]
    fn pending_requests_read_as_a_table() {
        assert_eq!(
            pending_table(&[sample()]),
            "\
INSTANCE                               NAME                 SIZE                                WAITING   DEADLINE NOTIFIED
web1-order-7                           web1                 2 vCPU, 2048 MiB RAM, 20 GiB disk       10m         0m yes"
        );
        assert_eq!(pending_table(&[]), "no requests wait for an operator");
    }

    /// Golden: the build sheet an operator works from.
    #[test]
    fn a_request_says_what_to_build_and_how_to_hand_it_over() {
        let p = sample();
        assert_eq!(
            request_sheet(&p, 3000),
            "\
request      web1-order-7
name         web1 (vm)
size         2 vCPU, 2048 MiB RAM, 20 GiB disk
template     - (your usual image)
login user   debian
ssh keys     ssh-ed25519 AAAAC3Nz alice@laptop
ipv4         10.0.0.5/24 via 10.0.0.1
ipv6         -
nameservers  9.9.9.9
waiting      10m (fails in 50m unless completed)
when built   berth vm complete web1-order-7 --ip ADDRESS [--ssh-port PORT] [--password-file FILE]"
        );
    }
}
