//! Stage progress for `vm create` and for operations followed through the API: a live spinner
//! on a terminal, one log line per event otherwise.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::{ProgressSink, StageEvent, StagePhase, VmSpec};
use indicatif::{ProgressBar, ProgressStyle};

pub struct StageDisplay {
    bar: Option<ProgressBar>,
    started: Mutex<HashMap<String, Instant>>,
    /// For events with the control plane's times: when each stage started there (ms).
    started_at: Mutex<HashMap<String, i64>>,
    begun: Instant,
}

/// A spinner titled `prefix` on stderr, when stderr is a terminal and output is for people.
fn spinner(prefix: String, human: bool) -> Option<ProgressBar> {
    (human && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_prefix(prefix);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    })
}

impl StageDisplay {
    /// For `vm create`: a spinner on a terminal; log lines otherwise.
    pub fn new(spec: &VmSpec, human: bool) -> Self {
        let bar = spinner(spec.name.clone(), human);
        if bar.is_none() {
            tracing::info!(instance = %spec.instance_id, name = %spec.name, kind = %spec.kind, "creating");
        }
        StageDisplay {
            bar,
            started: Mutex::new(HashMap::new()),
            started_at: Mutex::new(HashMap::new()),
            begun: Instant::now(),
        }
    }

    /// For an operation followed through the API: the same spinner as `vm create` on a
    /// terminal; `None` where the caller prints plain lines.
    pub fn live(title: String, human: bool) -> Option<Self> {
        Some(StageDisplay {
            bar: Some(spinner(title, human)?),
            started: Mutex::new(HashMap::new()),
            started_at: Mutex::new(HashMap::new()),
            begun: Instant::now(),
        })
    }

    pub fn finish(&self, ok: bool) {
        let total = self.begun.elapsed();
        match &self.bar {
            Some(bar) if ok => bar.finish_with_message(format!("done in {:.1}s", total.as_secs_f64())),
            Some(bar) => bar.abandon_with_message("failed"),
            None => tracing::info!(ok, elapsed_ms = total.as_millis() as u64, "create finished"),
        }
    }

    fn took(&self, stage: &str) -> Option<Duration> {
        self.started.lock().ok()?.get(stage).map(Instant::elapsed)
    }

    /// An event of an operation followed through the API, timed by the control plane's clock
    /// (`at`, ms): a stage's time is what it took there, not between two polls here.
    pub fn event_at(&self, stage: &str, phase: &str, detail: Option<&str>, at: i64) {
        let took = match self.started_at.lock() {
            Ok(mut m) if phase == "started" => {
                m.insert(stage.to_owned(), at);
                None
            }
            Ok(m) => m.get(stage).map(|s| Duration::from_millis((at - s).max(0) as u64)),
            Err(_) => None,
        };
        self.show(stage, phase, detail, took);
    }

    /// One stage event: `phase` is `started`, `completed` or `skipped`.
    pub fn stage(&self, stage: &str, phase: &str, detail: Option<&str>) {
        if phase == "started"
            && let Ok(mut m) = self.started.lock()
        {
            m.insert(stage.to_owned(), Instant::now());
        }
        self.show(stage, phase, detail, self.took(stage));
    }

    fn show(&self, stage: &str, phase: &str, detail: Option<&str>, took: Option<Duration>) {
        // A backend's words: shown escaped, on one line.
        let detail = berth_core::text::printable(&detail.unwrap_or_default().replace('\n', " ")).into_owned();
        let Some(bar) = &self.bar else {
            let ms = took.filter(|_| phase == "completed").map(|d| d.as_millis() as u64);
            let phase = if phase == "skipped" {
                "skipped (already done)"
            } else {
                phase
            };
            tracing::info!(stage = %stage, elapsed_ms = ms, "{phase} {detail}");
            return;
        };
        match phase {
            "started" => bar.set_message(format!("{stage} … {detail}")),
            "completed" => {
                let secs = took.map_or(0.0, |d| d.as_secs_f64());
                bar.println(format!("  ✓ {stage:<16} {secs:>5.1}s  {detail}"));
            }
            "skipped" => bar.println(format!("  ↷ {stage:<16} already done  {detail}")),
            other => bar.println(format!("  · {stage:<16} {other}  {detail}")),
        }
    }
}

impl ProgressSink for StageDisplay {
    fn event(&self, ev: StageEvent) {
        let phase = match ev.phase {
            StagePhase::Started => "started",
            StagePhase::Completed => "completed",
            StagePhase::Skipped => "skipped",
        };
        self.stage(ev.stage.as_str(), phase, ev.detail.as_deref());
    }
}
