//! One operation, from claim to acknowledged completion: keep the lease, report stages as they
//! happen, run the backend call (retrying what is retryable), post-provision commands, seal the
//! credentials, compensate a failed provision, and deliver the outcome until the control plane
//! has it. The journal holds every step, so a restart resumes here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::wire::{CommandRun, Completion, OpError, OpResult, ProvisionPayload, Reconfigure};
use berth_core::{
    GuestKind, Instance, InstanceId, InstanceRef, NetworkSpec, PowerOp, ProviderError, Resize, SshPublicKey, VmSpec,
};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, Backend};
use crate::heartbeat::{Need, capacity, fits};
use crate::journal::Entry;
use crate::lease::{Reporter, is_refusal, keep_lease};

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

/// The end of `s`, at most `max` bytes, cut at a character boundary.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

impl Agent {
    /// Runs `entry` to an acknowledged outcome, or stops cleanly (lease lost, shutdown) with
    /// the journal kept for whoever of us claims it next.
    pub(crate) async fn operate(self: &Arc<Self>, entry: Entry, expires_at: i64) {
        let op_id = entry.operation_id.clone();
        let lock = self.op_lock(&op_id);
        {
            let _one_at_a_time = lock.lock().await;
            self.operate_locked(entry, expires_at).await;
        }
        drop(lock);
        self.op_unlock(&op_id);
    }

