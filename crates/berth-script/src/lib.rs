//! Berth's script backend: hosting providers with their own tooling plug in executables (any
//! language) that speak protocol v1 — one JSON request on stdin, one JSON response on stdout,
//! log lines and `berth-stage:` progress lines on stderr. Full protocol: `docs/script-protocol.md`.
//!
//! Public API:
//! - [`ScriptConfig`] — `[provisioner.script]` (serde, unknown keys refused): `command` (one
//!   executable for every action) and/or per-action `provision`, `terminate`, `start`, `stop`,
//!   `status`, `list`, `health_check`; `timeout_seconds` (300), `env`, `pass_env`,
//!   `max_output_bytes` (1 MiB). [`ScriptConfig::validate`] returns a [`ConfigError`] naming the key.
//! - [`ScriptProvider::new`]`(config, base_dir)` — `base_dir` is the config file's directory:
//!   relative paths resolve against it and scripts run in it. The result implements
//!   [`berth_core::Provider`].
//! - [`Action`], [`PROTOCOL_VERSION`], [`STAGE_PREFIX`] — the protocol's vocabulary.
//!
//! Every script runs through `berth-exec`: cleared environment (only `PATH`, `LC_ALL`,
//! `BERTH_PROTOCOL`, `BERTH_ACTION`, `env` and `pass_env`), its own process group killed on
//! timeout, bounded stdout, stderr streamed to `tracing`. Scripts must be idempotent by
//! `contract_id`: `create` asks `status` first and provisions only when the script says
//! `not_found`, but a crash mid-`provision` means the same `provision` request comes again.

mod config;
mod invoke;
mod ledger;
mod protocol;
mod provider;

pub use config::{Action, ConfigError, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT_SECONDS, ScriptConfig};
pub use protocol::{PROTOCOL_VERSION, STAGE_PREFIX};
pub use provider::ScriptProvider;
