//! The control plane's storage behind one [`Store`] trait, implemented for SQLite (the embedded
//! default: a file, WAL) and PostgreSQL (a URL; several server replicas may share it). Both run
//! their own embedded migrations. One conformance suite ([`suite`]) runs against both.
//!
//! So far: the operations queue. An operation belongs to a provider's agents and an instance;
//! agents claim the oldest claimable one with a lease (holder, expiry, generation), renew it
//! while working and finish it under it. Per instance, operations run one at a time and in
//! order. A lease that runs out returns the operation to the queue, and a report under a lost
//! lease (expired, or claimed again since: the generation moved on) is refused.

pub mod agents;
pub mod audit;
mod common;
pub mod control;
mod control_impl;
pub mod inbox;
pub mod postgres;
pub mod quota;
pub mod replay;
mod signal;
pub mod sqlite;
pub mod suite;
#[cfg(feature = "test-support")]
pub mod testpg;
pub mod tokens;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use agents::{Agent, EnrollmentToken, Provider};
pub use audit::{AuditEntry, Broken, NewAuditEntry, Verified};
pub use control::{
    AgentStatus, ApiToken, Catalog, Customer, CustomerKey, InstanceAction, InstanceChange, InstanceFilter,
    InstanceQuota, InstanceRecord, NewInstance, Offering, OpEvent, Page, Role, Session, TemplateRecord,
};
pub use inbox::{Inbox, NewInput, OperatorInput};
pub use postgres::PgStore;
pub use quota::{CustomerQuota, EVERY_CUSTOMER, Quota, Quotas};
pub use replay::{Idempotency, Replay};
pub use sqlite::SqliteStore;
pub use tokens::{Issued, TokenInfo, Tokens};

/// Milliseconds since the Unix epoch. The caller passes "now", so tests control time.
pub type Millis = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl OpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Queued => "queued",
            OpStatus::Running => "running",
            OpStatus::Succeeded => "succeeded",
            OpStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<OpStatus, StoreError> {
        Ok(match s {
            "queued" => OpStatus::Queued,
            "running" => OpStatus::Running,
            "succeeded" => OpStatus::Succeeded,
            "failed" => OpStatus::Failed,
            other => {
                return Err(StoreError::Backend(format!(
                    "unknown operation status {other:?} in the database"
                )));
            }
        })
    }
}

