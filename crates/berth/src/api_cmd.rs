//! Client commands against a control plane: accounts, setup tokens, offerings, orders,
//! operations (with a live stage display), instances and the audit log. Human output by
//! default, JSON with `-o json`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
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
                all.iter()
                    .map(|p| format!("{}  {}", p.id, p.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AccountAction::List => {
            let all = c.customers().await?;
            show(out, &all, |all| {
                all.iter()
                    .map(|c| format!("{}  {}", c.id, c.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
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
    show(out, &list, |l| {
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
    })
}

pub async fn agent_token(args: AgentTokenArgs, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    let AgentTokenAction::Create { provider, ttl } = args.action;
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

fn price(s: &str) -> anyhow::Result<Price> {
    let bad = || {
        bad_flag(
            "--price",
            format!("{s:?} is not like 500EUR/month (amount in cents, currency, hour|month)"),
        )
    };
    let (amount_cur, period) = s.split_once('/').ok_or_else(bad)?;
    let split = amount_cur.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    Ok(Price {
        amount: amount_cur[..split].parse().map_err(|_| bad())?,
        currency: amount_cur[split..].to_owned(),
        period: match period {
            "hour" => PricePeriod::Hour,
            "month" => PricePeriod::Month,
            _ => return Err(bad()),
        },
    })
}

fn labels(v: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    v.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| bad_flag("--label", format!("{l:?} is not key=value")))
        })
        .collect()
}

pub async fn offering(action: OfferingAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    let line = |o: &OfferingView| {
        format!(
            "{}  {:<16} {} cores {} MiB {} GiB  {}",
            o.id,
            o.spec.name,
            o.spec.cores,
            o.spec.memory_mib,
            o.spec.disk_gib,
            o.spec.region.as_deref().unwrap_or("-")
        )
    };
    match action {
        OfferingAction::Create {
            name,
            cores,
            memory_mib,
            disk_gib,
            bandwidth_mbps,
            template,
            price: p,
            region,
            labels: l,
            post_provision,
        } => {
            let spec = OfferingSpec {
                name,
                cores,
                memory_mib,
                disk_gib,
                bandwidth_mbps,
                template,
                price: p.as_deref().map(price).transpose()?,
                region,
                labels: labels(&l)?,
                post_provision_commands: post_provision,
            };
            let o = c.create_offering(&spec).await?;
            show(out, &o, line)
        }
        OfferingAction::List {
            cores,
            memory_mib,
            disk_gib,
            region,
            labels: l,
        } => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some(v) = cores {
                q.append_pair("cores", &v.to_string());
            }
            if let Some(v) = memory_mib {
                q.append_pair("memory_mib", &v.to_string());
            }
            if let Some(v) = disk_gib {
                q.append_pair("disk_gib", &v.to_string());
            }
            if let Some(v) = &region {
                q.append_pair("region", v);
            }
            if !l.is_empty() {
                q.append_pair("labels", &l.join(","));
            }
            let all = c.offerings(&q.finish()).await?;
            show(out, &all, |all| all.iter().map(line).collect::<Vec<_>>().join("\n"))
        }
        OfferingAction::Show { id } => {
            let o = c.offering(&id).await?;
            show(out, &o, |o| {
                let mut text = line(o);
                if let Some(a) = &o.availability {
                    let now = if a.orderable {
                        "orderable now"
                    } else {
                        "NOT orderable now"
                    };
                    text.push_str(&format!("\n{now}"));
                    for g in &a.agents {
                        let why = g.reason.as_deref().unwrap_or("can take it");
                        text.push_str(&format!("\n  agent {} ({}): {why}", g.name, g.agent_id));
                    }
                    if a.agents.is_empty() {
                        text.push_str(
                            "\n  no agent is enrolled: `berth agent-token create`, then `berth agent enroll`",
                        );
                    }
                }
                text
            })
        }
        OfferingAction::Withdraw { id } => {
            let o = c.withdraw_offering(&id).await?;
            show(out, &o, |o| format!("withdrawn: {}", line(o)))
        }
    }
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
    let mut s = format!(
        "operation {} ({} of instance {}): {} {}%",
        o.id, o.kind, o.instance_id, o.status, o.percent
    );
    for st in &o.stages {
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
        for cmd in &r.commands {
            s.push_str(&format!("\n  $ {} → exit {}", cmd.command, cmd.exit_status));
        }
    }
    s
}

/// Prints each stage as it happens until the operation ends.
pub async fn follow(c: &Client, id: &str, timeout: Duration, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut seen = 0;
    loop {
        let o = c.operation(id).await?;
        if out == OutputFormat::Human {
            for e in o.events.iter().skip(seen) {
                let line = format!(
                    "[{:>6.1}s] {:<16} {}{}",
                    start.elapsed().as_secs_f64(),
                    e.event.stage,
                    e.event.phase,
                    e.event.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                );
                eprintln!("{}", berth_core::text::printable(&line));
            }
        }
        seen = o.events.len();
        if o.status == "succeeded" || o.status == "failed" {
            let ok = o.status == "succeeded";
            show(out, &o, op_summary)?;
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        if start.elapsed() > timeout {
            bail!("operation {id} still {} after {:?}", o.status, timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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

    #[test]
    fn durations_and_prices_parse() {
        assert_eq!(duration("t", "90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("t", "7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(duration("t", "1y").unwrap_err().to_string().contains("unknown unit"));
        assert_eq!(
            price("500EUR/month").unwrap(),
            Price {
                amount: 500,
                currency: "EUR".into(),
                period: PricePeriod::Month
            }
        );
        assert!(price("EUR/month").is_err());
        assert!(price("5EUR/week").is_err());
    }
}
