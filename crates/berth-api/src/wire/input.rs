//! What a person submits for an operation that waits on them (stage `waiting_for_operator`: the
//! manual backend's machine built by hand), and how the agent running the operation takes it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Millis;

/// An operator's answer to an operation waiting for them.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum OperatorInput {
    /// The machine is built: its addresses (at least one), SSH port and root password.
    Complete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv4: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv6: Option<String>,
        /// When it is not 22.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssh_port: Option<u16>,
        /// The root password the machine was built with. The control plane seals it to the
        /// requester's age key on arrival and keeps only that (the instance's credentials);
        /// it never reaches the agent and is never shown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root_password: Option<String>,
    },
    /// The machine cannot be built: the operation fails with this reason.
    Fail { reason: String },
    /// Nobody should build it: the request is withdrawn and the operation fails with this reason.
    Cancel { reason: String },
}

impl OperatorInput {
    /// `complete`, `fail` or `cancel`.
    pub fn action(&self) -> &'static str {
        match self {
            OperatorInput::Complete { .. } => "complete",
            OperatorInput::Fail { .. } => "fail",
            OperatorInput::Cancel { .. } => "cancel",
        }
    }
}

impl std::fmt::Debug for OperatorInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorInput::Complete {
                ipv4,
                ipv6,
                ssh_port,
                root_password,
            } => f
                .debug_struct("Complete")
                .field("ipv4", ipv4)
                .field("ipv6", ipv6)
                .field("ssh_port", ssh_port)
                .field("root_password", &root_password.as_ref().map(|_| "<redacted>"))
                .finish(),
            OperatorInput::Fail { reason } => f.debug_struct("Fail").field("reason", reason).finish(),
            OperatorInput::Cancel { reason } => f.debug_struct("Cancel").field("reason", reason).finish(),
        }
    }
}

/// An operator's input as the control plane keeps it (never a password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperatorInputView {
    pub operation_id: String,
    /// `complete`, `fail` or `cancel`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A root password came with it, sealed to the requester's key (the instance's credentials).
    pub root_password_sealed: bool,
    pub submitted_by: String,
    pub submitted_at: Millis,
    /// `waiting_for_agent`, `applied`, or `not_applied` (see `error`; a new input may be sent).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<Millis>,
    /// Why the agent could not apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The agent took an operator's input: applied, or not (`error` says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputTaken {
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_by_action_strict_and_never_shows_the_password() {
        let i: OperatorInput =
            serde_json::from_str(r#"{"action":"complete","ipv4":"203.0.113.7","root_password":"hunter2"}"#).unwrap();
        assert_eq!(i.action(), "complete");
        assert!(!format!("{i:?}").contains("hunter2"));
        let f: OperatorInput = serde_json::from_str(r#"{"action":"fail","reason":"no rack space"}"#).unwrap();
        assert_eq!(
            f,
            OperatorInput::Fail {
                reason: "no rack space".into()
            }
        );
        for bad in [
            r#"{"action":"complete","ip":"203.0.113.7"}"#,
            r#"{"action":"explode"}"#,
            r#"{"action":"fail"}"#,
        ] {
            assert!(serde_json::from_str::<OperatorInput>(bad).is_err(), "{bad}");
        }
    }
}
