//! `berth token` and `berth quota`: API tokens over their life, and what an account may hold.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use berth_api::wire::{CreateToken, QuotaView, SetQuota, TokenCreated, TokenView};

use crate::api_cmd::{client, duration, show};
use crate::cli::OutputFormat;
use crate::cli_api::{ApiArgs, QuotaAction, TokenAction};

fn when(ms: Option<i64>) -> String {
    ms.map(berth_core::utc).unwrap_or_else(|| "-".into())
}

fn table(list: &[TokenView]) -> String {
    if list.is_empty() {
        return "no tokens".into();
    }
    let mut lines = vec![format!(
        "{:<16}  {:<20}  {:<23}  {:<23}  {}",
        "ID", "NAME", "CREATED", "EXPIRES", "REVOKED"
    )];
    for t in list {
        lines.push(format!(
            "{:<16}  {:<20}  {:<23}  {:<23}  {}",
            t.id,
            t.name,
            berth_core::utc(t.created_at),
            when(t.expires_at),
            when(t.revoked_at)
        ));
    }
    lines.join("\n")
}

fn created(t: &TokenCreated) -> String {
    format!(
        "token {} ({}), expires {}\nAPI token (shown once): {}",
        t.view.id,
        t.view.name,
        when(t.view.expires_at),
        t.token
    )
}

pub async fn token(action: TokenAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match action {
        TokenAction::List { account } => show(out, &c.tokens(account.as_deref()).await?, |l| table(l)),
        TokenAction::Create { name, ttl, account } => {
            let ttl_seconds = ttl.map(|t| duration("--ttl", &t).map(|d| d.as_secs())).transpose()?;
            let t = c
                .create_token(account.as_deref(), &CreateToken { name, ttl_seconds })
                .await?;
            show(out, &t, created)
        }
        TokenAction::Revoke { id, account } => {
            let t = c.revoke_token(account.as_deref(), &id).await?;
            show(out, &t, |t| {
                format!("token {} ({}) revoked {}", t.id, t.name, when(t.revoked_at))
            })
        }
        TokenAction::Rotate { id } => show(out, &c.rotate_token(&id).await?, created),
    }
}

/// `--instances 500`, or `default` (the server's number).
fn number(flag: &str, v: Option<String>) -> anyhow::Result<Option<Option<i64>>> {
    match v.as_deref() {
        None => Ok(None),
        Some("default") => Ok(Some(None)),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| Some(Some(n)))
            .ok_or_else(|| anyhow!("{flag}: {s:?} is not a number (0 or more) or `default`")),
    }
}

fn quota_text(q: &QuotaView) -> String {
    let own = |set: Option<i64>| if set.is_some() { "  (set for this account)" } else { "" };
    format!(
        "account {}\ninstances          {}{}\npending instances  {}{}\nofferings          {}{}\ntokens             {}{}",
        q.account_id,
        q.instances,
        own(q.own.instances),
        q.pending_instances,
        own(q.own.pending_instances),
        q.offerings,
        own(q.own.offerings),
        q.tokens,
        own(q.own.tokens)
    )
}

pub async fn quota(action: QuotaAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match action {
        QuotaAction::Show { account } => show(out, &c.quota(&account).await?, quota_text),
        QuotaAction::Set {
            account,
            instances,
            pending_instances,
            offerings,
            tokens,
        } => {
            let changes = [
                number("--instances", instances)?,
                number("--pending-instances", pending_instances)?,
                number("--offerings", offerings)?,
                number("--tokens", tokens)?,
            ];
            if changes.iter().all(Option::is_none) {
                bail!(
                    "name what to set: --instances, --pending-instances, --offerings or --tokens (a number or `default`)"
                );
            }
            // Unnamed numbers keep what the account has now.
            let now = c.quota(&account).await?.own;
            let pick = |change: Option<Option<i64>>, current: Option<i64>| change.unwrap_or(current);
            let set = SetQuota {
                instances: pick(changes[0], now.instances),
                pending_instances: pick(changes[1], now.pending_instances),
                offerings: pick(changes[2], now.offerings),
                tokens: pick(changes[3], now.tokens),
            };
            show(out, &c.set_quota(&account, &set).await?, quota_text)
        }
    }
}
