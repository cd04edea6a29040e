//! One operation, from claim to acknowledged completion: keep the lease, report stages as they
//! happen, run the backend call (retrying what is retryable), post-provision commands, seal the
//! credentials, compensate a failed provision, and deliver the outcome until the control plane
//! has it. The journal holds every step, so a restart resumes here.

use std::sync::Arc;
use std::time::Duration;

use berth_api::wire::{CommandRun, Completion, OpError, OpResult, ProvisionPayload, Reconfigure};
use berth_core::{
    GuestKind, Instance, InstanceId, InstanceRef, NetworkSpec, PowerOp, ProviderError, Resize, SshPublicKey, VmSpec,
};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, Backend};
use crate::budget;
use crate::heartbeat::Need;
use crate::journal::{Entry, Tracked};
use crate::lease::{Lease, Reporter, is_body_refused, is_lease_gone, is_refusal};

/// Fault injection for the crash tests: `BERTH_AGENT_FAILPOINT=<name>` makes the process die
/// on the spot (as a kill -9 would) when it reaches that point. Unset, it does nothing.
fn failpoint(name: &str) {
    if std::env::var("BERTH_AGENT_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

fn failed(code: &str, message: impl Into<String>) -> Completion {
    Completion::Failed(OpError {
        code: code.into(),
        message: message.into(),
    })
}

fn from_provider(e: &ProviderError) -> Completion {
    failed(e.code().as_str(), e.to_string())
}

fn result_of(i: &Instance, backend: &str) -> OpResult {
    OpResult {
        vm_id: Some(i.backend_id.clone()),
        hypervisor: Some(i.node.clone().unwrap_or_else(|| backend.to_owned())),
        ip_address: i.ipv4.map(|a| a.to_string()),
        ipv6_address: i.ipv6.map(|a| a.to_string()),
        ssh_port: Some(i.ssh_port.unwrap_or(22)),
        ..OpResult::default()
    }
}

/// How long a cleanup keeps trying a backend that fails for a while (an open circuit breaker,
/// an outage) before it leaves the machine to reconcile's quarantine.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(600);

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
    async fn confirmed(&self, lease: &Lease) {
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
            "provision" => self.provision(b, id, tracked, lease, reporter).await,
            "start" => self.power(b, &r, PowerOp::Start).await,
            "reboot" => self.power(b, &r, PowerOp::Reboot).await,
            "stop" => {
                let graceful = b
                    .provider
                    .capabilities()
                    .await
                    .map(|c| c.graceful_shutdown)
                    .unwrap_or(false);
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
    async fn retrying<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, ProviderError>
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

    async fn provision(
        &self,
        b: &Backend,
        id: InstanceId,
        tracked: &Arc<Tracked>,
        lease: &Lease,
        reporter: &Reporter,
    ) -> Completion {
        let entry = tracked.get();
        let r = InstanceRef::Id(id.clone());
        if let Some(failure) = entry.compensating {
            // The failure was decided before a restart: finish the cleanup, report it.
            self.compensate(b, &r, lease, reporter).await;
            return failure;
        }
        let p: ProvisionPayload = match serde_json::from_value(entry.payload.clone()) {
            Ok(p) => p,
            Err(e) => return failed("invalid_spec", format!("provision payload: {e}")),
        };
        let ssh = match SshPublicKey::parse(&p.ssh_public_key) {
            Ok(k) => k,
            Err(e) => return from_provider(&e),
        };
        let spec = VmSpec {
            instance_id: id.clone(),
            name: p.name.clone(),
            kind: GuestKind::Vm,
            cores: p.cores,
            memory_mib: p.memory_mib,
            disk_gib: p.disk_gib,
            template: p.template.clone(),
            ssh_keys: vec![ssh],
            user: None,
            network: NetworkSpec::default(),
        };
        if let Err(e) = spec.validate() {
            return from_provider(&e);
        }
        let commands = &p.post_provision_commands;
        let keep_failed = self.settings.post_provision.keep_failed;
        if let (Some(why), false) = (&entry.history_lost, commands.is_empty()) {
            let failure = failed(
                "internal",
                format!(
                    "this provision's history on the agent is lost ({why}); rather than risk running its \
                     post-provision commands twice, it fails and what it made is deleted"
                ),
            );
            return self
                .fail_provision(b, &r, tracked, lease, reporter, failure, false)
                .await;
        }
        // What an earlier run of ours decided: a command failed, or was cut off while it ran.
        if let Some(failure) = commands_outcome(&entry, commands) {
            return self
                .fail_provision(b, &r, tracked, lease, reporter, failure, keep_failed)
                .await;
        }
        let need = Need {
            cores: u64::from(p.cores),
            memory_mib: p.memory_mib,
            disk_gib: p.disk_gib,
        };
        // A fresh machine must fit under the host's thresholds; a resumed one is already there.
        let exists = match self.retrying("describe", || b.provider.describe(&r)).await {
            Ok(_) => true,
            Err(ProviderError::NotFound { .. }) => false,
            Err(e) => {
                return self
                    .fail_provision(b, &r, tracked, lease, reporter, from_provider(&e), false)
                    .await;
            }
        };
        let held = if exists {
            None
        } else {
            match b.reserve(self.capacity_of(b), &entry.instance_id, need).await {
                Ok(h) => Some(h),
                Err(full) => return failed("quota_exceeded", full),
            }
        };
        self.confirmed(lease).await;
        let made = self.retrying("create", || b.provider.create(&spec, reporter)).await;
        // Made (it shows in the list now) or not: no longer held aside.
        drop(held);
        let inst = match made {
            Ok(i) => i,
            Err(e) => {
                return self
                    .fail_provision(b, &r, tracked, lease, reporter, from_provider(&e), false)
                    .await;
            }
        };
        self.routes.located(&entry.instance_id, &b.name);
        let mut result = result_of(&inst, &b.name);
        if !commands.is_empty() {
            match self.post_provision(b, &r, commands, tracked, lease, reporter).await {
                Ok(runs) => result.commands = runs,
                Err(failure) => {
                    return self
                        .fail_provision(b, &r, tracked, lease, reporter, failure, keep_failed)
                        .await;
                }
            }
        }
        if let Some(pw) = &inst.root_password {
            let plain = crate::credentials::Plain {
                user: "root".into(),
                password: pw.expose().to_owned(),
            };
            match crate::credentials::seal(&p.requester_public_key, &plain) {
                Ok(c) => result.credentials = Some(c),
                Err(e) => {
                    return self
                        .fail_provision(b, &r, tracked, lease, reporter, failed("invalid_spec", e), false)
                        .await;
                }
            }
        }
        Completion::Succeeded(result)
    }

    /// A provision failed for good: unless the machine is to be kept for a look, the failure is
    /// journaled first (a restart finishes the cleanup and reports it, never re-provisions),
    /// then what was made is deleted.
    #[allow(clippy::too_many_arguments)]
    async fn fail_provision(
        &self,
        b: &Backend,
        r: &InstanceRef,
        tracked: &Arc<Tracked>,
        lease: &Lease,
        reporter: &Reporter,
        failure: Completion,
        keep: bool,
    ) -> Completion {
        let instance_id = tracked.get().instance_id;
        if keep {
            self.keep(&instance_id, &b.name);
            return failure;
        }
        if let Err(e) = tracked
            .record(|e| {
                e.compensating = Some(failure.clone());
                // An outcome decided before (a success the control plane refused) is void now.
                e.outcome = None;
            })
            .await
        {
            tracing::error!(instance = %instance_id, error = %e, "cannot journal the failure before cleaning up");
        }
        failpoint("before_cleanup");
        self.compensate(b, r, lease, reporter).await;
        failpoint("after_cleanup");
        failure
    }

    /// Deletes what a failed provision left (idempotent: nothing there is fine), retrying a
    /// backend that fails for a while. If it cannot, reconcile finds the orphan.
    async fn compensate(&self, b: &Backend, r: &InstanceRef, lease: &Lease, reporter: &Reporter) {
        reporter.stage("cleanup", "started", None);
        let deadline = tokio::time::Instant::now() + CLEANUP_PATIENCE;
        let mut delay = Duration::from_secs(1);
        loop {
            self.confirmed(lease).await;
            match b.provider.delete(r).await {
                Ok(outcome) => {
                    tracing::info!(backend = %b.name, instance = %r, ?outcome, "cleaned up after a failed provision");
                    let said = match outcome {
                        berth_core::DeleteOutcome::Deleted => "deleted the machine",
                        berth_core::DeleteOutcome::AlreadyAbsent => "nothing to delete",
                    };
                    reporter.stage("cleanup", "completed", Some(said.into()));
                    return;
                }
                Err(e) if e.is_retryable() && tokio::time::Instant::now() + delay < deadline => {
                    let wait = match &e {
                        ProviderError::RateLimited { retry_after } => retry_after.unwrap_or(delay),
                        _ => delay,
                    };
                    tracing::warn!(backend = %b.name, instance = %r, error = %e, "cleanup failed; again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::error!(backend = %b.name, instance = %r, error = %e, "cleanup failed; reconcile will quarantine it");
                    reporter.stage("cleanup", "completed", Some(format!("cleanup failed: {e}")));
                    return;
                }
            }
        }
    }

    /// Runs the commands in order inside the guest, each at most once: its start is journaled
    /// before it starts, its result when it ends. The first that fails ends the stage with its
    /// exit status and output.
    async fn post_provision(
        &self,
        b: &Backend,
        r: &InstanceRef,
        commands: &[String],
        tracked: &Arc<Tracked>,
        lease: &Lease,
        reporter: &Reporter,
    ) -> Result<Vec<CommandRun>, Completion> {
        let cfg = &self.settings.post_provision;
        let runs = tracked.get().commands;
        if runs.len() >= commands.len() {
            reporter.stage("post_provision", "skipped", Some("already run".into()));
            return Ok(runs);
        }
        reporter.stage(
            "post_provision",
            "started",
            Some(format!("{} commands", commands.len())),
        );
        let mut runs = runs;
        for (n, command) in commands.iter().enumerate().skip(runs.len()) {
            self.confirmed(lease).await;
            tracked.record(|e| e.commands_started = n + 1).await.map_err(|e| {
                failed(
                    "internal",
                    format!("cannot journal post-provision command {}: {e}", n + 1),
                )
            })?;
            failpoint("command_started");
            let out = b
                .provider
                .exec(r, command, Duration::from_secs(cfg.timeout_seconds))
                .await
                .map_err(|e| from_provider(&e.context(format!("post-provision command {}", n + 1))))?;
            let mut output = out.stdout;
            output.push_str(&out.stderr);
            let run = CommandRun {
                command: command.clone(),
                exit_status: out.exit_status,
                output_tail: budget::tail(&output, cfg.output_tail_bytes),
            };
            if let Err(e) = tracked.record(|e| e.commands.push(run.clone())).await {
                tracing::error!(error = %e, "cannot journal a post-provision command");
            }
            failpoint("after_command");
            failpoint(&format!("after_command_{}", n + 1));
            reporter.send(berth_api::wire::EventReport {
                stage: "post_provision".into(),
                phase: "progress".into(),
                percent: Some((((n + 1) * 100) / commands.len()).min(100) as u8),
                message: Some(format!("command {} exited {}", n + 1, run.exit_status)),
            });
            if run.exit_status != 0 {
                return Err(command_failed(n, &run));
            }
            runs.push(run);
        }
        reporter.stage("post_provision", "completed", None);
        Ok(runs)
    }
}

fn command_failed(n: usize, run: &CommandRun) -> Completion {
    failed(
        "post_provision_failed",
        format!(
            "post-provision command {} ({:?}) exited {}; output ends with: {}",
            n + 1,
            run.command,
            run.exit_status,
            run.output_tail
        ),
    )
}

/// The post-provision outcome an earlier run journaled: its failed command, or one it started
/// and never saw end (cut off by a crash or a lost lease). Neither is run again.
fn commands_outcome(entry: &Entry, commands: &[String]) -> Option<Completion> {
    if let Some((n, run)) = entry.commands.iter().enumerate().find(|(_, c)| c.exit_status != 0) {
        return Some(command_failed(n, run));
    }
    let k = entry.commands.len();
    (entry.commands_started > k).then(|| {
        failed(
            "post_provision_interrupted",
            format!(
                "post-provision command {} ({:?}) was cut off while it ran (the agent stopped or lost its lease); \
                 whether it finished is unknown, and it is not run twice",
                k + 1,
                commands.get(k).map(String::as_str).unwrap_or_default()
            ),
        )
    })
}
