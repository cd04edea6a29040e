//! Client commands against a control plane: accounts, setup tokens, offerings, orders,
//! operations (with a live stage display), instances and the audit log. Human output by
//! default, JSON with `-o json`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use berth_api::client::{Auth, Client};
use berth_api::wire::*;
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::cli_api::*;
use crate::cli_error::bad_flag;

pub fn client(api: &ApiArgs) -> anyhow::Result<Client> {
    let token = match &api.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the API token from {}", f.display()))?
            .trim()
            .to_owned(),
        None => std::env::var("BERTH_TOKEN")
            .map_err(|_| anyhow!("no API token: pass --token-file FILE or set BERTH_TOKEN"))?,
    };
    let tls = berth_api::client::TlsOptions::from_files(api.ca_file.as_deref(), api.tls_fingerprint.as_deref())
        .map_err(|e| {
            let flag = |key: &str, flag: &str| e.strip_prefix(key).map(|rest| format!("{flag}{rest}"));
            anyhow!(
                flag("ca_file", "--ca-file")
                    .or_else(|| flag("tls_fingerprint", "--tls-fingerprint"))
                    .unwrap_or(e.clone())
            )
        })?;
    Client::with_tls(&api.server, Auth::Bearer(token), &tls).map_err(|e| anyhow!(e))
}

pub fn show<T: Serialize>(out: OutputFormat, v: &T, human: impl FnOnce(&T) -> String) -> anyhow::Result<ExitCode> {
    match out {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(v)?),
        // Names and messages come from other people: no escape codes reach this terminal.
        OutputFormat::Human => println!("{}", berth_core::text::printable(&human(v))),
    }
    Ok(ExitCode::SUCCESS)
}

/// `30s`, `10m`, `24h`, `7d`.
pub fn duration(field: &str, s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| bad_flag(field, format!("{s:?} is not a duration like 90s, 10m, 24h or 7d")))?;
    let secs = match unit {
        "" => {
            return Err(bad_flag(
                field,
                format!("{s:?} has no unit; say {s}s, {s}m, {s}h or {s}d"),
            ));
        }
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad_flag(field, format!("unknown unit in {s:?} (s, m, h, d)"))),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn accounts(kind: &str, action: AccountAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match action {
        AccountAction::Create { name } => {
            let a = if kind == "provider" {
                c.create_provider(&name).await?
            } else {
                c.create_customer(&name).await?
            };
            show(out, &a, |a| {
                format!("{kind} {} ({})\nAPI token (shown once): {}", a.id, a.name, a.token)
            })
        }
        AccountAction::List if kind == "provider" => {
            let all = c.providers().await?;
            show(out, &all, |all| {
                accounts_table("providers", all.iter().map(|p| (p.id.as_str(), p.name.as_str())))
            })
        }
        AccountAction::List => {
            let all = c.customers().await?;
            show(out, &all, |all| {
                accounts_table("customers", all.iter().map(|c| (c.id.as_str(), c.name.as_str())))
            })
        }
    }
}

/// Providers or customers (`what`): id and name under a header; an empty list says so.
fn accounts_table<'a>(what: &str, rows: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let lines: Vec<String> = rows.map(|(id, name)| format!("{id:<36}  {name}")).collect();
    if lines.is_empty() {
        return format!("no {what}");
    }
    std::iter::once(format!("{:<36}  NAME", "ID"))
        .chain(lines)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `--provider`, or the caller's own provider when its token sees exactly one.
pub async fn own_provider(c: &Client, provider: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = provider {
        return Ok(p);
    }
    let mine = match c.providers().await {
        // A customer's token sees no providers: the provider must be named.
        Err(e) if e.status() == Some(403) => {
            return Err(bad_flag(
                "--provider",
                "name the provider (this token is not a provider's)",
            ));
        }
        other => other?,
    };
    match mine.as_slice() {
        [one] => Ok(one.id.clone()),
        _ => Err(bad_flag(
            "--provider",
            format!("name the provider (this token sees {} of them)", mine.len()),
        )),
    }
}

pub async fn templates(action: TemplateAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    let TemplateAction::List { agent, provider } = action;
    let list = match agent {
        Some(a) => c.agent_templates(&a).await?,
        None => c.provider_templates(&own_provider(&c, provider).await?).await?,
    };
    show(out, &list, |l| reported_templates(l))
}

