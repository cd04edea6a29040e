//! The declarative mode's audit trail when no server is involved: the control plane's hash chain
//! (`berth_store::audit`), one JSON entry per line in a local file, checked by
//! `berth audit verify --file`.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use berth_store::audit::{AuditEntry, Broken, GENESIS, NewAuditEntry, Verified, Verifier, entry_hash};
use serde::Deserialize;

#[derive(Deserialize)]
struct Line {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    subject: String,
    detail: serde_json::Value,
    prev_hash: String,
    hash: String,
}

impl From<Line> for AuditEntry {
    fn from(l: Line) -> Self {
        AuditEntry {
            seq: l.seq,
            at: l.at,
            actor: l.actor,
            action: l.action,
            subject: l.subject,
            detail: l.detail,
            prev_hash: l.prev_hash,
            hash: l.hash,
        }
    }
}

fn entries(path: &Path) -> anyhow::Result<Vec<AuditEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Line>(l)
                .map(AuditEntry::from)
                .with_context(|| format!("{}:{}: not an audit entry", path.display(), i + 1))
        })
        .collect()
}

/// Who is acting: the local user.
pub fn actor() -> String {
    format!("local:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// Appends one entry, chained to the last, and flushes it to disk.
pub fn append(path: &Path, action: &str, subject: &str, detail: serde_json::Value) -> anyhow::Result<()> {
    let all = entries(path)?;
    let (seq, prev) = all
        .last()
        .map_or((1, GENESIS.to_owned()), |e| (e.seq + 1, e.hash.clone()));
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let e = NewAuditEntry {
        actor: actor(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail,
    };
    let hash = entry_hash(&prev, seq, at, &e);
    let line = serde_json::to_string(&AuditEntry {
        seq,
        at,
        actor: e.actor,
        action: e.action,
        subject: e.subject,
        detail: e.detail,
        prev_hash: prev,
        hash,
    })?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}")?;
    f.sync_data()?;
    Ok(())
}

/// Checks the whole chain of a file.
pub fn verify(path: &Path) -> anyhow::Result<Result<Verified, Broken>> {
    let mut v = Verifier::default();
    for e in entries(path)? {
        if let Err(b) = v.check(&e) {
            return Ok(Err(b));
        }
    }
    Ok(Ok(v.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_chain_and_an_edit_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        append(
            &p,
            "decl.plan.applied",
            "site:site.toml",
            serde_json::json!({"changes": 2}),
        )
        .unwrap();
        append(
            &p,
            "decl.action.done",
            "storage.nas",
            serde_json::json!({"action": "create"}),
        )
        .unwrap();
        let ok = verify(&p).unwrap().unwrap();
        assert_eq!(ok.entries, 2);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("storage.nas", "storage.other");
        std::fs::write(&p, text).unwrap();
        let broken = verify(&p).unwrap().unwrap_err();
        assert_eq!(broken.seq, 2);
    }
}
