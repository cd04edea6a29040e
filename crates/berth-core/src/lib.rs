//! Berth's domain: typed IDs, the VM spec, instances, stages, capabilities, the error taxonomy,
//! the configuration error every backend returns and the `Provider` contract every backend
//! implements. No I/O lives here.

pub mod config_error;
pub mod error;
pub mod ids;
pub mod instance;
pub mod pool;
pub mod provider;
pub mod secret;
pub mod spec;
pub mod stage;
pub mod text;
pub mod time;

pub use config_error::ConfigError;
pub use error::{ErrorCode, ProviderError};
pub use ids::{InstanceId, InstanceRef, Scope};
pub use instance::{
    Capabilities, Capacity, Check, CheckStatus, DeleteOutcome, ExecOutput, Instance, PowerOp, PowerState,
    ReconfigureOutcome, Snapshot, Template,
};
pub use pool::{PoolMark, PoolMode};
pub use provider::{ListFilter, Provider};
pub use secret::Secret;
pub use spec::{GuestKind, Ipv4Config, Ipv6Config, NetworkSpec, Resize, SshPublicKey, VmSpec};
pub use stage::{NoProgress, ProgressSink, Stage, StageEvent, StagePhase};
pub use time::utc;
