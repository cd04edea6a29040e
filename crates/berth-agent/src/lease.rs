//! What runs beside one operation's work: the lease keeper (renews before expiry, and says when
//! the lease is lost so the work stops cleanly) and the reporter (ships stage events to the
//! control plane in order, batching what piles up, and records completed stages in the journal).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::client::{Client, ClientError};
use berth_api::wire::EventReport;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::journal::Tracked;

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

/// The control plane refused a request for its body (too large, or not valid): sending the same
/// body again would be refused again, unlike a refusal about the caller or the lease.
pub fn is_body_refused(e: &ClientError) -> bool {
    matches!(e.code(), Some("body_too_large" | "invalid_input"))
        || matches!(e, ClientError::Status { status: 413, .. })
        || matches!(e, ClientError::Problem(p) if p.status == 413)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A lease on one operation, kept on this agent's monotonic clock: each answer of the control
/// plane says how long the lease has left, counted from when the answer arrived, so clocks are
/// never compared. Past that (less a margin for the answer's time in transit and a request in
/// flight) the work is fenced: it stops on its own, whether or not the control plane could say
/// so.
pub struct Lease {
    client: Client,
    pub operation_id: String,
    pub generation: i64,
    ttl: Duration,
    /// Until when the work may act.
    valid_until: Mutex<Instant>,
    /// Fires when the lease is gone: refused by the control plane, or fenced here.
    pub lost: CancellationToken,
}

impl Lease {
    /// A lease with `left` to run from `at` (when the answer granting it arrived).
    pub fn new(client: Client, operation_id: &str, generation: i64, left: Duration, at: Instant) -> Arc<Lease> {
        let l = Lease {
            client,
            operation_id: operation_id.into(),
            generation,
            ttl: left,
            valid_until: Mutex::new(at),
            lost: CancellationToken::new(),
        };
        l.extend(at, left);
        Arc::new(l)
    }

    /// A lease from an answer of the control plane (claim or renewal) that arrived just now.
    pub fn granted(
        client: Client,
        operation_id: &str,
        generation: i64,
        ttl_ms: Option<i64>,
        expires_at: i64,
    ) -> Arc<Lease> {
        Lease::new(
            client,
            operation_id,
            generation,
            Lease::left(ttl_ms, expires_at),
            Instant::now(),
        )
    }

    /// The time left the control plane gave; from one that does not say, the time until its
    /// expiry as read on our clock (what older agents did), within sane bounds.
    pub fn left(ttl_ms: Option<i64>, expires_at: i64) -> Duration {
        let ms = match ttl_ms {
            Some(ms) => ms.clamp(0, 3_600_000),
            None => (expires_at - now_ms()).clamp(3_000, 3_600_000),
        };
        Duration::from_millis(ms as u64)
    }

    /// Acting stops this long before the control plane's expiry: room for a request in flight.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }

    fn extend(&self, at: Instant, left: Duration) {
        let until = at + left.saturating_sub(self.margin());
        let mut v = self.valid_until.lock().expect("lease lock");
        if until > *v {
            *v = until;
        }
    }

    fn valid_until(&self) -> Instant {
        *self.valid_until.lock().expect("lease lock")
    }

    /// Whether the time this agent may act on the lease has run out.
    pub fn fenced(&self) -> bool {
        Instant::now() >= self.valid_until()
    }

    fn fence(&self, why: &str) {
        if !self.lost.is_cancelled() {
            tracing::warn!(operation = %self.operation_id, "{why}; stopping this work");
            self.lost.cancel();
        }
    }

    /// One renewal. `Err(true)`: the lease is gone; `Err(false)`: not reached this time.
    async fn renew(&self) -> Result<(), bool> {
        match self.client.renew(&self.operation_id, self.generation).await {
            Ok(l) => {
                metrics::counter!("berth_lease_renewals_total", "result" => "ok").increment(1);
                self.extend(Instant::now(), Lease::left(l.ttl_ms, l.expires_at));
                Ok(())
            }
            Err(e) if is_lease_gone(&e) => {
                metrics::counter!("berth_lease_renewals_total", "result" => "lost").increment(1);
                self.fence(&format!("lease lost ({e})"));
                Err(true)
            }
            Err(e) => {
                metrics::counter!("berth_lease_renewals_total", "result" => "error").increment(1);
                tracing::warn!(operation = %self.operation_id, error = %e, "lease renewal failed; retrying");
                Err(false)
            }
        }
    }

    /// Before a step that destroys or cannot be repeated: renews now, and says whether the work
    /// may go on (the lease is still ours, or at least not yet past its time here).
    pub async fn confirm(&self) -> bool {
        if self.lost.is_cancelled() {
            return false;
        }
        match self.renew().await {
            Ok(()) => true,
            Err(true) => false,
            Err(false) if self.fenced() => {
                self.fence("the lease's time ran out without a renewal");
                false
            }
            Err(false) => true,
        }
    }

    /// Renews every third of the TTL (every tenth while renewals fail) until `stop` fires; fires
    /// `lost` when the control plane refuses a renewal or the lease's time runs out here.
    pub fn keep(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut next = Instant::now() + me.ttl / 3;
            loop {
                let wake = next.min(me.valid_until());
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = me.lost.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => {}
                }
                if me.fenced() {
                    me.fence("the lease's time ran out without a renewal");
                    return;
                }
                // A renewal that hangs (a network black hole) must not hold the fence back.
                let renewed = tokio::select! {
                    r = me.renew() => r,
                    _ = tokio::time::sleep_until(me.valid_until()) => Err(false),
                    _ = stop.cancelled() => return,
                };
                match renewed {
                    Ok(()) => next = Instant::now() + me.ttl / 3,
                    Err(true) => return,
                    Err(false) => next = Instant::now() + (me.ttl / 10).max(Duration::from_millis(200)),
                }
            }
        })
    }
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
    /// Starts the reporting task. Completed stages are recorded in the operation's journal entry
    /// before they are reported. A refused report fires `lost`.
    pub fn start(
        client: Client,
        generation: i64,
        entry: Arc<Tracked>,
        lost: CancellationToken,
    ) -> (Reporter, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let operation_id = entry.get().operation_id;
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
                    let recorded = entry
                        .record(|e| {
                            for s in completed {
                                if !e.done(&s) {
                                    e.stages.push(s);
                                }
                            }
                        })
                        .await;
                    if let Err(e) = recorded {
                        tracing::error!(error = %e, "cannot write the journal");
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
