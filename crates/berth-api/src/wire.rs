//! The JSON bodies of the control-plane API (`/api/v1`), shared by the server (which validates
//! and serves them), the agent and the CLI (which send and read them). Requests of people and
//! their tools reject unknown fields (a typo is an error, not a silently ignored setting); what
//! agents send (enrollment, heartbeats, templates, events, completions, lease renewals) takes
//! fields it does not know, so an agent one version newer than its control plane keeps working.
//! Every type carries its OpenAPI schema.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod catalog;
mod drift;
mod input;
mod login;
mod pool;
mod price;
mod quota;
mod tokens;
pub use catalog::{AgentAvailability, Availability, OfferingSpec, OfferingView, Price, PricePeriod};
pub use drift::{SiteChange, SiteDrift};
pub use input::{InputTaken, OperatorInput, OperatorInputView};
pub use login::ssh_command;
pub use pool::PoolReport;
pub use quota::{CustomerQuotaView, QuotaView, SetCustomerQuota, SetQuota};
pub use tokens::{CreateToken, TokenCreated, TokenView};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// An RFC 7807 problem document. `code` is stable; `field` names the offending input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Whether the same request may succeed later.
    #[serde(default)]
    pub retryable: bool,
}

/// Debug output of the types that carry a secret token: the token is redacted.
macro_rules! redacted_debug {
    ($ty:ident { $($field:ident),* } secret $secret:ident) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .field(stringify!($secret), &"<redacted>")
                    .finish()
            }
        }
    };
}
redacted_debug!(AccountCreated { id, name } secret token);
redacted_debug!(EnrollmentTokenView { provider_id, expires_at } secret token);
redacted_debug!(EnrollAgent { name, public_key } secret token);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamed {
    /// Shown to people: no control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomerView {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// A new provider or customer and its first API token (shown once).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountCreated {
    pub id: String,
    pub name: String,
    pub token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// How long the token may be used; 60 s to 30 days, default 1 day.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenView {
    pub token: String,
    pub provider_id: String,
    pub expires_at: Millis,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnrollAgent {
    pub token: String,
    pub name: String,
    /// Standard base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub provider_id: String,
    pub name: String,
    pub public_key: String,
    pub revoked_at: Option<Millis>,
    pub created_at: Millis,
    /// The last heartbeat, if any.
    pub last_seen: Option<Millis>,
    /// Heartbeat younger than the server's TTL.
    pub alive: bool,
    pub heartbeat: Option<Heartbeat>,
    /// The agent's version against the control plane's, when their minor versions differ:
    /// one apart works (upgrade soon); more is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_skew: Option<String>,
}

/// What an agent reports every few seconds. Unlike other requests, a heartbeat (and what it
/// holds) accepts fields it does not know, so an agent one minor version newer than the control
/// plane keeps reporting: what it adds is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    pub version: String,
    pub capacity: CapacityReport,
    /// The hypervisors (backends) this agent drives.
    #[serde(default)]
    pub backends: Vec<BackendHealth>,
    /// What the agent's last reconcile found different from what the control plane expects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// The agent's scheduled check of its site file (declarative mode), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_drift: Option<SiteDrift>,
    /// The agent's warm pools (`[[pool]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolReport>,
}

/// One difference between a backend and the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Drift {
    pub instance_id: String,
    /// `stopped` (expected running), `running` (expected stopped), `missing` (no machine), or
    /// `orphan` (a Berth-owned machine the control plane does not expect: stopped and kept in
    /// quarantine).
    pub kind: String,
    pub backend: String,
    #[serde(default)]
    pub vm_id: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// When the agent first saw it.
    pub since: Millis,
}

/// Configured totals × overcommit, and what is still free.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapacityReport {
    pub cores_total: u64,
    pub cores_free: u64,
    pub memory_mib_total: u64,
    pub memory_mib_free: u64,
    pub disk_gib_total: u64,
    pub disk_gib_free: u64,
    /// A backend of the agent cannot tell its capacity and none is configured for it (the
    /// seed's script form): orders for the agent are admitted without a capacity check, and the
    /// figures above count only its other backends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmetered: bool,
}

