//! `berth audit list`: the audit log as an operator reads it, filtered by actor, subject,
//! action and age, and (`--follow`) as it grows.

use std::process::ExitCode;
use std::time::Duration;

use berth_api::wire::AuditEntryView;

use crate::api_cmd::{client, duration, show};
use crate::cli::OutputFormat;
use crate::cli_api::ApiArgs;
use crate::cli_error::bad_flag;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Which entries are shown.
pub struct Filter {
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub action: Option<String>,
    pub since: Option<String>,
}

/// One entry per line: sequence, time (RFC 3339, UTC), action, subject, actor.
fn line(e: &AuditEntryView) -> String {
    let at = berth_core::utc(e.at);
    format!("{:>6} {at:<20} {:<24} {:<28} {}", e.seq, e.action, e.subject, e.actor)
}

fn header() -> String {
    format!(
        "{:>6} {:<20} {:<24} {:<28} {}",
        "SEQ", "TIME", "ACTION", "SUBJECT", "ACTOR"
    )
}

fn keeps(e: &AuditEntryView, f: &Filter, oldest: i64) -> bool {
    let action = |want: &String| match want.strip_suffix('.') {
        Some(prefix) => e.action.starts_with(prefix) && e.action[prefix.len()..].starts_with('.'),
        None => e.action == *want,
    };
    e.at >= oldest
        && f.actor.as_ref().is_none_or(|a| e.actor == *a)
        && f.subject.as_ref().is_none_or(|s| e.subject == *s)
        && f.action.as_ref().is_none_or(action)
}

pub async fn list(
    after: i64,
    limit: i64,
    filter: Filter,
    follow: bool,
    api: &ApiArgs,
    out: OutputFormat,
) -> anyhow::Result<ExitCode> {
    if !(1..=1000).contains(&limit) {
        return Err(bad_flag("--limit", format!("must be between 1 and 1000 (got {limit})")));
    }
    let oldest = match &filter.since {
        Some(s) => now_ms() - duration("--since", s)?.as_millis() as i64,
        None => 0,
    };
    let c = client(api)?;
    // Read page by page from `after`, keeping what the filter wants, until `limit` are kept
    // or the log ends.
    let mut kept = Vec::new();
    let mut cursor = after;
    loop {
        let page = c.audit(cursor, 1000).await?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        let full = page.len() == 1000;
        kept.extend(page.into_iter().filter(|e| keeps(e, &filter, oldest)));
        if kept.len() as i64 >= limit || !full {
            break;
        }
    }
    if kept.len() > limit as usize {
        // Following goes on right after the last entry shown, not after the last one read.
        cursor = kept[limit as usize - 1].seq;
        kept.truncate(limit as usize);
    }
    if !follow {
        return show(out, &kept, |l| {
            if l.is_empty() {
                return "no entries".into();
            }
            std::iter::once(header())
                .chain(l.iter().map(line))
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    // Following: each entry as it comes, a line (or a JSON object per line).
    let print = |e: &AuditEntryView| match out {
        OutputFormat::Json => println!("{}", serde_json::to_string(e).unwrap_or_default()),
        OutputFormat::Human => println!("{}", berth_core::text::printable(&line(e))),
    };
    if out == OutputFormat::Human {
        println!("{}", header());
    }
    kept.iter().for_each(print);
    // One Ctrl-C listener for the whole run, so a press during a request is not lost.
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let next = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            c.audit(cursor, 1000).await
        };
        let page = tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            page = next => page,
        };
        match page {
            Ok(page) => {
                for e in page {
                    cursor = e.seq;
                    if keeps(&e, &filter, oldest) {
                        print(&e);
                    }
                }
            }
            // A control plane restarting: say so and keep following.
            Err(e) if e.status().is_none_or(|s| s >= 500) => eprintln!("warning: {e}; retrying"),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, actor: &str, at: i64) -> AuditEntryView {
        AuditEntryView {
            seq: 1,
            at,
            actor: actor.into(),
            action: action.into(),
            subject: "instance:i1".into(),
            detail: serde_json::Value::Null,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Golden: a header, then one entry per line.
    #[test]
    fn entries_line_up_under_a_header() {
        let mut e = entry("instance.created", "customer:c1", 1_796_544_000_000);
        e.seq = 42;
        assert_eq!(
            format!("{}\n{}", header(), line(&e)),
            "   SEQ TIME                 ACTION                   SUBJECT                      ACTOR\n    42 \
             2026-12-06T08:00:00Z instance.created         instance:i1                  customer:c1"
        );
    }

    #[test]
    fn filters_match_actions_by_name_or_prefix_actors_and_age() {
        let f = |action: Option<&str>, actor: Option<&str>| Filter {
            actor: actor.map(str::to_owned),
            subject: None,
            action: action.map(str::to_owned),
            since: None,
        };
        let e = entry("instance.created", "customer:c1", 100);
        assert!(keeps(&e, &f(Some("instance."), None), 0));
        assert!(keeps(&e, &f(Some("instance.created"), Some("customer:c1")), 0));
        assert!(!keeps(&e, &f(Some("instance.create"), None), 0));
        assert!(!keeps(&e, &f(Some("inst."), None), 0), "a prefix ends at a dot");
        assert!(!keeps(&e, &f(None, Some("operator")), 0));
        assert!(!keeps(&e, &f(None, None), 101), "older than --since");
    }
}
