//! Berth's Multipass backend: Ubuntu VMs on a workstation or a small host, driven through the
//! `multipass` CLI and its `--format json` output. Full description: `docs/multipass.md`.
//!
//! Public API:
//! - [`MultipassConfig`] — `[provisioner.multipass]` (serde, unknown keys refused): `binary`
//!   (`multipass`, looked up on `PATH` and in `/snap/bin`, or a path relative to the config
//!   file), `image` (`24.04`), `timeout_seconds` (60, quick calls), `launch_timeout_seconds`
//!   (900, launch and the wait for an address), `user` (`ubuntu`, gets the SSH keys), `env`,
//!   `pass_env` (`["HOME"]`). [`MultipassConfig::validate`] returns a [`ConfigError`] naming the key.
//! - [`MultipassProvider::new`]`(config, base_dir)` — `base_dir` is the config file's directory.
//!   The result implements [`berth_core::Provider`] (`backend() == "multipass"`).
//! - [`name_for`] / [`owner_of`] — the instance-id ↔ Multipass-name rule (`berth-<id>`, or
//!   `berth--<hash>` for ids longer than 57 characters), which is Berth's ownership marker.
//!
//! Every call runs through `berth-exec`: cleared environment (only `PATH`, `LC_ALL`, `env` and
//! `pass_env`), its own process group killed on timeout, captured output. Cloud-init user-data
//! goes to `multipass launch --cloud-init -` on stdin, so no key material touches the disk.

mod cli;
mod cloudinit;
mod config;
mod json;
mod naming;
mod provider;

pub use config::{
    ConfigError, DEFAULT_BINARY, DEFAULT_IMAGE, DEFAULT_LAUNCH_TIMEOUT_SECONDS, DEFAULT_TIMEOUT_SECONDS, DEFAULT_USER,
    MultipassConfig,
};
pub use naming::{HASHED_PREFIX, MAX_NAME_LEN, NAME_PREFIX, Owner, name_for, owner_of};
pub use provider::MultipassProvider;
