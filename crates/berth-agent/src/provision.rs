//! A provision: the machine (reserved against the host's thresholds, made idempotently by
//! instance id), its post-provision commands (each at most once: its start is journaled before
//! it runs), its sealed credentials; and when it fails for good, the failure journaled before
//! what was made is deleted, so a restart finishes the cleanup instead of provisioning again.

use std::sync::Arc;
use std::time::Duration;

use berth_api::wire::{CommandRun, Completion, ProvisionPayload};
use berth_core::{GuestKind, InstanceId, InstanceRef, NetworkSpec, ProviderError, SshPublicKey, VmSpec};

use crate::agent::{Agent, Backend};
use crate::budget;
use crate::heartbeat::Need;
use crate::journal::{Entry, Tracked};
use crate::lease::{Lease, Reporter};
use crate::work::{failed, failpoint, from_provider, result_of};

/// How long a cleanup keeps trying a backend that fails for a while (an open circuit breaker,
/// an outage) before it leaves the machine to reconcile's quarantine.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(600);

impl Agent {
    pub(crate) async fn provision(
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
        // (The host is read while the machine is looked for: each is a round trip.)
        let released = b.released();
        let (described, mut reading) = tokio::join!(
            self.retrying("describe", || b.provider.describe(&r)),
            crate::heartbeat::read(b, self.capacity_of(b))
        );
        let exists = match described {
            Ok(_) => true,
            Err(ProviderError::NotFound { .. }) => false,
            Err(e) => {
                return self
                    .fail_provision(b, &r, tracked, lease, reporter, from_provider(&e), false)
                    .await;
            }
        };
        // A warm pool machine, when the order fits a pool with one ready (it already counts
        // against the host); when it left its pool meanwhile, the order is created.
        let mut made = None;
        let pooled = self.pool_take(b, &spec, tracked, exists, reporter).await;
        if let Some((t, _claim)) = &pooled {
            self.confirmed(lease).await;
            made = self.take_from_pool(b, t, &spec, reporter).await;
        }
        let made = match made {
            Some(m) => m,
            None => {
                let held = if exists {
                    None
                } else {
                    // A provision that ended since the reading began may have made a machine
                    // the reading does not show: read again (the look may have taken retries).
                    if b.released() != released || pooled.is_some() {
                        reading = crate::heartbeat::read(b, self.capacity_of(b)).await;
                    }
                    match b.reserve(reading, self.capacity_of(b), &entry.instance_id, need) {
                        Ok(h) => Some(h),
                        Err(full) => return failed("quota_exceeded", full),
                    }
                };
                self.confirmed(lease).await;
                let made = self.retrying("create", || b.provider.create(&spec, reporter)).await;
                // Made (it shows in the list now) or not: no longer held aside.
                drop(held);
                made
            }
        };
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
        if inst.root_password.is_some() && p.requester_public_key.is_empty() {
            // Nobody can read it: it is not kept (the login is by SSH key), and that is said.
            reporter.send(berth_api::wire::EventReport {
                stage: "wait_network".into(),
                phase: "progress".into(),
                percent: None,
                message: Some(
                    "the machine was born with a root password; the order named no requester key, so it was not kept \
                     (log in with the SSH key)"
                        .into(),
                ),
            });
        } else if let Some(pw) = &inst.root_password {
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
    pub(crate) async fn fail_provision(
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