    async fn operate_locked(self: &Arc<Self>, entry: Entry, expires_at: i64) {
        let op_id = entry.operation_id.clone();
        let generation = entry.generation;
        let kind = entry.kind.clone();
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        let keeper = keep_lease(
            self.client.clone(),
            op_id.clone(),
            generation,
            expires_at,
            stop.clone(),
            lost.clone(),
        );
        let decided = entry.outcome.clone();
        let slots = self.backend(&entry.backend).slots.clone();
        let shared = Arc::new(Mutex::new(entry));
        let (reporter, reporting) = Reporter::start(
            self.client.clone(),
            generation,
            shared.clone(),
            self.journal.clone(),
            lost.clone(),
        );
        let outcome = match decided {
            Some(o) => Some(o),
            None => tokio::select! {
                o = async {
                    // The backend's own bound; the lease is kept while the work waits for it.
                    let _slot = slots.acquire_owned().await;
                    self.execute(&shared, &reporter).await
                } => Some(o),
                _ = lost.cancelled() => None,
                _ = self.abort.cancelled() => None,
            },
        };
        let Some(outcome) = outcome else {
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
            metrics::counter!("berth_operations_total", "kind" => kind, "result" => "interrupted").increment(1);
            stop.cancel();
            drop(reporter);
            let _ = reporting.await;
            let _ = keeper.await;
            return;
        };
        let snapshot = {
            let mut e = shared.lock().expect("entry lock");
            e.outcome = Some(outcome.clone());
            e.clone()
        };
        if let Err(e) = self.journal.save(&snapshot) {
            tracing::error!(operation = %op_id, error = %e, "cannot journal the outcome");
        }
        failpoint("before_complete");
        if matches!(outcome, Completion::Succeeded(_)) && kind == "provision" {
            reporter.stage("register", "started", None);
            reporter.stage("register", "completed", None);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), reporter.flush()).await;
        let result = match &outcome {
            Completion::Succeeded(_) => "succeeded",
            Completion::Failed(_) => "failed",
        };
        let delivered = self.deliver(&op_id, generation, outcome, &lost).await;
        stop.cancel();
        drop(reporter);
        let _ = reporting.await;
        let _ = keeper.await;
        if delivered {
            metrics::counter!("berth_operations_total", "kind" => kind, "result" => result).increment(1);
            if let Err(e) = self.journal.remove(&op_id) {
                tracing::error!(operation = %op_id, error = %e, "cannot remove the journal entry");
            }
        }
    }

    /// Completes until acknowledged. `false` when the lease is gone (the outcome stays in the
    /// journal and is delivered when the operation comes back) or on shutdown.
    async fn deliver(&self, op_id: &str, generation: i64, outcome: Completion, lost: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.client.complete(op_id, generation, outcome.clone()).await {
                Ok(_) => return true,
                Err(e) if is_refusal(&e) => {
                    tracing::warn!(operation = %op_id, error = %e, "completion refused; keeping the outcome for when the work comes back");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(operation = %op_id, error = %e, "completion not delivered; retrying in {delay:?}");
                    tokio::select! {
                        _ = self.abort.cancelled() => return false,
                        _ = lost.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn execute(&self, shared: &Arc<Mutex<Entry>>, reporter: &Reporter) -> Completion {
        let entry = shared.lock().expect("entry lock").clone();
        let b = self.backend(&entry.backend);
        let id = match InstanceId::parse(&entry.instance_id) {
            Ok(id) => id,
            Err(e) => return from_provider(&e),
        };
        let r = InstanceRef::Id(id.clone());
        match entry.kind.as_str() {
            "provision" => self.provision(b, id, &entry, shared, reporter).await,
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
        entry: &Entry,
        shared: &Arc<Mutex<Entry>>,
        reporter: &Reporter,
    ) -> Completion {
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
        let need = Need {
            cores: u64::from(p.cores),
            memory_mib: p.memory_mib,
            disk_gib: p.disk_gib,
        };
        let r = InstanceRef::Id(id);
        // A fresh machine must fit under the host's thresholds; a resumed one is already there.
        let exists = match b.provider.describe(&r).await {
            Ok(_) => true,
            Err(ProviderError::NotFound { .. }) => false,
            Err(e) => return from_provider(&e),
        };
        if !exists && let Err(full) = self.reserve(b, need).await {
            return failed("quota_exceeded", full);
        }
        let made = self.retrying("create", || b.provider.create(&spec, reporter)).await;
        if !exists {
            let mut res = b.reserved.lock().expect("reserved lock");
            *res = *res - need;
        }
        let inst = match made {
            Ok(i) => i,
            Err(e) => {
                self.compensate(b, &r, reporter).await;
                return from_provider(&e);
            }
        };
        self.routes.located(&entry.instance_id, &b.name);
        let mut result = result_of(&inst, &b.name);
        if !p.post_provision_commands.is_empty() {
            match self
                .post_provision(b, &r, &p.post_provision_commands, shared, reporter)
                .await
            {
                Ok(runs) => result.commands = runs,
                Err(fail) => {
                    if !self.settings.post_provision.keep_failed {
                        self.compensate(b, &r, reporter).await;
                    }
                    return fail;
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
                    self.compensate(b, &r, reporter).await;
                    return failed("invalid_spec", e);
                }
            }
        }
        Completion::Succeeded(result)
    }

    /// Checks the host's thresholds and reserves `need` until the machine shows in the list.
    async fn reserve(&self, b: &Backend, need: Need) -> Result<(), String> {
        let report = capacity(b, self.capacity_of(b))
            .await
            .map_err(|e| format!("cannot check the host's capacity: {e}"))?;
        let mut res = b.reserved.lock().expect("reserved lock");
        fits(&report, &self.settings.capacity, need + *res)?;
        *res = *res + need;
        Ok(())
    }

    /// Deletes what a failed provision left (idempotent: nothing there is fine). A failure here
    /// leaves an orphan for reconcile to quarantine.
    async fn compensate(&self, b: &Backend, r: &InstanceRef, reporter: &Reporter) {
        match self.retrying("delete", || b.provider.delete(r)).await {
            Ok(outcome) => {
                tracing::info!(backend = %b.name, instance = %r, ?outcome, "cleaned up after a failed provision");
                reporter.stage("cleanup", "completed", Some(format!("{outcome:?}")));
            }
            Err(e) => {
                tracing::error!(backend = %b.name, instance = %r, error = %e, "cleanup failed; reconcile will quarantine it");
                reporter.stage("cleanup", "completed", Some(format!("cleanup failed: {e}")));
            }
        }
    }

    /// Runs the commands in order inside the guest, each once (the journal remembers which
    /// ran); the first that fails ends the stage with its exit status and output.
    async fn post_provision(
        &self,
        b: &Backend,
        r: &InstanceRef,
        commands: &[String],
        shared: &Arc<Mutex<Entry>>,
        reporter: &Reporter,
    ) -> Result<Vec<CommandRun>, Completion> {
        let cfg = &self.settings.post_provision;
        let mut runs = shared.lock().expect("entry lock").commands.clone();
        if runs.len() >= commands.len() && runs.iter().all(|c| c.exit_status == 0) {
            reporter.stage("post_provision", "skipped", Some("already run".into()));
            return Ok(runs);
        }
        reporter.stage(
            "post_provision",
            "started",
            Some(format!("{} commands", commands.len())),
        );
        for (n, command) in commands.iter().enumerate().skip(runs.len()) {
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
                output_tail: tail(&output, cfg.output_tail_bytes),
            };
            let snapshot = {
                let mut e = shared.lock().expect("entry lock");
                e.commands.push(run.clone());
                e.clone()
            };
            if let Err(e) = self.journal.save(&snapshot) {
                tracing::error!(error = %e, "cannot journal a post-provision command");
            }
            failpoint("after_command");
            reporter.send(berth_api::wire::EventReport {
                stage: "post_provision".into(),
                phase: "progress".into(),
                percent: Some((((n + 1) * 100) / commands.len()).min(100) as u8),
                message: Some(format!("command {} exited {}", n + 1, run.exit_status)),
            });
            if run.exit_status != 0 {
                return Err(failed(
                    "post_provision_failed",
                    format!(
                        "post-provision command {} ({:?}) exited {}; output ends with: {}",
                        n + 1,
                        run.command,
                        run.exit_status,
                        run.output_tail
                    ),
                ));
            }
            runs.push(run);
        }
        reporter.stage("post_provision", "completed", None);
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_end_at_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé€", 4), "é€".chars().skip(1).collect::<String>());
    }
}
