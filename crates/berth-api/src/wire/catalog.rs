//! What providers publish and customers discover: offerings, their prices, and whether one can be
//! ordered now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PricePeriod {
    Hour,
    Month,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// In the currency's minor unit (cents), at most 10^11.
    #[schema(maximum = 100_000_000_000_u64)]
    pub amount: u64,
    /// ISO 4217, three capital letters.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub period: PricePeriod,
}

/// What a provider publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferingSpec {
    /// Shown to customers: no control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    #[schema(minimum = 1, maximum = 8192)]
    pub cores: u32,
    #[schema(minimum = 16, maximum = 16_777_216_u64)]
    pub memory_mib: u64,
    #[schema(minimum = 1, maximum = 1_048_576_u64)]
    pub disk_gib: u64,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub bandwidth_mbps: Option<u32>,
    /// The backend's template id (see the provider's template list); `None`: the backend default.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub template: Option<String>,
    #[serde(default)]
    pub price: Option<Price>,
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9._-]{1,63}$")]
    pub region: Option<String>,
    /// Keys 1-63 of a-z 0-9 . _ -; values up to 256 bytes; at most 32.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Run inside the guest once it is reachable (the `post_provision` stage); at most 64.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub post_provision_commands: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OfferingView {
    pub id: String,
    pub provider_id: String,
    #[serde(flatten)]
    pub spec: OfferingSpec,
    pub withdrawn_at: Option<Millis>,
    pub created_at: Millis,
    /// Whether it can be ordered now, agent by agent (`GET /offerings/{id}`, for its provider
    /// and operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
}

/// Whether an offering can be ordered now, and on which of its provider's agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Availability {
    /// Some agent can take an order of it now (what `POST /orders` checks).
    pub orderable: bool,
    pub agents: Vec<AgentAvailability>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentAvailability {
    pub agent_id: String,
    pub name: String,
    pub orderable: bool,
    /// Why not: revoked, never heard from, offline since when, or which resource is short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
