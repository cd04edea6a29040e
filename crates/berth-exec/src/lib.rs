//! The one wrapper through which Berth runs external commands (scripts, `qemu-img`, `multipass`).
//!
//! Public API:
//! - [`ExecSpec`]: what to run — program, args, environment (the parent's environment is
//!   **cleared**; only [`DEFAULT_PATH`]/`LC_ALL=C.UTF-8` and what the spec names are passed),
//!   optional stdin bytes (never logged or put into an error), a timeout, a stdout byte limit,
//!   a name for logs, and an optional channel receiving every stderr line.
//! - [`run`]: spawns the child in its own process group, drains stdin/stdout/stderr concurrently,
//!   streams stderr line by line to `tracing` (target `berth_exec::stderr`, field `cmd`), keeps a
//!   bounded tail of it for errors, and kills the **whole process group** (SIGKILL) on timeout, on
//!   too much output, when the main process exits (stragglers holding the pipes), and when the
//!   returned future is dropped.
//! - [`ExecOutput`]: exit status, stdout bytes, stderr tail; [`ExecOutput::stdout_utf8`] and
//!   [`ExecOutput::check_success`] turn the common follow-ups into [`ExecError`]s.
//! - [`redact_secrets`]: masks values of `password`/`secret`/`token`-like keys in text (JSON or
//!   `key=value`), used on every logged stderr line; [`redacted_snippet`] is the redacted, bounded
//!   start of a command's output for an error message.
//! - [`check_env`], [`child_env`], [`RedactedEnv`]: a backend's `env` / `pass_env` settings —
//!   checked (errors are `berth_core::ConfigError`s keyed `env.NAME` or `pass_env`), turned into
//!   the child's variables for [`ExecSpec::envs`], and shown in `Debug` by name only.

mod env;
mod error;
mod redact;
mod run;
mod spec;
mod stderr;

pub use env::{RedactedEnv, check_env, child_env};
pub use error::ExecError;
pub use redact::{redact_secrets, redacted_snippet};
pub use run::{ExecOutput, run};
pub use spec::{DEFAULT_MAX_STDOUT, DEFAULT_PATH, DEFAULT_STDERR_TAIL, ExecSpec};
