//! What an agent's scheduled drift check found: its site file (declarative mode) against the
//! cluster, reported in the heartbeat.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Millis;

/// The last check of the agent's site file against its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteDrift {
    /// The site file, as the agent's configuration names it.
    pub site: String,
    /// The backend (cluster) it was checked against.
    pub backend: String,
    pub checked_at: Millis,
    /// Why the check could not be made (the file does not parse, the cluster did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the agent keeps the ledger of the applies (`[drift] audit`) and the file was applied
    /// through this backend: that last apply. `changes` are then what changed on the cluster
    /// outside Berth since it; absent, they are what differs from the file itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Millis>,
    /// What differs, one line per object (at most 50; `more` counts the rest).
    #[serde(default)]
    pub changes: Vec<SiteChange>,
    /// Changes beyond those listed.
    #[serde(default)]
    pub more: u32,
}

impl SiteDrift {
    /// The most changes one heartbeat carries.
    pub const MAX_CHANGES: usize = 50;
}

/// One object not as the site file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteChange {
    /// The object's address in the file (`vm.web1`, `storage.backup`).
    pub address: String,
    /// What applying the file would do, with the fields (`update in place: cores "2" → "4"`),
    /// or, against the last apply, what changed (`cores: "2" → "4"`, `gone from the cluster`).
    pub change: String,
}
