//! Berth's Proxmox VE backend: a typed PVE REST client (`client`) and the `Provider`
//! implementation for VMs and LXC containers (`provider`), configured by `ProxmoxConfig`.
//!
//! Ground rules (see proxmox-facts.md): token auth; TLS verified by default (extra CA or pinned
//! leaf fingerprint, opt-out only explicitly); form bodies with `1`/`0` booleans; PVE's error text
//! from the HTTP reason phrase, then the body `message`, plus the `errors` map; retries only for
//! transient failures; every guest Berth makes carries an ownership marker (tags `berth` +
//! `berth-<id>`, description line `berth-instance-id: <id>`) and nothing is adopted without it.

pub mod client;
pub mod config;
pub mod provider;

pub use client::{PveClient, PveError};
pub use config::{ConfigError, ProxmoxConfig};
pub use provider::ProxmoxProvider;
