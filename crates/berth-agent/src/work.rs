//! One operation, from claim to acknowledged completion: keep the lease, report stages as they
//! happen, run the backend call (retrying what is retryable; a provision in `provision.rs`), fit
//! the outcome to the control plane's limit and deliver it until the control plane has it. The
//! journal holds every step, so a restart resumes here.

use std::sync::Arc;
use std::time::Duration;

use berth_api::wire::{Completion, OpError, OpResult, Reconfigure};
use berth_core::{Instance, InstanceId, InstanceRef, PowerOp, ProviderError, Resize};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, Backend};
use crate::budget;
use crate::journal::{Entry, Tracked};
use crate::lease::{Lease, Reporter, is_body_refused, is_lease_gone, is_refusal};

/// Fault injection for the crash tests: `BERTH_AGENT_FAILPOINT=<name>` makes the process die
/// on the spot (as a kill -9 would) when it reaches that point. Unset, it does nothing.
pub(crate) fn failpoint(name: &str) {
    if std::env::var("BERTH_AGENT_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

pub(crate) fn failed(code: &str, message: impl Into<String>) -> Completion {
    Completion::Failed(OpError {
        code: code.into(),
        message: message.into(),
    })
}

pub(crate) fn from_provider(e: &ProviderError) -> Completion {
    failed(e.code().as_str(), e.to_string())
}

pub(crate) fn result_of(i: &Instance, backend: &str) -> OpResult {
    OpResult {
        vm_id: Some(i.backend_id.clone()),
        hypervisor: Some(i.node.clone().unwrap_or_else(|| backend.to_owned())),
        ip_address: i.ipv4.map(|a| a.to_string()),
        ipv6_address: i.ipv6.map(|a| a.to_string()),
        ssh_port: Some(i.ssh_port.unwrap_or(22)),
        login_user: i.login_user.clone().filter(|u| berth_core::spec::is_unix_user(u)),
        ..OpResult::default()
    }
}

/// How a completion went.
enum Delivery {
    Done,
    /// The lease is gone or the agent stops: the outcome stays in the journal.
    Stopped,
    /// The control plane refused the completion itself (not the lease): sending it again would
    /// be refused again.
    Refused(berth_api::client::ClientError),
}

impl Agent {
    /// Runs `entry` to an acknowledged outcome, or stops cleanly (lease lost or run out,
    /// shutdown) with the journal kept for whoever of us claims it next. The caller holds the
    /// operation's turn ([`Agent::lock_op`]).
    pub(crate) async fn operate_locked(self: &Arc<Self>, entry: Entry, lease: Arc<Lease>) {
        let op_id = entry.operation_id.clone();
        let generation = entry.generation;
        let kind = entry.kind.clone();
        let backend = entry.backend.clone();
        let decided = entry.outcome.clone();
        let stop = CancellationToken::new();
        let keeper = lease.keep(stop.clone());
        let lost = lease.lost.clone();
        let tracked = Tracked::new(self.journal.clone(), entry);
        let (reporter, reporting) = Reporter::start(self.client.clone(), generation, tracked.clone(), lost.clone());
        let finished: Option<(Completion, Delivery)> = 'work: {
            let outcome = match (decided, self.backend(&backend)) {
                (Some(o), _) => o,
                (None, None) => failed(
                    "unavailable",
                    format!(
                        "the backend {backend:?} this operation runs on is no longer in the agent's configuration; \
                         add it back to finish the operation there"
                    ),
                ),
                (None, Some(b)) => {
                    let work = async {
                        // The backend's own bound; the lease is kept while the work waits for it.
                        let _slot = b.slots.clone().acquire_owned().await;
                        self.execute(b, &tracked, &lease, &reporter).await
                    };
                    match self.unless_stopped(&lost, work).await {
                        Some(o) => o,
                        None => break 'work None,
                    }
                }
            };
            let limit = tracked.get().body_limit_bytes.unwrap_or(budget::DEFAULT_LIMIT);
            let fitted = budget::fit(generation, outcome.clone(), limit);
            let mut outcome = if fitted != outcome && matches!(fitted, Completion::Failed(_)) {
                let undone = self.unmake(&backend, &tracked, &lease, &reporter, &outcome, fitted);
                match self.unless_stopped(&lost, undone).await {
                    Some(o) => o,
                    None => break 'work None,
                }
            } else {
                fitted
            };
            self.record_outcome(&tracked, &outcome).await;
            failpoint("before_complete");
            if matches!(outcome, Completion::Succeeded(_)) && kind == "provision" {
                reporter.stage("register", "started", None);
                reporter.stage("register", "completed", None);
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), reporter.flush()).await;
            let mut delivered = self.deliver(&op_id, generation, &outcome, &lost).await;
            if let Delivery::Refused(e) = &delivered {
                // Never the same refused body again (it would be claimed and refused for ever): a
                // small failure instead, after undoing a provision that the failure disowns.
                tracing::error!(operation = %op_id, error = %e, "the control plane refused this outcome; reporting a failure instead");
                let small = failed(
                    "internal",
                    format!("the control plane refused this operation's outcome ({e}); the agent's log has it"),
                );
                let undone = self.unmake(&backend, &tracked, &lease, &reporter, &outcome, small);
                outcome = match self.unless_stopped(&lost, undone).await {
                    Some(o) => o,
                    None => break 'work None,
                };
                self.record_outcome(&tracked, &outcome).await;
                delivered = self.deliver(&op_id, generation, &outcome, &lost).await;
            }
            Some((outcome, delivered))
        };
        if finished.is_none() {
            // Stopped mid-way: what is done is in the journal; give the lease back if still ours.
            let _ = tokio::time::timeout(Duration::from_secs(5), reporter.flush()).await;
            if !lost.is_cancelled() {
                match self.client.release(&op_id, generation).await {
                    Ok(()) => tracing::info!(operation = %op_id, "checkpointed and released"),
                    Err(e) => {
                        tracing::warn!(operation = %op_id, error = %e, "could not release; the lease will expire")
                    }
                }
            }
        }
        stop.cancel();
        drop(reporter);
        // The reporter retries through an outage; once the work is over it gets a little while.
        let reporting_abort = reporting.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), reporting).await.is_err() {
            reporting_abort.abort();
        }
        let _ = keeper.await;
        match finished {
            None => {
                metrics::counter!("berth_operations_total", "kind" => kind, "result" => "interrupted").increment(1);
            }
            Some((outcome, Delivery::Done)) => {
                let result = match &outcome {
                    Completion::Succeeded(_) => "succeeded",
                    Completion::Failed(_) => "failed",
                };
                metrics::counter!("berth_operations_total", "kind" => kind, "result" => result).increment(1);
                if let Err(e) = tracked.remove() {
                    tracing::error!(operation = %op_id, error = %e, "cannot remove the journal entry");
                }
            }
            Some((_, Delivery::Stopped)) => {}
            Some((_, Delivery::Refused(e))) => {
                tracing::error!(operation = %op_id, error = %e, "the control plane refused the failure too; it stays in the journal")
            }
        }
    }

    /// `work`, unless the lease is lost or the agent aborts first (then `None`: the work is
    /// dropped where it waits, its progress in the journal).
    async fn unless_stopped<T>(
        &self,
        lost: &CancellationToken,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            o = work => Some(o),
            _ = lost.cancelled() => None,
            _ = self.abort.cancelled() => None,
        }
    }

    async fn record_outcome(&self, tracked: &Arc<Tracked>, outcome: &Completion) {
        if let Err(e) = tracked.record(|e| e.outcome = Some(outcome.clone())).await {
            tracing::error!(operation = %tracked.get().operation_id, error = %e, "cannot journal the outcome");
        }
    }

    /// `failure` replaces `outcome`: a provision that succeeded is undone first (its machine
    /// must not outlive the failure reported for it).
    async fn unmake(
        &self,
        backend: &str,
        tracked: &Arc<Tracked>,
        lease: &Lease,
        reporter: &Reporter,
        outcome: &Completion,
        failure: Completion,
    ) -> Completion {
        let entry = tracked.get();
        let (Completion::Succeeded(_), "provision", Some(b)) = (outcome, entry.kind.as_str(), self.backend(backend))
        else {
            return failure;
        };
        let Ok(id) = InstanceId::parse(&entry.instance_id) else {
            return failure;
        };
        self.fail_provision(b, &InstanceRef::Id(id), tracked, lease, reporter, failure, false)
            .await
    }

    /// Completes until acknowledged, the lease is gone, or the completion itself is refused.
    async fn deliver(&self, op_id: &str, generation: i64, outcome: &Completion, lost: &CancellationToken) -> Delivery {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.client.complete(op_id, generation, outcome.clone()).await {
                Ok(_) => return Delivery::Done,
                Err(e) if is_lease_gone(&e) => {
                    tracing::warn!(operation = %op_id, error = %e, "completion refused: the lease is gone; keeping the outcome for when the work comes back");
                    return Delivery::Stopped;
                }
                Err(e) if is_body_refused(&e) => return Delivery::Refused(e),
                Err(e) if is_refusal(&e) => {
                    tracing::warn!(operation = %op_id, error = %e, "completion refused; keeping the outcome for when the work comes back");
                    return Delivery::Stopped;
                }
                Err(e) => {
                    tracing::warn!(operation = %op_id, error = %e, "completion not delivered; retrying in {delay:?}");
                    tokio::select! {
                        _ = self.abort.cancelled() => return Delivery::Stopped,
                        _ = lost.cancelled() => return Delivery::Stopped,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Returns once the lease is confirmed ours; otherwise never (the lease is lost, and the
    /// work is dropped where it waits). Called before every step that destroys or cannot be
    /// repeated.
    pub(crate) async fn confirmed(&self, lease: &Lease) {
        if !lease.confirm().await {
            std::future::pending::<()>().await;
        }
    }

    async fn execute(&self, b: &Backend, tracked: &Arc<Tracked>, lease: &Lease, reporter: &Reporter) -> Completion {
        let entry = tracked.get();
        let id = match InstanceId::parse(&entry.instance_id) {
            Ok(id) => id,
            Err(e) => return from_provider(&e),
        };
        let r = InstanceRef::Id(id.clone());
        if entry.kind != "provision" {
            self.confirmed(lease).await;
        }
        match entry.kind.as_str() {
            "provision" => {
                // A provision that may wait for a person: their answer can come through the API.
                let watching = b.manual.as_ref().map(|m| {
                    crate::inbox::watch(
                        self.client.clone(),
                        entry.operation_id.clone(),
                        entry.generation,
                        id.clone(),
                        m.clone(),
                        lease.lost.clone(),
                    )
                });
                let outcome = self.provision(b, id, tracked, lease, reporter).await;
                if let Some(w) = watching {
                    w.finish().await;
                }
                outcome
            }
            "start" => self.power(b, &r, PowerOp::Start).await,
            "reboot" => self.power(b, &r, PowerOp::Reboot).await,
            "stop" => {
                let graceful = b.capabilities().await.is_some_and(|c| c.graceful_shutdown);
                let op = if graceful {
                    PowerOp::Shutdown {
                        timeout_secs: self.settings.agent.stop_timeout_seconds,
                    }
                } else {
                    PowerOp::Stop
                };
                self.power(b, &r, op).await
            }
            "reconfigure" => {
                let change: Reconfigure = match serde_json::from_value(entry.payload.clone()) {
                    Ok(c) => c,
                    Err(e) => return failed("invalid_spec", format!("reconfigure payload: {e}")),
                };
                let resize = Resize {
                    cores: change.cores,
                    memory_mib: change.memory_mib,
                    disk_gib: change.disk_gib,
                };
                if let Err(e) = resize.validate() {
                    return from_provider(&e);
                }
                match self
                    .retrying("reconfigure", || b.provider.reconfigure(&r, &resize))
                    .await
                {
                    Ok(o) => Completion::Succeeded(OpResult {
                        restart_required: Some(o.restart_required),
                        ..OpResult::default()
                    }),
                    Err(e) => from_provider(&e),
                }
            }
            "terminate" => match self.retrying("delete", || b.provider.delete(&r)).await {
                Ok(_) => {
                    self.routes.forget(&entry.instance_id);
                    self.unkeep(&entry.instance_id);
                    Completion::Succeeded(OpResult::default())
                }
                Err(e) => from_provider(&e),
            },
            other => failed(
                "unsupported",
                format!("operation kind {other:?} is not one this agent runs"),
            ),
        }
    }

    async fn power(&self, b: &Backend, r: &InstanceRef, op: PowerOp) -> Completion {
        match self.retrying("power", || b.provider.power(r, op)).await {
            Ok(i) => Completion::Succeeded(result_of(&i, &b.name)),
            Err(e) => from_provider(&e),
        }
    }

    /// Calls `f` until it succeeds, fails for good, or the attempts are used up; retryable
    /// errors wait 1 s, 2 s, 4 s … (or what the backend asked for).
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let attempts = self.settings.agent.attempts;
        let mut delay = Duration::from_secs(1);
        for n in 1.. {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && n < attempts => {
                    let wait = match &e {
                        ProviderError::RateLimited { retry_after } => retry_after.unwrap_or(delay),
                        _ => delay,
                    };
                    tracing::warn!(call = what, attempt = n, error = %e, "retryable failure; again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }
}
