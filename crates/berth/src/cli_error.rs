//! How a command that talks to the control plane fails: one message on stderr (the problem's
//! detail, its code once), with `--output json` an error object on stdout, and an exit code by
//! kind, so scripts can branch on either:
//!
//! | exit | meaning |
//! |---|---|
//! | 1 | anything else (the control plane unreachable, an internal error, an operation that failed) |
//! | 2 | usage or bad input (a flag refused before any request, or `invalid_input`) |
//! | 3 | not found (`404`) |
//! | 4 | conflict with the current state (`409`: `wrong_status`, `no_capacity`, `quota_exceeded`, …) |
//! | 5 | not signed in or not allowed (`401`, `403`) |

use std::fmt;
use std::process::ExitCode;

use berth_api::client::ClientError;
use serde_json::json;

use crate::cli::OutputFormat;

/// Input the CLI refuses before sending anything: exit 2, code `invalid_input`, the flag the
/// user typed as the field.
#[derive(Debug)]
pub struct BadFlag {
    pub flag: String,
    pub message: String,
}

impl fmt::Display for BadFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for BadFlag {}

/// A [`BadFlag`] as an `anyhow::Error`.
pub fn bad_flag(flag: &str, message: impl Into<String>) -> anyhow::Error {
    BadFlag {
        flag: flag.to_owned(),
        message: message.into(),
    }
    .into()
}

/// Asks before destroying `what`, unless `yes`: on a terminal, a `y` answers; anywhere else the
/// command is refused with how to confirm (`--yes`). `Err` holds the reason to show.
pub fn confirm(what: &str, yes: bool) -> Result<(), String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "this destroys {what} and cannot be undone; confirm with --yes (no terminal to ask on)"
        ));
    }
    eprint!(
        "{}",
        berth_core::text::printable(&format!("Destroy {what}? This cannot be undone. [y/N] "))
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim() {
        "y" | "Y" | "yes" | "YES" => Ok(()),
        _ => Err("not confirmed; nothing was done".into()),
    }
}

/// The flag a person typed for an API body field, where the names differ or the field is
/// spelled with underscores (`memory_mib` → `--memory-mib`).
fn flag_of(field: &str) -> String {
    let top = field.split('.').next().unwrap_or(field);
    match top {
        "ssh_public_key" => "--ssh-key".into(),
        "requester_public_key" => "--requester-key".into(),
        "offering_id" => "--offering".into(),
        "agent_id" => "--agent".into(),
        "customer_id" => "--customer".into(),
        "post_provision_commands" => "--post-provision".into(),
        "ttl_seconds" => "--ttl".into(),
        "labels" => "--label".into(),
        other => format!("--{}", other.replace('_', "-").to_lowercase()),
    }
}

struct Described {
    code: String,
    message: String,
    status: Option<u16>,
    field: Option<String>,
    retryable: bool,
}

fn describe(e: &anyhow::Error) -> Described {
    let plain = |code: &str, retryable: bool| Described {
        code: code.into(),
        message: format!("{e:#}"),
        status: None,
        field: None,
        retryable,
    };
    if let Some(b) = e.chain().find_map(|c| c.downcast_ref::<BadFlag>()) {
        return Described {
            field: Some(b.flag.clone()),
            ..plain("invalid_input", false)
        };
    }
    match e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        Some(ClientError::Problem(p)) => Described {
            code: p.code.clone(),
            // The detail names the body's field first (`cores: …`): say the flag instead.
            message: match &p.field {
                Some(f) if f != "body" && p.detail.starts_with(&format!("{f}: ")) => {
                    format!("{}: {}", flag_of(f), &p.detail[f.len() + 2..])
                }
                _ => p.detail.clone(),
            },
            status: Some(p.status),
            field: p.field.clone(),
            retryable: p.retryable,
        },
        Some(ClientError::Status { status, .. }) => Described {
            status: Some(*status),
            ..plain("http_error", *status >= 500)
        },
        Some(ClientError::Transport { .. }) => plain("unreachable", true),
        Some(ClientError::Decode { .. }) => plain("bad_response", false),
        None => plain("failed", false),
    }
}

/// Reports `e` and returns the exit code for its kind (see the module's table).
pub fn report(e: &anyhow::Error, format: OutputFormat) -> ExitCode {
    let d = describe(e);
    if format == OutputFormat::Json {
        let mut err = json!({"code": d.code, "message": d.message, "retryable": d.retryable});
        if let Some(s) = d.status {
            err["status"] = json!(s);
        }
        if let Some(f) = &d.field {
            err["field"] = json!(f);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "error": err })).unwrap_or_default()
        );
    }
    let line = if d.status.is_some() {
        format!("error: {} ({})", d.message, d.code)
    } else {
        format!("error: {}", d.message)
    };
    eprintln!("{}", berth_core::text::printable(&line));
    ExitCode::from(match (d.code.as_str(), d.status) {
        ("invalid_input", _) => 2,
        (_, Some(404)) => 3,
        (_, Some(409)) => 4,
        (_, Some(401 | 403)) => 5,
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::wire::Problem;

    fn problem(status: u16, code: &str) -> anyhow::Error {
        ClientError::Problem(Box::new(Problem {
            type_: "about:blank".into(),
            title: "t".into(),
            status,
            detail: "what happened".into(),
            code: code.into(),
            field: None,
            retryable: false,
        }))
        .into()
    }

    #[test]
    fn exit_codes_follow_the_kind_of_failure() {
        let human = OutputFormat::Human;
        assert_eq!(report(&bad_flag("--ttl", "no unit"), human), ExitCode::from(2));
        assert_eq!(report(&problem(422, "invalid_input"), human), ExitCode::from(2));
        assert_eq!(report(&problem(404, "not_found"), human), ExitCode::from(3));
        assert_eq!(report(&problem(409, "no_capacity"), human), ExitCode::from(4));
        assert_eq!(report(&problem(403, "forbidden"), human), ExitCode::from(5));
        assert_eq!(report(&anyhow::anyhow!("boom"), human), ExitCode::from(1));
    }

    #[test]
    fn a_field_is_said_as_the_flag_typed() {
        let mut p = Problem {
            type_: "about:blank".into(),
            title: "t".into(),
            status: 422,
            detail: "memory_mib: must be 16 MiB to 16 TiB".into(),
            code: "invalid_input".into(),
            field: Some("memory_mib".into()),
            retryable: false,
        };
        let said = |p: &Problem| describe(&ClientError::Problem(Box::new(p.clone())).into()).message;
        assert_eq!(said(&p), "--memory-mib: must be 16 MiB to 16 TiB");
        p.detail = "ssh_public_key: not a key".into();
        p.field = Some("ssh_public_key".into());
        assert_eq!(said(&p), "--ssh-key: not a key");
    }
}
