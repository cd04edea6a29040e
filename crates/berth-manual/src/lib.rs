//! Berth's manual backend: for providers who provision by hand. `create` records a pending
//! request, tells the operators (Slack-compatible webhook) and waits in the
//! `waiting_for_operator` stage until an operator submits the machine's details. A pending human
//! step is not a failure: only an operator's explicit fail/cancel or the deadline ends a request
//! unsuccessfully. Operator guide: `docs/manual-backend.md`.
//!
//! Public API (for `berth-agent` and the CLI):
//! - [`ManualConfig`] — `[provisioner.manual]` (serde, unknown keys refused):
//!   `notification_webhook` (optional http(s) URL), `state_dir` (`berth-manual`, relative to the
//!   config file's directory), `deadline_seconds` (86400), `webhook_timeout_seconds` (10),
//!   `webhook_retries` (3), `webhook_backoff_ms` (500), `poll_interval_ms` (1000).
//!   [`ManualConfig::validate`] returns a [`ConfigError`] naming the key.
//! - [`ManualProvider::new`]`(config, base_dir)` — `base_dir` is the config file's directory;
//!   creates `state_dir` (0700). The result implements [`berth_core::Provider`]
//!   (`backend() == "manual"`; power, reconfigure, templates and capacity are `Unsupported`).
//! - Operator calls on the same type (the agent's provider or one the CLI builds from the same
//!   config — several processes may share a `state_dir`):
//!   - [`ManualProvider::complete`]`(id, `[`OperatorDetails`]`)` — `berth vm complete ID --ip …
//!     [--ssh-port …] [--password-file …]`; at least one address; only pending requests.
//!   - [`ManualProvider::fail`]`(id, reason)` — `berth vm fail ID --reason …`.
//!   - [`ManualProvider::cancel`]`(id, reason)` — withdraw a request nobody should build.
//!   - [`ManualProvider::pending`]`()` — `berth vm list --pending`: [`PendingRequest`]s (id,
//!     name, size, age, deadline), oldest first.
//!   - Errors are [`OperatorError`]s (not found, not pending, invalid field, store trouble).
//!
//! How create ends: completed → the instance (`Running`, the operator's addresses, SSH port and
//! root password; the password is then removed from the record). Failed or cancelled by an
//! operator → `Conflict` carrying the operator's reason (not retryable: delete the instance to
//! request it again). Deadline passed → `Timeout` once, and the record is marked failed, so a
//! retry gets `Conflict` with "no operator completed it within N s". A dropped create leaves
//! the request pending; calling create again resumes the wait without notifying twice.

mod config;
mod operator;
mod provider;
mod store;
mod webhook;

pub use config::{
    ConfigError, DEFAULT_DEADLINE_SECONDS, DEFAULT_POLL_INTERVAL_MS, DEFAULT_STATE_DIR, DEFAULT_WEBHOOK_BACKOFF_MS,
    DEFAULT_WEBHOOK_RETRIES, DEFAULT_WEBHOOK_TIMEOUT_SECONDS, ManualConfig,
};
pub use operator::{OperatorDetails, OperatorError, PendingRequest};
pub use provider::ManualProvider;
pub use store::{RequestStatus, StoreError};
pub use webhook::{complete_command, describe_key};
