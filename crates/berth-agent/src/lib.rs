//! Berth's agent side: the configuration file (`berth.toml`) and the wiring from a configured
//! backend to a `Provider`. The poll loop, journal and heartbeat come with the agent itself.

pub mod backends;
pub mod config;

pub use backends::{build_provider, manual_provider};
pub use config::{BackendKind, Config, ConfigFileError, load_config, parse_config};
