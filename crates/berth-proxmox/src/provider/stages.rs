//! Reporting create's stages to the caller's `ProgressSink`, and to the log.

use berth_core::{ProgressSink, Stage, StageEvent, StagePhase};

/// A thin wrapper that sends `Started`/`Completed`/`Skipped` events with a detail line.
pub struct Stages<'a> {
    sink: &'a dyn ProgressSink,
}

impl<'a> Stages<'a> {
    pub fn new(sink: &'a dyn ProgressSink) -> Self {
        Stages { sink }
    }

    fn emit(&self, stage: Stage, phase: StagePhase, detail: String) {
        tracing::debug!(stage = stage.as_str(), phase = ?phase, "{detail}");
        self.sink.event(StageEvent {
            stage,
            phase,
            detail: Some(detail),
        });
    }

    pub fn started(&self, stage: Stage, detail: impl Into<String>) {
        self.emit(stage, StagePhase::Started, detail.into());
    }

    pub fn completed(&self, stage: Stage, detail: impl Into<String>) {
        self.emit(stage, StagePhase::Completed, detail.into());
    }

    pub fn skipped(&self, stage: Stage, detail: impl Into<String>) {
        self.emit(stage, StagePhase::Skipped, detail.into());
    }
}