impl CapacityReport {
    /// No backend of the agent reports any capacity: there are no figures to show.
    pub fn nothing_metered(&self) -> bool {
        self.unmetered && self.cores_total == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackendHealth {
    pub name: String,
    /// `proxmox`, `libvirt`, `multipass`, `script`, `manual`.
    pub kind: String,
    pub healthy: bool,
    #[serde(default)]
    pub detail: Option<String>,
    /// Whether it can change a machine's size (`None`: the agent did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconfigure: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateReport {
    pub backend: String,
    /// What an offering's `template` names to select it.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub disk_gib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplatesReport {
    pub templates: Vec<TemplateReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub agent_id: String,
    #[serde(flatten)]
    pub template: TemplateReport,
    pub reported_at: Millis,
}

/// A customer's order: one machine of an offering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    #[schema(min_length = 1, max_length = 128)]
    pub offering_id: String,
    /// The machine's host name (a DNS name).
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )]
    pub name: String,
    /// OpenSSH public key installed for the login user.
    pub ssh_public_key: String,
    /// The customer's age (X25519) public key; credentials the VM is born with are encrypted to
    /// it. Without it, a password the machine is born with is not kept (log in by SSH key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_public_key: Option<String>,
    #[serde(default)]
    pub skip_post_provision: bool,
    /// `false` records the instance without provisioning it yet (`POST …/provision` later).
    #[serde(default = "yes")]
    pub provision: bool,
}

fn yes() -> bool {
    true
}

/// A public key to save on the calling customer's account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveKey {
    /// `ssh` (an OpenSSH public key line, offered at order time) or `age` (the recipient the
    /// credentials of new machines are sealed to).
    pub kind: String,
    /// What it is called in lists: `laptop`, `ci`.
    pub name: String,
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub public_key: String,
    pub created_at: Millis,
}

/// A machine placed by a provider (or an operator) on a chosen agent and backend, with a
/// template and size and no offering: for the provider itself or on behalf of a customer. Every
/// operation of it is claimable only by that agent and runs on that backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// The agent (hypervisor host) it runs on.
    pub agent_id: String,
    /// One of the agent's backends as its heartbeat names them; may be left out when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// A template that backend reports (`GET /agents/{id}/templates`); `None`: its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The machine's host name.
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// OpenSSH public key installed for the login user.
    pub ssh_public_key: String,
    /// age (X25519) public key the credentials the VM is born with are encrypted to. Without
    /// it, a password the machine is born with is not kept (log in by SSH key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_provision_commands: Vec<String>,
    #[serde(default)]
    pub skip_post_provision: bool,
    /// The customer it is for, who then sees and manages it; `None`: the provider's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// `false` records the instance without provisioning it yet (`POST …/provision` later).
    #[serde(default = "yes")]
    pub provision: bool,
}

/// `202 Accepted`: the work is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub instance_id: String,
    /// `None` when nothing was queued (`provision: false`).
    pub operation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    pub provider_id: String,
    /// `None`: the provider's own machine.
    pub customer_id: Option<String>,
    /// `None`: placed on a chosen agent (`POST /instances`), not ordered.
    pub offering_id: Option<String>,
    pub name: String,
    /// `pending`, `provisioning`, `running`, `stopped`, `failed`, `terminating`, `terminated`.
    pub status: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub template: Option<String>,
    /// The backend it was placed on, when it was.
    #[serde(default)]
    pub backend: Option<String>,
    pub ssh_public_key: String,
    pub vm_id: Option<String>,
    pub hypervisor: Option<String>,
    pub agent_id: Option<String>,
    pub ip_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub ssh_port: Option<u16>,
    /// The user to log in as by SSH, when the backend said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_user: Option<String>,
    /// Credentials the VM was born with, encrypted to the requester's public key (ASCII-armored age).
    pub credentials: Option<String>,
    pub last_error: Option<OpError>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A change of size: the numbers named change, the others stay. A number is left out, never
