//! Quotas: how much one account may hold. The server's `[quotas]` gives every account its
//! defaults; an operator may give one account other numbers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An account's own numbers; a field left out (or `null`) keeps the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuota {
    /// Instances not terminated.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub instances: Option<i64>,
    /// Instances recorded but not provisioned (`pending`).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub pending_instances: Option<i64>,
    /// Offerings not withdrawn (providers).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub offerings: Option<i64>,
    /// API tokens live (neither revoked nor expired).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub tokens: Option<i64>,
}

/// The numbers in force for an account, and which of them are its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaView {
    pub account_id: String,
    pub instances: i64,
    pub pending_instances: i64,
    pub offerings: i64,
    pub tokens: i64,
    /// What was set for this account (the rest are the server's defaults).
    pub own: SetQuota,
}

/// What a provider lets one customer (or, as `default`, every customer) hold of its instances,
/// on top of the customer's own quota. For one customer, a field left out (or `null`) takes the
/// provider's `default`; for `default`, it sets no bound. Both left out removes the entry. (A
/// customer cannot be exempted from the default but by a number as high as wanted.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCustomerQuota {
    /// The customer's instances of this provider, not terminated.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub instances: Option<i64>,
    /// The customer's instances of this provider recorded but not provisioned.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub pending_instances: Option<i64>,
}

/// A provider's numbers for one customer (`customer_id`, or `default`): one read names what is
/// in force for that customer (its own numbers, else the provider's default); a list names
/// what was set. `null`: no bound of the provider's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CustomerQuotaView {
    pub provider_id: String,
    pub customer_id: String,
    pub instances: Option<i64>,
    pub pending_instances: Option<i64>,
}