/// The templates agents report, under a header; an empty list says when they come.
fn reported_templates(l: &[TemplateView]) -> String {
    if l.is_empty() {
        return "no templates reported (agents report theirs when they start and every few minutes)".into();
    }
    let mut lines = vec![format!(
        "{:<36}  {:<12}  {:<16}  {:<32}  {}",
        "AGENT", "BACKEND", "ID", "NAME", "DISK"
    )];
    for t in l {
        let r = &t.template;
        lines.push(format!(
            "{:<36}  {:<12}  {:<16}  {:<32}  {}",
            t.agent_id,
            r.backend,
            r.id,
            r.name,
            r.disk_gib.map_or_else(|| "-".into(), |d| format!("{d} GiB"))
        ));
    }
    lines.join("\n")
}

pub async fn agent_token(action: AgentTokenAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    let AgentTokenAction::Create { provider, ttl } = action;
    let provider = own_provider(&c, provider).await?;
    let t = c
        .create_enrollment_token(&provider, Some(duration("--ttl", &ttl)?.as_secs()))
        .await?;
    show(out, &t, |t| {
        format!(
            "setup token (single use, shown once): {}\nenroll with: berth agent enroll --token {}",
            t.token, t.token
        )
    })
}

pub async fn order(action: OrderAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    let OrderAction::Create {
        offering,
        name,
        ssh_key,
        requester_key,
        skip_post_provision,
        no_provision,
        idempotency_key,
        wait,
    } = action;
    let ssh_public_key = key_line(ssh_key)?;
    let key = idempotency_key.unwrap_or_else(uuid_like);
    let req = CreateOrder {
        offering_id: offering,
        name,
        ssh_public_key,
        requester_public_key: requester_key,
        skip_post_provision,
        provision: !no_provision,
    };
    let a = c.create_order(&req, Some(&key)).await?;
    accepted(&c, a, wait, out).await
}

