//! The typed Proxmox VE REST client: HTTP and TLS, errors and their classes, retries, tasks,
//! response types, and one method per endpoint Berth uses. Usable without the provider.

pub mod api;
pub mod backup;
pub mod cluster;
pub mod error;
pub mod ha;
pub mod http;
pub mod migrate;
pub mod network;
pub mod params;
pub mod poll;
pub mod propstring;
pub mod retry;
pub mod storage_cfg;
pub mod task;
pub mod types;

pub use api::{GuestType, PowerAction};
pub use berth_tls::{Fingerprint, TlsOptions, parse_pem_certs};
pub use error::PveError;
pub use http::{ClientOptions, Envelope, Method, PveClient};
pub use params::{Params, pve_urlencode};
pub use poll::Poll;
pub use retry::RetryPolicy;
pub use task::{TaskOutcome, Upid};
