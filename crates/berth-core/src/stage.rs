//! Progress of long work: the named stages every backend reports (the dashboard shows these
//! names) and the sink they are reported to.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    CloneTemplate,
    ConfigureVm,
    StartVm,
    WaitNetwork,
    PostProvision,
    Register,
    WaitingForOperator,
    /// Removing what a failed provision made (the agent's compensation).
    Cleanup,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::CloneTemplate => "clone_template",
            Stage::ConfigureVm => "configure_vm",
            Stage::StartVm => "start_vm",
            Stage::WaitNetwork => "wait_network",
            Stage::PostProvision => "post_provision",
            Stage::Register => "register",
            Stage::WaitingForOperator => "waiting_for_operator",
            Stage::Cleanup => "cleanup",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StagePhase {
    Started,
    Completed,
    /// Found already done (a resumed create) and not repeated.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEvent {
    pub stage: Stage,
    pub phase: StagePhase,
    /// Short human detail ("vmid 4711 on pve1", "10.0.0.5").
    pub detail: Option<String>,
}

/// Receives stage events. Must not block: it is called from inside the backend's work.
pub trait ProgressSink: Send + Sync {
    fn event(&self, event: StageEvent);
}

/// A sink that drops every event.
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn event(&self, _event: StageEvent) {}
}

impl<F: Fn(StageEvent) + Send + Sync> ProgressSink for F {
    fn event(&self, event: StageEvent) {
        self(event)
    }
}
