//! Berth's TLS in one place: how clients (the Proxmox backend, the agent, the CLI) check the
//! server they talk to ([`client`]), and the control plane's own certificate, reloadable
//! without dropping connections ([`server`]).

pub mod client;
pub mod server;

pub use client::{Fingerprint, TlsOptions, apply, describe_failure, parse_fingerprints, parse_pem_certs};