/// `--ssh-key`: a public key line, or a file holding one. Checked here, before any request, so
/// a private key never leaves this machine.
pub(crate) fn key_line(ssh_key: String) -> anyhow::Result<String> {
    let path = std::path::Path::new(&ssh_key);
    let text = if path.is_file() {
        std::fs::read_to_string(path).map_err(|e| bad_flag("--ssh-key", format!("cannot read {ssh_key}: {e}")))?
    } else if !ssh_key.trim().contains(char::is_whitespace) {
        // A key line always has a space after its type: this was meant as a file.
        return Err(bad_flag("--ssh-key", format!("no such file: {ssh_key}")));
    } else {
        ssh_key.clone()
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let key = berth_core::SshPublicKey::parse(if text.contains("PRIVATE KEY") { &text } else { line }).map_err(
        |e| match e {
            berth_core::ProviderError::InvalidSpec { reason, .. } => bad_flag("--ssh-key", reason),
            other => bad_flag("--ssh-key", other.to_string()),
        },
    )?;
    Ok(key.as_str().to_owned())
}

/// What a queued machine shows: its ids, or its operation followed to the end with --wait.
pub(crate) async fn accepted(c: &Client, a: Accepted, wait: bool, out: OutputFormat) -> anyhow::Result<ExitCode> {
    if wait && let Some(op) = &a.operation_id {
        return follow(c, op, Duration::from_secs(3600), out).await;
    }
    show(out, &a, |a| {
        format!(
            "instance {}\noperation {}",
            a.instance_id,
            a.operation_id
                .as_deref()
                .unwrap_or("- (none queued: nothing to do now)")
        )
    })
}

pub(crate) fn uuid_like() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn op_summary(o: &OperationView) -> String {
    op_summary_with(o, true)
}

/// The operation's head line, its stages (`stages`: not after a live display, which showed
/// them as they happened), then its error or what it left behind.
fn op_summary_with(o: &OperationView, stages: bool) -> String {
    let mut s = if stages {
        format!(
            "operation {} ({} of instance {}): {} {}%",
            o.id, o.kind, o.instance_id, o.status, o.percent
        )
    } else {
        // Under a live display that named the operation: what came of it.
        format!("{} {}: instance {}", o.kind, o.status, o.instance_id)
    };
    for st in o.stages.iter().filter(|_| stages) {
        let took = st
            .finished_at
            .map(|f| format!(" {:.1}s", (f - st.started_at) as f64 / 1000.0))
            .unwrap_or_default();
        s.push_str(&format!("\n  {:<16} {}{took}", st.stage, st.status));
    }
    if let Some(e) = &o.error {
        s.push_str(&format!("\n  error: {} ({})", e.message, e.code));
    }
    if let Some(r) = &o.result {
        if let Some(ip) = &r.ip_address {
            s.push_str(&format!("\n  address: {ip}"));
        }
        if let Some(ip) = &r.ipv6_address {
            s.push_str(&format!("\n  address: {ip}"));
        }
        if let Some(ssh) = r.ssh_command() {
            s.push_str(&format!("\n  log in: {ssh}"));
        }
        if r.restart_required == Some(true) {
            s.push_str(&format!(
                "\n  restart required: the change takes effect after a reboot (berth instance reboot {})",
                o.instance_id
            ));
        }
        for cmd in &r.commands {
            s.push_str(&format!("\n  $ {} → exit {}", cmd.command, cmd.exit_status));
            for l in cmd.output_tail.lines() {
                s.push_str(&format!("\n    | {l}"));
            }
        }
    }
    s
}

/// Prints each stage as the control plane records it (its event stream, not a poll) until the
/// operation ends.
pub async fn follow(c: &Client, id: &str, timeout: Duration, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    // On a terminal, the same live display as `vm create`; plain lines otherwise.
    let live = crate::progress::StageDisplay::live(format!("operation {id}"), out == OutputFormat::Human);
    let shown = c
        .follow_operation(id, timeout, |e| {
            if let Some(live) = &live {
                live.event_at(&e.event.stage, &e.event.phase, e.event.message.as_deref(), e.at);
            } else if out == OutputFormat::Human {
                let line = format!(
                    "[{:>6.1}s] {:<16} {}{}",
                    start.elapsed().as_secs_f64(),
                    e.event.stage,
                    e.event.phase,
                    e.event.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                );
                eprintln!("{}", berth_core::text::printable(&line));
            }
        })
        .await;
    let o = match shown {
        Ok(o) => o,
        Err(e) => {
            if let Some(live) = &live {
                live.finish(false);
            }
            return Err(e.into());
        }
    };
    let ok = o.status == "succeeded";
    if let Some(live) = &live {
        live.finish(ok);
    }
    show(out, &o, |o| op_summary_with(o, live.is_none()))?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn op(action: OpAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match action {
        OpAction::Show { id } => {
            let o = c.operation(&id).await?;
            show(out, &o, op_summary)
        }
        OpAction::Wait { id, timeout } => follow(&c, &id, duration("--timeout", &timeout)?, out).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: a finished operation as a person reads it, with what it left behind.
    #[test]
    fn operation_summary_shows_failed_stages_restarts_and_command_output() {
        let o: OperationView = serde_json::from_value(serde_json::json!({
            "id": "op1", "instance_id": "i1", "kind": "provision", "status": "failed", "percent": 40,
            "stages": [
                {"stage": "clone_template", "status": "completed", "started_at": 0, "finished_at": 1500},
                {"stage": "post_provision", "status": "failed", "started_at": 1500, "finished_at": 4000}
            ],
            "events": [],
            "result": {"ip_address": "192.0.2.7", "ssh_port": 2222, "login_user": "debian", "restart_required": true,
                       "commands": [{"command": "apt-get install -y nginx", "exit_status": 100,
                                     "output_tail": "E: Unable to locate package nginx\nE: done"}]},
            "error": {"code": "post_provision_failed", "message": "a command failed"},
            "created_at": 0, "updated_at": 4000
        }))
        .unwrap();
        assert_eq!(
            op_summary(&o),
            "\
operation op1 (provision of instance i1): failed 40%
  clone_template   completed 1.5s
  post_provision   failed 2.5s
  error: a command failed (post_provision_failed)
  address: 192.0.2.7
  log in: ssh -p 2222 debian@192.0.2.7
  restart required: the change takes effect after a reboot (berth instance reboot i1)
  $ apt-get install -y nginx → exit 100
    | E: Unable to locate package nginx
    | E: done"
        );
    }

    /// Golden: the templates agents report, under a header.
    #[test]
    fn reported_templates_read_as_a_table() {
        let t: TemplateView = serde_json::from_value(serde_json::json!({
            "agent_id": "a1", "reported_at": 0, "backend": "pve", "id": "9000", "name": "debian-12", "disk_gib": 3
        }))
        .unwrap();
        assert_eq!(
            reported_templates(&[t]),
            "\
AGENT                                 BACKEND       ID                NAME                              DISK
a1                                    pve           9000              debian-12                         3 GiB"
        );
        assert!(reported_templates(&[]).starts_with("no templates reported"));
    }

    /// Golden: providers and customers under a header; an empty list says so.
    #[test]
    fn accounts_read_as_a_table() {
        let rows = [("5b0c6a47-3f7e-4d2a-9c1e-2f8a7b6c5d4e", "acme")];
        assert_eq!(
            accounts_table("providers", rows.into_iter()),
            "\
ID                                    NAME
5b0c6a47-3f7e-4d2a-9c1e-2f8a7b6c5d4e  acme"
        );
        assert_eq!(accounts_table("customers", std::iter::empty()), "no customers");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(duration("t", "90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("t", "7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(duration("t", "1y").unwrap_err().to_string().contains("unknown unit"));
    }
}
