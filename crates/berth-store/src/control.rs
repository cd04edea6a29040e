//! The control plane's catalogue as the store sees it: customers, API tokens (hashed), agent
//! reports (heartbeats, templates), offerings, instances and operation events. Offerings and
//! instances carry their request as JSON that the server validates and owns; the store keeps as
//! columns only what it filters, joins or fences on (owner ids, status).

use async_trait::async_trait;
use serde::Serialize;

use crate::{Agent, Lease, Millis, NewAuditEntry, NewOperation, Operation, Provider, StoreError};

/// Prefix of API tokens, so a leaked one is recognisable.
pub const API_TOKEN_PREFIX: &str = "berth_tok_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// A public key a customer saved on their account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerKey {
    pub id: String,
    pub customer_id: String,
    /// `ssh` or `age`.
    pub kind: String,
    pub name: String,
    pub public_key: String,
    pub created_at: Millis,
}

/// Who an API token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Provider,
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Provider => "provider",
            Role::Customer => "customer",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Role, StoreError> {
        Ok(match s {
            "operator" => Role::Operator,
            "provider" => Role::Provider,
            "customer" => Role::Customer,
            other => return Err(StoreError::Backend(format!("unknown role {other:?} in the database"))),
        })
    }
}

/// A freshly made API token: shown once, stored only hashed.
pub struct ApiToken {
    pub secret: String,
    pub role: Role,
    /// The provider or customer id; empty for operators.
    pub subject: String,
}

impl ApiToken {
    /// A new random token, not yet stored.
    pub fn generate(role: Role, subject: &str) -> Result<ApiToken, StoreError> {
        let secret = crate::agents::new_secret()?.replacen(crate::agents::TOKEN_PREFIX, API_TOKEN_PREFIX, 1);
        Ok(ApiToken {
            secret,
            role,
            subject: subject.to_owned(),
        })
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("secret", &"<redacted>")
            .field("role", &self.role)
            .field("subject", &self.subject)
            .finish()
    }
}

/// A browser session made from an API token: its secret goes into a cookie, only its hash is
/// stored. It speaks for the token's principal until it expires, is ended, or the token is revoked.
pub struct Session {
    pub secret: String,
    pub role: Role,
    pub subject: String,
    pub expires_at: Millis,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("secret", &"<redacted>")
            .field("role", &self.role)
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An agent's last heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStatus {
    pub agent_id: String,
    pub provider_id: String,
    pub seen_at: Millis,
    pub report: serde_json::Value,
}

/// A template one of an agent's backends offers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateRecord {
    pub agent_id: String,
    pub backend: String,
    pub template_id: String,
    pub detail: serde_json::Value,
    pub reported_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offering {
    pub id: String,
    pub provider_id: String,
    pub body: serde_json::Value,
    pub withdrawn_at: Option<Millis>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewInstance {
    pub provider_id: String,
    /// `None`: the provider's own machine.
    pub customer_id: Option<String>,
    /// `None`: placed on a chosen agent, not ordered from an offering.
    pub offering_id: Option<String>,
    /// The agent every operation of this instance is pinned to (`None`: any of the provider's).
    pub agent_id: Option<String>,
    pub status: String,
    pub request: serde_json::Value,
    /// Bounds on what the instance's account holds, checked in the same transaction.
    pub quota: Option<InstanceQuota>,
}

/// How many instances an account may hold: not terminated, and of those still `pending`
/// (recorded, not provisioned). Counted against the customer, or the provider for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceQuota {
    pub instances: i64,
    pub pending_instances: i64,
    /// What the instance's provider lets its customer hold (unbounded for its own machines).
    pub of_provider: crate::quota::CustomerQuota,
}

/// One page of a list in creation order: the items after the one whose id is `after`, at most
/// `limit` of them. An `after` that names nothing gives an empty page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub after: Option<String>,
    pub limit: i64,
}

impl Page {
    /// The first `limit` items.
    pub fn first(limit: i64) -> Page {
        Page { after: None, limit }
    }

