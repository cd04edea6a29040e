//! Stage progress for `create`: a live spinner on a terminal, one log line per event otherwise.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::{ProgressSink, Stage, StageEvent, StagePhase, VmSpec};
use indicatif::{ProgressBar, ProgressStyle};

pub struct StageDisplay {
    bar: Option<ProgressBar>,
    started: Mutex<HashMap<Stage, Instant>>,
    begun: Instant,
}

impl StageDisplay {
    /// A spinner when stderr is a terminal and output is for people; log lines otherwise.
    pub fn new(spec: &VmSpec, human: bool) -> Self {
        let bar = (human && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed}") {
                bar.set_style(style);
            }
            bar.set_prefix(spec.name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            tracing::info!(instance = %spec.instance_id, name = %spec.name, kind = %spec.kind, "creating");
        }
        StageDisplay {
            bar,
            started: Mutex::new(HashMap::new()),
            begun: Instant::now(),
        }
    }

    pub fn finish(&self, ok: bool) {
        let total = self.begun.elapsed();
        match &self.bar {
            Some(bar) if ok => bar.finish_with_message(format!("done in {:.1}s", total.as_secs_f64())),
            Some(bar) => bar.abandon_with_message("failed"),
            None => tracing::info!(ok, elapsed_ms = total.as_millis() as u64, "create finished"),
        }
    }

    fn took(&self, stage: Stage) -> Option<Duration> {
        self.started.lock().ok()?.get(&stage).map(Instant::elapsed)
    }
}

impl ProgressSink for StageDisplay {
    fn event(&self, ev: StageEvent) {
        if ev.phase == StagePhase::Started
            && let Ok(mut m) = self.started.lock()
        {
            m.insert(ev.stage, Instant::now());
        }
        // A backend's words: shown escaped, on one line.
        let detail =
            berth_core::text::printable(&ev.detail.clone().unwrap_or_default().replace('\n', " ")).into_owned();
        let Some(bar) = &self.bar else {
            let ms = self
                .took(ev.stage)
                .filter(|_| ev.phase == StagePhase::Completed)
                .map(|d| d.as_millis() as u64);
            let phase = match ev.phase {
                StagePhase::Started => "started",
                StagePhase::Completed => "completed",
                StagePhase::Skipped => "skipped (already done)",
            };
            tracing::info!(stage = %ev.stage, elapsed_ms = ms, "{phase} {detail}");
            return;
        };
        match ev.phase {
            StagePhase::Started => bar.set_message(format!("{} … {detail}", ev.stage)),
            StagePhase::Completed => {
                let secs = self.took(ev.stage).map_or(0.0, |d| d.as_secs_f64());
                bar.println(format!("  ✓ {:<16} {secs:>5.1}s  {detail}", ev.stage.as_str()));
            }
            StagePhase::Skipped => bar.println(format!("  ↷ {:<16} already done  {detail}", ev.stage.as_str())),
        }
    }
}
