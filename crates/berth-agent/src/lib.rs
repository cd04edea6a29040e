//! Berth's agent: the configuration file (`berth.toml`), the wiring from a configured backend to
//! a `Provider`, and the agent that runs next to the hypervisors: it claims work from the control
//! plane, runs it through the backend (journaled, so a crash resumes), heartbeats capacity and
//! health, and reconciles what the backend has with what the control plane expects.

pub mod agent;
pub mod backends;
mod budget;
pub mod cmd;
pub mod config;
pub use berth_api::credentials;
pub mod doctor;
pub mod fsutil;
pub mod guard;
pub mod heartbeat;
pub mod identity;
mod inbox;
pub mod journal;
pub mod lease;
pub mod metrics_http;
pub mod pools;
mod provision;
pub mod reconcile;
pub mod release;
mod route;
pub mod runner;
pub mod site_drift;
mod work;

#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod testkit;

pub use agent::{Agent, Backend};
pub use backends::{build_provider, manual_provider};
pub use config::{
    AgentSettings, BackendConfig, BackendKind, BackendSettings, Config, ConfigFileError, load_config, parse_config,
};