    /// Every item: only for lists bounded otherwise (a provider's agents, an account's keys).
    pub fn all() -> Page {
        Page {
            after: None,
            limit: i64::MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRecord {
    pub id: String,
    pub provider_id: String,
    pub customer_id: Option<String>,
    pub offering_id: Option<String>,
    /// The agent its operations are pinned to.
    pub agent_id: Option<String>,
    pub status: String,
    /// What was ordered (the server's schema).
    pub request: serde_json::Value,
    /// What the agents reported (vm id, addresses, credentials ciphertext, last error…).
    pub state: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A change to an instance made together with another write (a finished operation).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceChange {
    /// The new status; `None` leaves it as it is when the change commits.
    pub status: Option<String>,
    pub state: serde_json::Value,
    /// Replaces the request (a reconfigure changes what was ordered).
    pub request: Option<serde_json::Value>,
    /// Leaves the status alone if the instance is in this one (e.g. `terminating`: a terminate
    /// queued meanwhile must not be overwritten by an earlier operation finishing).
    pub keep_status_if: Option<String>,
}

/// Which instances to list; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceFilter {
    pub provider_id: Option<String>,
    pub customer_id: Option<String>,
    pub status: Option<String>,
}

/// One progress event of an operation, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpEvent {
    pub seq: i64,
    pub at: Millis,
    pub event: serde_json::Value,
}

/// An operation to queue for an instance, if the instance's status allows it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceAction {
    pub instance_id: String,
    /// The statuses the instance may be in; anything else is a `Conflict`.
    pub allowed: Vec<String>,
    /// The status it takes now (e.g. `provisioning`), if any.
    pub new_status: Option<String>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub audit: NewAuditEntry,
}

impl InstanceAction {
    pub(crate) fn operation(&self, instance: &InstanceRecord) -> NewOperation {
        NewOperation {
            provider_id: instance.provider_id.clone(),
            instance_id: self.instance_id.clone(),
            kind: self.kind.clone(),
            payload: self.payload.clone(),
            agent_id: instance.agent_id.clone(),
        }
    }
}

pub(crate) fn json_col(s: String) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(&s).map_err(|e| StoreError::Backend(format!("stored JSON does not parse: {e}")))
}

macro_rules! offering_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        Ok::<_, $crate::StoreError>($crate::control::Offering {
            id: row.try_get("id")?,
            provider_id: row.try_get("provider_id")?,
            body: $crate::control::json_col(row.try_get("body")?)?,
            withdrawn_at: row.try_get("withdrawn_at")?,
            created_at: row.try_get("created_at")?,
        })
    }};
}
pub(crate) use offering_from_row;

/// A unique index refusing `name` (of a `what`) as [`StoreError::NameTaken`]; other errors as
/// they are.
pub(crate) fn name_taken(e: sqlx::Error, what: &'static str, name: &str) -> StoreError {
    if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
        StoreError::NameTaken {
            what,
            name: name.to_owned(),
        }
    } else {
        e.into()
    }
}

/// An offering body's `name` (the column the per-provider unique index is on).
pub(crate) fn offering_name(body: &serde_json::Value) -> String {
    body.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_owned()
}

macro_rules! instance_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        Ok::<_, $crate::StoreError>($crate::control::InstanceRecord {
            id: row.try_get("id")?,
            provider_id: row.try_get("provider_id")?,
            customer_id: row.try_get("customer_id")?,
            offering_id: row.try_get("offering_id")?,
            agent_id: row.try_get("agent_id")?,
            status: row.try_get("status")?,
            request: $crate::control::json_col(row.try_get("request")?)?,
            state: $crate::control::json_col(row.try_get("state")?)?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }};
}
pub(crate) use instance_from_row;

