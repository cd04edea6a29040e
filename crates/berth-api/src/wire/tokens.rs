//! API tokens over their life: listed (never their secrets), made with a name and a lifetime,
//! revoked, rotated.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Millis;

/// What is known of a token: never its secret. `id` is the first 16 hex digits of its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
    /// `None`: until revoked.
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// A token to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What it is for: `ci`, `billing`, `laptop`.
    pub name: String,
    /// How long it may be used (60 s to 10 years); left out: until revoked.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 315_360_000)]
    pub ttl_seconds: Option<u64>,
}

/// A token made now: the secret is shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("view", &self.view)
            .field("token", &"<redacted>")
            .finish()
    }
}