/// An operation to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOperation {
    pub provider_id: String,
    pub instance_id: String,
    /// `provision`, `start`, `stop`, `reboot`, `reconfigure`, `terminate`, …
    pub kind: String,
    pub payload: serde_json::Value,
    /// Only this agent may claim it (`None`: any agent of the provider).
    pub agent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    pub id: String,
    /// Queue order.
    pub seq: i64,
    pub provider_id: String,
    pub instance_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: OpStatus,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<Millis>,
    /// How many times it was claimed; the current lease's fencing token.
    pub generation: i64,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// Only this agent may claim it.
    pub agent_id: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A claim on an operation. Every renew and report must present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub operation_id: String,
    pub holder: String,
    pub generation: i64,
    pub expires_at: Millis,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(serde_json::Value),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The lease expired, was released, or the operation was claimed again since.
    #[error("the lease on operation {0} is no longer held")]
    LeaseLost(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The setup token is unknown, already used or expired (deliberately not told apart).
    #[error("the enrollment token is unknown, already used or expired")]
    BadToken,
    #[error("conflict: {0}")]
    Conflict(String),
    /// A name its owner already uses (`what`: `provider`, `offering`).
    #[error("{what} name {name:?} is already taken")]
    NameTaken { what: &'static str, name: String },
    /// A quota (`what`) would be exceeded.
    #[error("the {what} quota of {limit} is reached")]
    Quota { what: &'static str, limit: i64 },
    #[error("database error: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(format!("migrating the database: {e}"))
    }
}

#[async_trait]
pub trait Store: Catalog + Inbox + Quotas + Replay + Tokens + Send + Sync {
    /// Queues `op`; it gets a fresh id and the next place in the queue.
    async fn enqueue(&self, op: NewOperation, now: Millis) -> Result<Operation, StoreError>;

    async fn operation(&self, id: &str) -> Result<Operation, StoreError>;

    /// Claims the oldest operation of `provider_id` that is queued (or running under an expired
    /// lease) and has no earlier unfinished operation of the same instance; `None` when there is
    /// none. Atomic: concurrent claimers never get the same operation.
    async fn claim(
        &self,
        provider_id: &str,
        holder: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<(Operation, Lease)>, StoreError>;

    /// Extends a lease that is still held.
    async fn renew(&self, lease: &Lease, ttl_ms: i64, now: Millis) -> Result<Lease, StoreError>;

    /// Ends the operation under a lease that is still held.
    async fn finish(&self, lease: &Lease, outcome: Outcome, now: Millis) -> Result<Operation, StoreError> {
        self.complete(lease, outcome, None, None, now).await
    }

    /// Ends the operation under a lease that is still held and, in the same transaction, applies
    /// `change` to its instance and appends `audit`.
    async fn complete(
        &self,
        lease: &Lease,
        outcome: Outcome,
        change: Option<InstanceChange>,
        audit: Option<NewAuditEntry>,
        now: Millis,
    ) -> Result<Operation, StoreError>;

    /// Gives the operation back to the queue (a clean shutdown of its agent).
    async fn release(&self, lease: &Lease, now: Millis) -> Result<(), StoreError>;

    /// Appends to the audit log, chaining the entry to the one before it. Appends are
    /// serialised (also across server replicas), so the chain stays one line.
    async fn append_audit(&self, entry: NewAuditEntry, now: Millis) -> Result<AuditEntry, StoreError>;

    /// Rung when work for `provider_id` may have become claimable.
    fn work_signal(&self, provider_id: &str) -> std::sync::Arc<tokio::sync::Notify>;

    /// Long-poll claim: claims at once when there is work, otherwise waits until work is queued
    /// (in this process or, on PostgreSQL, by any replica) or `wait` runs out. Leases that expire
    /// make no noise, so it also looks again every `recheck`. `clock` gives "now".
    async fn claim_wait(
        &self,
        provider_id: &str,
        holder: &str,
        ttl_ms: i64,
        wait: std::time::Duration,
        recheck: std::time::Duration,
        clock: &(dyn Fn() -> Millis + Send + Sync),
    ) -> Result<Option<(Operation, Lease)>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let signal = self.work_signal(provider_id);
        // Work only this claimer may take (pinned to its agent) rings its own signal.
        let own = self.work_signal(&agent_signal(holder));
        loop {
            // Registered before looking, so work queued in between still wakes us.
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mine = own.notified();
            tokio::pin!(mine);
            mine.as_mut().enable();
            if let Some(claimed) = self.claim(provider_id, holder, ttl_ms, clock()).await? {
                return Ok(Some(claimed));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let either = async {
                tokio::select! {
                    _ = notified.as_mut() => {}
                    _ = mine.as_mut() => {}
                }
            };
            let _ = tokio::time::timeout(left.min(recheck), either).await;
        }
    }

    async fn create_provider(&self, name: &str, now: Millis) -> Result<Provider, StoreError>;

    /// A single-use setup token for `provider_id`, valid for `ttl_ms`. Only its hash is kept.
    async fn create_enrollment_token(
        &self,
        provider_id: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<EnrollmentToken, StoreError>;

    /// Uses up `token` and enrolls an agent with `public_key` under the token's provider, in one
    /// transaction: a refused key leaves the token usable.
    async fn enroll_agent(&self, token: &str, name: &str, public_key: &str, now: Millis) -> Result<Agent, StoreError>;

    async fn agent(&self, id: &str) -> Result<Agent, StoreError>;

    /// Revokes an agent: its key no longer verifies (its requests are refused).
    async fn revoke_agent(&self, id: &str, now: Millis) -> Result<Agent, StoreError>;

    /// Up to `limit` entries after `after_seq`, in order.
    async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Walks the whole audit log: `Ok(Err(broken))` names the first entry that does not check out.
    async fn verify_audit(&self) -> Result<Result<Verified, Broken>, StoreError> {
        let mut v = audit::Verifier::default();
        let mut after = 0;
        loop {
            let page = self.audit_page(after, 1000).await?;
            let Some(last) = page.last() else {
                return Ok(Ok(v.finish()));
            };
            after = last.seq;
            for e in &page {
                if let Err(b) = v.check(e) {
                    return Ok(Err(b));
                }
            }
        }
    }
}

/// The signal that wakes the claimers of one agent (work pinned to it).
pub(crate) fn agent_signal(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

/// The signal to ring when `op` is queued.
pub(crate) fn signal_for(op: &NewOperation) -> String {
    match &op.agent_id {
        Some(a) => agent_signal(a),
        None => op.provider_id.clone(),
    }
}

fn check_new(op: &NewOperation) -> Result<(), StoreError> {
    for (field, v) in [
        ("provider_id", &op.provider_id),
        ("instance_id", &op.instance_id),
        ("kind", &op.kind),
    ] {
        if v.is_empty() || v.len() > 128 {
            return Err(StoreError::Invalid {
                field,
                reason: format!("must be 1-128 characters (got {})", v.len()),
            });
        }
    }
    Ok(())
}

fn check_ttl(ttl_ms: i64) -> Result<(), StoreError> {
    if !(1..=3_600_000).contains(&ttl_ms) {
        return Err(StoreError::Invalid {
            field: "ttl_ms",
            reason: format!("a lease lasts 1 ms to 1 hour (got {ttl_ms})"),
        });
    }
    Ok(())
}

/// Builds an [`Operation`] from a row of either database (the columns are the same).
macro_rules! operation_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        let json = |s: String| {
            serde_json::from_str::<serde_json::Value>(&s)
                .map_err(|e| $crate::StoreError::Backend(format!("stored JSON does not parse: {e}")))
        };
        let result: Option<String> = row.try_get("result")?;
        Ok::<_, $crate::StoreError>($crate::Operation {
            id: row.try_get("id")?,
            seq: row.try_get("seq")?,
            provider_id: row.try_get("provider_id")?,
            instance_id: row.try_get("instance_id")?,
            kind: row.try_get("kind")?,
            payload: json(row.try_get("payload")?)?,
            status: $crate::OpStatus::parse(&row.try_get::<String, _>("status")?)?,
            lease_holder: row.try_get("lease_holder")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            generation: row.try_get("generation")?,
            result: result.map(json).transpose()?,
            error: row.try_get("error")?,
            agent_id: row.try_get("agent_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }};
}
pub(crate) use operation_from_row;

/// Builds an [`AuditEntry`] from a row of either database.
macro_rules! audit_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        let detail: String = row.try_get("detail")?;
        Ok::<_, $crate::StoreError>($crate::AuditEntry {
            seq: row.try_get("seq")?,
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            subject: row.try_get("subject")?,
            detail: serde_json::from_str(&detail)
                .map_err(|e| $crate::StoreError::Backend(format!("stored JSON does not parse: {e}")))?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }};
}
pub(crate) use audit_from_row;

fn check_audit(e: &NewAuditEntry) -> Result<(), StoreError> {
    for (field, v) in [("actor", &e.actor), ("action", &e.action), ("subject", &e.subject)] {
        if v.is_empty() || v.len() > 256 {
            return Err(StoreError::Invalid {
                field,
                reason: format!("must be 1-256 characters (got {})", v.len()),
            });
        }
    }
    Ok(())
}

fn lease_of(op: &Operation) -> Lease {
    Lease {
        operation_id: op.id.clone(),
        holder: op.lease_holder.clone().unwrap_or_default(),
        generation: op.generation,
        expires_at: op.lease_expires_at.unwrap_or_default(),
    }
}

fn outcome_columns(outcome: &Outcome) -> (OpStatus, Option<String>, Option<String>) {
    match outcome {
        Outcome::Succeeded(v) => (OpStatus::Succeeded, Some(v.to_string()), None),
        Outcome::Failed(e) => (OpStatus::Failed, None, Some(e.clone())),
    }
}
