//! `berth instance`: place, list, show and act on instances through the control plane. Wherever
//! an instance id is asked for, its name does too (when one instance has it).

use std::process::ExitCode;

use anyhow::Context as _;
use berth_api::client::Client;
use berth_api::wire::*;

use crate::api_cmd::{accepted, client, key_line, show, uuid_like};
use crate::cli::OutputFormat;
use crate::cli_api::{ApiArgs, InstanceAction};
use crate::cli_error::bad_flag;

/// The id of the instance `arg` names: an id as it is, or the name of exactly one instance the
/// caller sees.
async fn resolve(c: &Client, arg: &str) -> anyhow::Result<String> {
    // The control plane's ids have one form (see `berth_core::Scope`); anything else is a name.
    if berth_core::InstanceId::parse(arg).is_ok_and(|i| i.scope() == berth_core::Scope::ControlPlane) {
        return Ok(arg.to_owned());
    }
    let named: Vec<InstanceView> = c.instances().await?.into_iter().filter(|i| i.name == arg).collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Ok(arg.to_owned()), // the server answers for an id it does not know (404)
        many => Err(bad_flag(
            "ID",
            format!(
                "{} instances are named {arg:?} ({}); give the id",
                many.len(),
                many.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

fn dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn table(list: &[InstanceView]) -> String {
    if list.is_empty() {
        return "no instances".into();
    }
    let row = |id: &str, status: &str, name: &str, size: &str, ip: &str, created: &str| {
        format!("{id:<36}  {status:<12}  {name:<24}  {size:<22}  {ip:<15}  {created}")
    };
    let mut lines = vec![row("ID", "STATUS", "NAME", "SIZE", "IPV4", "CREATED")];
    for i in list {
        lines.push(row(
            &i.id,
            &i.status,
            &i.name,
            &format!("{}c {} MiB {} GiB", i.cores, i.memory_mib, i.disk_gib),
            i.ip_address.as_deref().unwrap_or("-"),
            &berth_core::utc(i.created_at),
        ));
    }
    lines.join("\n")
}

/// One instance, as a person checks on it: where it runs, how to reach it, what went wrong.
fn detail(i: &InstanceView) -> String {
    let mut lines = vec![
        format!("instance     {}", i.id),
        format!("name         {}", i.name),
        format!("status       {}", i.status),
    ];
    if let Some(e) = &i.last_error {
        lines.push(format!("last error   {}: {}", e.code, e.message));
    }
    lines.extend([
        format!(
            "size         {} cores, {} MiB, {} GiB",
            i.cores, i.memory_mib, i.disk_gib
        ),
        format!("template     {}", dash(i.template.as_deref())),
        format!("backend      {}", dash(i.backend.as_deref())),
        format!("vm id        {}", dash(i.vm_id.as_deref())),
        format!("hypervisor   {}", dash(i.hypervisor.as_deref())),
        format!("agent        {}", dash(i.agent_id.as_deref())),
        format!("ipv4         {}", dash(i.ip_address.as_deref())),
        format!("ipv6         {}", dash(i.ipv6_address.as_deref())),
        format!("ssh port     {}", i.ssh_port.unwrap_or(22)),
        format!("login user   {}", dash(i.login_user.as_deref())),
        format!(
            "credentials  {}",
            if i.credentials.is_some() {
                "yes (berth instance credentials ID --identity FILE)"
            } else {
                "none"
            }
        ),
        format!("created      {}", berth_core::utc(i.created_at)),
    ]);
    if let Some(ssh) = i.ssh_command() {
        lines.push(format!("ssh          {ssh}"));
    }
    lines.join("\n")
}

pub async fn instance(action: InstanceAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    let (id, act, run) = match action {
        InstanceAction::Create {
            agent,
            backend,
            template,
            name,
            cores,
            memory_mib,
            disk_gib,
            ssh_key,
            requester_key,
            customer,
            commands,
            skip_post_provision,
            no_provision,
            idempotency_key,
            wait,
        } => {
            let req = CreateInstance {
                agent_id: agent,
                backend,
                template,
                name,
                cores,
                memory_mib,
                disk_gib,
                ssh_public_key: key_line(ssh_key)?,
                requester_public_key: requester_key,
                post_provision_commands: commands,
                skip_post_provision,
                customer_id: customer,
                provision: !no_provision,
            };
            let key = idempotency_key.unwrap_or_else(uuid_like);
            let a = c.create_instance(&req, Some(&key)).await?;
            return accepted(&c, a, wait, out).await;
        }
        InstanceAction::List { status, name } => {
            let mut all = match &status {
                Some(s) => c.instances_with_status(s).await?,
                None => c.instances().await?,
            };
            all.retain(|i| name.as_ref().is_none_or(|n| i.name == *n));
            return show(out, &all, |l| table(l));
        }
        InstanceAction::Show { id } => {
            let i = c.instance(&resolve(&c, &id).await?).await?;
            return show(out, &i, detail);
        }
        InstanceAction::Credentials { id, identity } => {
            let i = c.instance(&resolve(&c, &id).await?).await?;
            let sealed = i
                .credentials
                .with_context(|| format!("instance {id} has no credentials (its backend made none)"))?;
            let file = std::fs::read_to_string(&identity)
                .with_context(|| format!("cannot read the identity file {}", identity.display()))?;
            let plain = berth_agent::credentials::open(&file, &sealed).map_err(anyhow::Error::msg)?;
            return show(out, &plain, |p| format!("user {}\npassword {}", p.user, p.password));
        }
        InstanceAction::Reconfigure {
            id,
            cores,
            memory_mib,
            disk_gib,
            run,
        } => {
            let change = Reconfigure {
                cores,
                memory_mib,
                disk_gib,
            };
            let key = run.idempotency_key.unwrap_or_else(uuid_like);
            let a = c
                .reconfigure_with_key(&resolve(&c, &id).await?, &change, Some(&key))
                .await?;
            return accepted(&c, a, run.wait, out).await;
        }
        InstanceAction::Provision { id, run } => (id, "provision", run),
        InstanceAction::Start { id, run } => (id, "start", run),
        InstanceAction::Stop { id, run } => (id, "stop", run),
        InstanceAction::Reboot { id, run } => (id, "reboot", run),
        InstanceAction::Terminate { id, yes, run } => {
            crate::cli_error::confirm(&format!("instance {id}"), yes).map_err(|m| bad_flag("--yes", m))?;
            (id, "terminate", run)
        }
    };
    let key = run.idempotency_key.unwrap_or_else(uuid_like);
    let a = c
        .instance_action_with_key(&resolve(&c, &id).await?, act, Some(&key))
        .await?;
    accepted(&c, a, run.wait, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstanceView {
        InstanceView {
            id: "3f2b8c1e-9d7a-4b6c-8e0f-1a2b3c4d5e6f".into(),
            provider_id: "p".into(),
            customer_id: Some("c".into()),
            offering_id: Some("o".into()),
            name: "web-1".into(),
            status: "failed".into(),
            cores: 2,
            memory_mib: 2048,
            disk_gib: 20,
            template: Some("9000".into()),
            backend: None,
            ssh_public_key: "ssh-ed25519 AAAA".into(),
            vm_id: Some("101".into()),
            hypervisor: Some("pve1".into()),
            agent_id: Some("a1".into()),
            ip_address: Some("192.0.2.7".into()),
            ipv6_address: None,
            ssh_port: Some(2222),
            login_user: Some("debian".into()),
            credentials: Some("-----BEGIN AGE ENCRYPTED FILE-----".into()),
            last_error: Some(OpError {
                code: "timeout".into(),
                message: "no address after 300 s".into(),
            }),
            created_at: 1_765_000_000_000,
            updated_at: 1_765_000_000_000,
        }
    }

    /// Golden: the detail view, line by line (a change of format shows here as a diff).
    #[test]
    fn show_is_a_detail_view() {
        let want = "\
instance     3f2b8c1e-9d7a-4b6c-8e0f-1a2b3c4d5e6f
name         web-1
status       failed
last error   timeout: no address after 300 s
size         2 cores, 2048 MiB, 20 GiB
template     9000
backend      -
vm id        101
hypervisor   pve1
agent        a1
ipv4         192.0.2.7
ipv6         -
ssh port     2222
login user   debian
credentials  yes (berth instance credentials ID --identity FILE)
created      2025-12-06T05:46:40Z
ssh          ssh -p 2222 debian@192.0.2.7";
        assert_eq!(detail(&sample()), want);
    }

    /// Golden: the list has a header; an empty one says so.
    #[test]
    fn list_has_a_header_and_says_when_empty() {
        let want = "\
ID                                    STATUS        NAME                      SIZE                    IPV4             CREATED
3f2b8c1e-9d7a-4b6c-8e0f-1a2b3c4d5e6f  failed        web-1                     2c 2048 MiB 20 GiB      192.0.2.7        2025-12-06T05:46:40Z";
        assert_eq!(table(&[sample()]), want);
        assert_eq!(table(&[]), "no instances");
    }
}
