//! Warm pools as an agent reports them in its heartbeat.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One warm pool of an agent: machines of one template and size kept ready for orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolReport {
    pub name: String,
    pub backend: String,
    /// The template its machines are made from (`None`: the backend's default).
    #[serde(default)]
    pub template: Option<String>,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// `stopped` (never booted) or `running`.
    pub mode: String,
    /// How many machines it keeps ready (0 while drained).
    pub target: u32,
    /// Machines ready to be taken now.
    pub ready: u32,
    /// Machines being made.
    pub filling: u32,
    /// Orders that took a machine, and orders that matched but found none ready, since the
    /// agent started.
    pub hits: u64,
    pub misses: u64,
    /// How long the last machine took to make, in milliseconds.
    #[serde(default)]
    pub last_fill_ms: Option<u64>,
    /// Why it is not kept (its backend cannot keep pools, its last fill failed, drained).
    #[serde(default)]
    pub detail: Option<String>,
}