/// `null` (the schema says so, and so does the server).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reconfigure {
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "not_null")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "not_null")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "not_null")]
    pub disk_gib: Option<u64>,
}

/// A field that, when present, holds a value: `null` is refused like any other wrong type.
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpError {
    /// A Provider error code (`not_found`, `invalid_spec`, `timeout`, …) or `lease_lost`.
    pub code: String,
    pub message: String,
}

/// One progress event, as an agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventReport {
    /// `clone_template`, `configure_vm`, `start_vm`, `wait_network`, `post_provision`, `register`, …
    pub stage: String,
    /// `started`, `completed`, `skipped` or `progress`.
    pub phase: String,
    #[serde(default)]
    pub percent: Option<u8>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub at: Millis,
    #[serde(flatten)]
    pub event: EventReport,
}

/// A stage as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StageView {
    pub stage: String,
    /// `running`, `completed`, `skipped`, or `failed` (the stage a failed operation ended in).
    pub status: String,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    pub instance_id: String,
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub status: String,
    pub percent: u8,
    pub message: Option<String>,
    pub stages: Vec<StageView>,
    pub events: Vec<EventView>,
    pub result: Option<OpResult>,
    pub error: Option<OpError>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What an agent reports when an operation succeeds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// The user to log in as by SSH, when the backend said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_user: Option<String>,
    /// Encrypted to the requester's public key on the agent; the server never sees plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// A reconfigure the running guest could not take live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_required: Option<bool>,
    /// Post-provision commands run: exit status and a bounded tail of output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandRun {
    pub command: String,
    pub exit_status: i32,
    pub output_tail: String,
}

/// The work an agent claimed, under a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Claimed {
    pub operation_id: String,
    pub instance_id: String,
    pub kind: String,
    /// For `provision`: a [`ProvisionPayload`]; for `reconfigure`: a [`Reconfigure`].
    pub payload: serde_json::Value,
    /// The lease's fencing token: every report presents it.
    pub generation: i64,
    /// When the lease ends, on the control plane's clock.
    pub lease_expires_at: Millis,
    /// The time left on the lease when this answer was sent (ms). Agents pace renewals and
    /// fence their own work with it on their monotonic clock, never comparing clocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_ms: Option<i64>,
    /// The largest request body the control plane accepts (`api.body_limit_bytes`): a completion
    /// must fit under it, so the agent shortens output tails to fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_limit_bytes: Option<u64>,
}

/// What a `provision` operation asks of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProvisionPayload {
    pub instance_id: String,
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub bandwidth_mbps: Option<u32>,
    pub template: Option<String>,
    pub ssh_public_key: String,
    pub requester_public_key: String,
    pub post_provision_commands: Vec<String>,
    /// The agent's backend that must run it (placed instances); `None`: the agent picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseRef {
    pub generation: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    pub generation: i64,
    /// When the lease ends, on the control plane's clock.
    pub expires_at: Millis,
    /// The time left on the renewed lease when this answer was sent (ms), for agents to pace
    /// on their own monotonic clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportEvents {
    pub generation: i64,
    pub events: Vec<EventReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Completion {
    Succeeded(OpResult),
    Failed(OpError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Complete {
    pub generation: i64,
    pub outcome: Completion,
}

/// A contract awaiting provisioning, in the shape of the pending-provision seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PendingContract {
    pub contract_id: String,
    pub offering: SeedOffering,
    pub requester_ssh_pubkey: String,
    pub instance_config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeedOffering {
    pub id: String,
    pub cpu_cores: u32,
    pub memory_gb: f64,
    pub storage_gb: u64,
    pub bandwidth_mbps: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    pub entries: i64,
    pub last_hash: Option<String>,
    pub broken_at: Option<i64>,
    pub reason: Option<String>,
}
