//! `berth token`: API tokens over their life.

use std::process::ExitCode;

use berth_api::wire::{CreateToken, TokenCreated, TokenView};

use crate::api_cmd::{client, duration, show};
use crate::cli::OutputFormat;
use crate::cli_api::{ApiArgs, TokenAction};

fn when(ms: Option<i64>) -> String {
    ms.map(berth_core::utc).unwrap_or_else(|| "-".into())
}

fn table(list: &[TokenView]) -> String {
    if list.is_empty() {
        return "no tokens".into();
    }
    let mut lines = vec![format!(
        "{:<16}  {:<20}  {:<20}  {:<20}  {}",
        "ID", "NAME", "CREATED", "EXPIRES", "REVOKED"
    )];
    for t in list {
        lines.push(format!(
            "{:<16}  {:<20}  {:<20}  {:<20}  {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: tokens under a header, times in RFC 3339; an empty list says so.
    #[test]
    fn tokens_line_up_under_a_header() {
        let t = TokenView {
            id: "tok_1a2b".into(),
            name: "ci".into(),
            created_at: 1_796_544_000_000,
            expires_at: Some(1_796_630_400_000),
            revoked_at: None,
        };
        assert_eq!(
            table(&[t]),
            "\
ID                NAME                  CREATED               EXPIRES               REVOKED
tok_1a2b          ci                    2026-12-06T08:00:00Z  2026-12-07T08:00:00Z  -"
        );
        assert_eq!(table(&[]), "no tokens");
    }
}