/// The catalogue half of a store (every [`crate::Store`] is one): implemented once for both
/// databases in `control_impl.rs`.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Records progress events of an operation under a lease that is still held.
    async fn add_events(
        &self,
        lease: &Lease,
        events: Vec<serde_json::Value>,
        now: Millis,
    ) -> Result<Vec<OpEvent>, StoreError>;

    /// The events of an operation after `after_seq`, in order.
    async fn events(&self, operation_id: &str, after_seq: i64) -> Result<Vec<OpEvent>, StoreError>;

    /// Rung when an operation gets an event or finishes (in this process or, on PostgreSQL, in
    /// any replica).
    fn operation_signal(&self, operation_id: &str) -> std::sync::Arc<tokio::sync::Notify>;

    async fn providers(&self, page: &Page) -> Result<Vec<Provider>, StoreError>;

    /// One provider, or `NotFound`.
    async fn provider(&self, id: &str) -> Result<Provider, StoreError>;

    /// Agents, of one provider or all.
    async fn agents(&self, provider_id: Option<&str>, page: &Page) -> Result<Vec<Agent>, StoreError>;

    async fn agent_by_key(&self, public_key: &str) -> Result<Agent, StoreError>;

    async fn create_customer(&self, name: &str, now: Millis) -> Result<Customer, StoreError>;

    async fn customer(&self, id: &str) -> Result<Customer, StoreError>;

    /// Saves a public key (`kind` `ssh` or `age`, checked by the caller) on a customer's account.
    async fn add_customer_key(
        &self,
        customer_id: &str,
        kind: &str,
        name: &str,
        public_key: &str,
        now: Millis,
    ) -> Result<CustomerKey, StoreError>;

    /// A customer's saved keys, oldest first.
    async fn customer_keys(&self, customer_id: &str, page: &Page) -> Result<Vec<CustomerKey>, StoreError>;

    /// Removes one of a customer's keys; another customer's (or an unknown) key is `NotFound`.
    async fn delete_customer_key(&self, customer_id: &str, id: &str) -> Result<(), StoreError>;

    /// Every customer, oldest first.
    async fn customers(&self, page: &Page) -> Result<Vec<Customer>, StoreError>;

    /// A new API token for `role` (`subject`: the provider or customer id, empty for an
    /// operator). Only its hash is kept.
    async fn create_api_token(
        &self,
        role: Role,
        subject: &str,
        name: &str,
        now: Millis,
    ) -> Result<ApiToken, StoreError>;

    /// Stores a token made with [`ApiToken::generate`] (only its hash).
    async fn store_api_token(&self, token: &ApiToken, name: &str, now: Millis) -> Result<(), StoreError>;

    /// Who a token speaks for, if it is known, not revoked and not expired at `now`.
    async fn token_principal(&self, secret: &str, now: Millis) -> Result<Option<(Role, String)>, StoreError>;

    /// A session for the principal of `token` (`None`: unknown or revoked token), ending at
    /// `now + ttl_ms`. Expired sessions are dropped on the way.
    async fn create_session(&self, token: &str, ttl_ms: i64, now: Millis) -> Result<Option<Session>, StoreError>;

    /// Who a session speaks for, while it is live and its token neither revoked nor expired.
    async fn session_principal(&self, secret: &str, now: Millis) -> Result<Option<(Role, String)>, StoreError>;

    /// Ends a session (signing out); an unknown one is already ended.
    async fn end_session(&self, secret: &str) -> Result<(), StoreError>;

    /// Whether any operator token exists (the server makes the first one at start).
    async fn has_operator_token(&self) -> Result<bool, StoreError>;

    async fn record_heartbeat(&self, agent_id: &str, report: serde_json::Value, now: Millis) -> Result<(), StoreError>;

    /// The last heartbeat of every agent not revoked, of one provider or all.
    async fn agent_statuses(&self, provider_id: Option<&str>) -> Result<Vec<AgentStatus>, StoreError>;

    /// Replaces what `agent_id` reported of its templates: `(backend, template id, detail)`.
    async fn set_templates(
        &self,
        agent_id: &str,
        templates: Vec<(String, String, serde_json::Value)>,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Templates reported by one agent, or by every agent of a provider.
    async fn templates(
        &self,
        agent_id: Option<&str>,
        provider_id: Option<&str>,
    ) -> Result<Vec<TemplateRecord>, StoreError>;

    /// A new offering; with `max_offerings`, refused (`Quota`) when the provider already has
    /// that many not withdrawn.
    async fn create_offering(
        &self,
        provider_id: &str,
        body: serde_json::Value,
        max_offerings: Option<i64>,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<Offering, StoreError>;

    async fn offering(&self, id: &str) -> Result<Offering, StoreError>;

    /// Offerings of one provider or all: those on sale, or with `withdrawn` those withdrawn too.
    async fn offerings(
        &self,
        provider_id: Option<&str>,
        withdrawn: bool,
        page: &Page,
    ) -> Result<Vec<Offering>, StoreError>;

    async fn withdraw_offering(&self, id: &str, audit: NewAuditEntry, now: Millis) -> Result<Offering, StoreError>;

    /// Replaces an offering's body (what later orders get; instances keep what they were
    /// ordered with). A withdrawn offering is not changed (`Conflict`); a name another of the
    /// provider's offerings on sale has is refused (`NameTaken`).
    async fn update_offering(
        &self,
        id: &str,
        body: serde_json::Value,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<Offering, StoreError>;

    /// Creates an instance and, if `action` is given, queues its first operation, appending
    /// `audit`, all in one transaction.
    async fn create_instance(
        &self,
        new: NewInstance,
        first: Option<(String, serde_json::Value)>,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<(InstanceRecord, Option<Operation>), StoreError>;

    async fn instance(&self, id: &str) -> Result<InstanceRecord, StoreError>;

    async fn instances(&self, filter: &InstanceFilter, page: &Page) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Queues an operation for an instance whose status is one of `action.allowed`, moving it
    /// to `action.new_status`; a `Conflict` names the status it is in.
    async fn act_on_instance(&self, action: InstanceAction, now: Millis) -> Result<Operation, StoreError>;

    /// Operations of an instance, in order.
    async fn instance_operations(&self, instance_id: &str, page: &Page) -> Result<Vec<Operation>, StoreError>;
}
