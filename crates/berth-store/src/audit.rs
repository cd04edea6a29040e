//! The hash chain of the audit log: how an entry is encoded and hashed, and how a whole log is
//! checked. Shared by both databases and by `berth audit verify` (offline, against the database).

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::Millis;

/// The previous hash of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, by whom, to what.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// `provider:<id>`, `customer:<id>`, `agent:<id>`, `operator:<id>`, `system`.
    pub actor: String,
    /// `order.created`, `operation.claimed`, `agent.enrolled`, …
    pub action: String,
    /// The thing changed: `instance:<id>`, `operation:<id>`, …
    pub subject: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry: SHA-256 over the previous hash and the canonical JSON encoding of
/// `[seq, at, actor, action, subject, detail]` (object keys sorted, no whitespace).
pub fn entry_hash(prev_hash: &str, seq: i64, at: Millis, e: &NewAuditEntry) -> String {
    let canonical = serde_json::to_string(&serde_json::json!([seq, at, e.actor, e.action, e.subject, e.detail]))
        .expect("JSON values always serialize");
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// A log that checks out: how many entries, and the head hash (publish it to detect truncation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub head: String,
}

/// Where the chain breaks, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at entry {seq}: {reason}")]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

/// Walks entries in `seq` order, carrying the chain state across pages.
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: i64,
    head: String,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            next_seq: 1,
            head: GENESIS.to_owned(),
        }
    }
}

impl Verifier {
    pub fn check(&mut self, e: &AuditEntry) -> Result<(), Broken> {
        let broken = |reason: String| Broken { seq: e.seq, reason };
        if e.seq != self.next_seq {
            return Err(broken(format!(
                "expected entry {} next: entries were deleted or reordered",
                self.next_seq
            )));
        }
        if e.prev_hash != self.head {
            return Err(broken(
                "its previous hash is not the hash of the entry before it".into(),
            ));
        }
        let new = NewAuditEntry {
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            detail: e.detail.clone(),
        };
        if entry_hash(&e.prev_hash, e.seq, e.at, &new) != e.hash {
            return Err(broken(
                "its contents do not match its hash: the entry was edited".into(),
            ));
        }
        self.next_seq += 1;
        self.head = e.hash.clone();
        Ok(())
    }

    pub fn finish(self) -> Verified {
        Verified {
            entries: (self.next_seq - 1) as u64,
            head: self.head,
        }
    }
}
