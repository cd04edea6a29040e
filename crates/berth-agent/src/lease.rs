//! What runs beside one operation's work: the lease keeper (renews before expiry, and says when
//! the lease is lost so the work stops cleanly) and the reporter (ships stage events to the
//! control plane in order, batching what piles up, and records completed stages in the journal).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::client::{Client, ClientError};
use berth_api::wire::EventReport;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::journal::{Entry, Journal};

/// The lease is gone: expired and maybe taken over, or the operation finished elsewhere.
pub fn is_lease_gone(e: &ClientError) -> bool {
    matches!(e.code(), Some("lease_lost" | "not_found")) || matches!(e, ClientError::Status { status: 404, .. })
}

/// A refusal that will not change by retrying (the server said no), as opposed to an outage.
pub fn is_refusal(e: &ClientError) -> bool {
    match e {
        ClientError::Problem(p) => (400..500).contains(&p.status) && p.status != 429,
        ClientError::Status { status, .. } => (400..500).contains(status) && *status != 429,
        ClientError::Transport { .. } | ClientError::Decode { .. } => false,
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Renews the lease every third of its time to live until `stop` fires; fires `lost` when the
/// control plane refuses a renewal (expired, taken over, finished elsewhere).
pub fn keep_lease(
    client: Client,
    operation_id: String,
    generation: i64,
    expires_at: i64,
    stop: CancellationToken,
    lost: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ttl_ms = (expires_at - now_ms()).clamp(3_000, 600_000);
        let every = Duration::from_millis(ttl_ms as u64 / 3);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match client.renew(&operation_id, generation).await {
                Ok(_) => metrics::counter!("berth_lease_renewals_total", "result" => "ok").increment(1),
                Err(e) if is_lease_gone(&e) => {
                    metrics::counter!("berth_lease_renewals_total", "result" => "lost").increment(1);
                    tracing::warn!(operation = %operation_id, error = %e, "lease lost; stopping this work");
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    metrics::counter!("berth_lease_renewals_total", "result" => "error").increment(1);
                    tracing::warn!(operation = %operation_id, error = %e, "lease renewal failed; retrying");
                }
            }
        }
    })
}

/// Events in, ordered batches out. `send` never blocks (the backend calls it from its work).
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Msg>,
}

enum Msg {
    Event(EventReport),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Reporter {
    /// Starts the reporting task. Completed stages are added to `entry` and saved in `journal`
    /// before they are reported. A refused report fires `lost`.
    pub fn start(
        client: Client,
        generation: i64,
        entry: Arc<Mutex<Entry>>,
        journal: Journal,
        lost: CancellationToken,
    ) -> (Reporter, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let operation_id = entry.lock().map(|e| e.operation_id.clone()).unwrap_or_default();
        let task = tokio::spawn(async move {
            let mut pending: Vec<EventReport> = Vec::new();
            let mut flushes = Vec::new();
            let mut started = std::collections::HashMap::new();
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(m) = rx.try_recv() {
                    batch.push(m);
                }
                let mut completed = Vec::new();
                for m in batch {
                    match m {
                        Msg::Event(ev) => {
                            if ev.phase == "started" {
                                started.insert(ev.stage.clone(), std::time::Instant::now());
                            } else if ev.phase == "completed"
                                && let Some(t) = started.remove(&ev.stage)
                            {
                                metrics::histogram!("berth_stage_duration_seconds", "stage" => ev.stage.clone())
                                    .record(t.elapsed().as_secs_f64());
                            }
                            if ev.phase == "completed" || ev.phase == "skipped" {
                                completed.push(ev.stage.clone());
                            }
                            pending.push(ev);
                        }
                        Msg::Flush(done) => flushes.push(done),
                    }
                }
                if !completed.is_empty() {
                    let snapshot = {
                        let mut e = entry.lock().expect("journal entry lock");
                        for s in completed {
                            if !e.done(&s) {
                                e.stages.push(s);
                            }
                        }
                        e.clone()
                    };
                    let j = journal.clone();
                    match tokio::task::spawn_blocking(move || j.save(&snapshot)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "cannot write the journal"),
                        Err(e) => tracing::error!(error = %e, "journal writer failed"),
                    }
                }
                // Deliver; an outage keeps the events for the next round (order is kept).
                let mut delay = Duration::from_millis(200);
                while !pending.is_empty() && !lost.is_cancelled() {
                    match client.report(&operation_id, generation, pending.clone()).await {
                        Ok(()) => pending.clear(),
                        Err(e) if is_lease_gone(&e) => {
                            tracing::warn!(operation = %operation_id, error = %e, "progress refused: the lease is gone; stopping this work");
                            lost.cancel();
                            pending.clear();
                        }
                        Err(e) if is_refusal(&e) => {
                            // The events themselves were refused: the work goes on, they are dropped.
                            tracing::error!(operation = %operation_id, error = %e, "progress events refused; dropping them");
                            pending.clear();
                        }
                        Err(e) => {
                            tracing::debug!(operation = %operation_id, error = %e, "progress not delivered yet");
                            tokio::select! {
                                _ = lost.cancelled() => {}
                                _ = tokio::time::sleep(delay) => {}
                            }
                            delay = (delay * 2).min(Duration::from_secs(10));
                            if !flushes.is_empty() {
                                // A flush waits for delivery, but not through a long outage:
                                // the completion carries the outcome anyway.
                                if delay >= Duration::from_secs(5) {
                                    break;
                                }
                            }
                        }
                    }
                }
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
        });
        (Reporter { tx }, task)
    }

    pub fn send(&self, event: EventReport) {
        let _ = self.tx.send(Msg::Event(event));
    }

    pub fn stage(&self, stage: &str, phase: &str, message: Option<String>) {
        self.send(EventReport {
            stage: stage.into(),
            phase: phase.into(),
            percent: None,
            message,
        });
    }

    /// Waits until everything sent so far was delivered (or given up on).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl berth_core::ProgressSink for Reporter {
    fn event(&self, event: berth_core::StageEvent) {
        let phase = match event.phase {
            berth_core::StagePhase::Started => "started",
            berth_core::StagePhase::Completed => "completed",
            berth_core::StagePhase::Skipped => "skipped",
        };
        self.stage(event.stage.as_str(), phase, event.detail);
    }
}
