//! `ManualProvider`: the Provider contract on top of request records — create writes a pending
//! request, tells the operators and waits in `waiting_for_operator` until an operator completes
//! or fails it (or the deadline passes); describe/list/delete read and remove the records.

use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, DeleteOutcome, Instance, InstanceId, InstanceRef, ListFilter, PowerOp, PowerState,
    ProgressSink, Provider, ProviderError, ReconfigureOutcome, Resize, Stage, StageEvent, StagePhase, Template, VmSpec,
};

use crate::config::{ConfigError, ManualConfig};
use crate::store::{Record, RequestStatus, Store, StoreError, now};
use crate::webhook::{Webhook, complete_command, delete_message, request_message};

/// The manual backend. Cheap to share behind an `Arc`. Several providers (the agent's and the
/// operator CLI's, in other processes) may work on one `state_dir` at once.
pub struct ManualProvider {
    pub(crate) store: Store,
    pub(crate) webhook: Option<Webhook>,
    pub(crate) deadline: Duration,
    poll: Duration,
}

impl std::fmt::Debug for ManualProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualProvider")
            .field("state_dir", &self.store.dir())
            .field("webhook", &self.webhook)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl ManualProvider {
    /// Validates `config`, resolves `state_dir` against `base_dir` (the config file's directory)
    /// and creates it (mode 0700) when missing.
    pub fn new(config: ManualConfig, base_dir: impl AsRef<std::path::Path>) -> Result<ManualProvider, ConfigError> {
        let base_dir = base_dir.as_ref();
        config.validate(base_dir)?;
        let store =
            Store::open(config.state_dir(base_dir)).map_err(|e| ConfigError::new("state_dir", e.to_string()))?;
        let webhook = match config.webhook_url()? {
            None => None,
            Some(url) => Some(
                Webhook::new(
                    url,
                    Duration::from_secs(config.webhook_timeout_seconds),
                    config.webhook_retries,
                    Duration::from_millis(config.webhook_backoff_ms),
                )
                .map_err(|e| ConfigError::new("notification_webhook", e.to_string()))?,
            ),
        };
        Ok(ManualProvider {
            store,
            webhook,
            deadline: Duration::from_secs(config.deadline_seconds),
            poll: Duration::from_millis(config.poll_interval_ms),
        })
    }

    /// The resolved state directory.
    pub fn state_dir(&self) -> &std::path::Path {
        self.store.dir()
    }

    /// Runs blocking store work off the async runtime.
    pub(crate) async fn blocking<T, E>(&self, f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| E::from(StoreError::Task(e.to_string())))?
    }

    async fn load(&self, id: &InstanceId) -> Result<Option<Record>, ProviderError> {
        let id = id.clone();
        self.blocking(move |s| s.load(&id).map_err(ProviderError::from)).await
    }

    /// Sends a message if a webhook is configured; failures are warnings (the request stays
    /// pending and listed either way). Returns whether the webhook accepted it.
    pub(crate) async fn notify(&self, id: &InstanceId, text: &str) -> bool {
        let Some(webhook) = &self.webhook else {
            return false;
        };
        match webhook.send(text).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "could not notify the operators; the request stays listed in `berth vm list --pending`");
                false
            }
        }
    }

    async fn notify_request(&self, record: &Record) {
        if self.webhook.is_none() {
            tracing::warn!(instance = %record.instance_id, "no notification_webhook configured: an operator must find this request in `berth vm list --pending`");
            return;
        }
        if !self
            .notify(&record.instance_id, &request_message(record, self.deadline))
            .await
        {
            return;
        }
        let id = record.instance_id.clone();
        let marked = self
            .blocking(move |s| {
                s.locked(|l| {
                    if let Some(mut r) = l.load(&id)? {
                        r.notified = true;
                        l.save(&r)?;
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .await;
        if let Err(e) = marked {
            tracing::warn!(instance = %record.instance_id, error = %e, "could not record that the operators were notified; a resumed create notifies again");
        }
    }

    /// The error for a request an operator (or the deadline) ended.
    fn refused(record: &Record) -> ProviderError {
        let reason = record.reason.as_deref().unwrap_or("no reason given");
        ProviderError::conflict(format!(
            "the manual request for instance {} was {}: {reason} (delete the instance to request it again)",
            record.instance_id, record.status
        ))
    }

    /// The completed machine, with the operator's password, which is then removed from the
    /// record. The removal is synchronous (on a blocking-capable thread when the runtime allows)
    /// so that it and the return happen in the same poll: a dropped create either got nothing
    /// (the password is still stored for the re-run) or got the password.
    fn hand_over(&self, record: Record) -> Instance {
        let mut inst = to_instance(&record);
        inst.root_password = record.root_password.clone();
        if record.root_password.is_some() {
            let scrub = || {
                self.store.locked(|l| {
                    if let Some(mut r) = l.load(&record.instance_id)?
                        && r.root_password.is_some()
                    {
                        r.root_password = None;
                        r.updated_at = now();
                        l.save(&r)?;
                    }
                    Ok::<_, StoreError>(())
                })
            };
            let multi_thread = tokio::runtime::Handle::try_current()
                .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
                .unwrap_or(false);
            let result = if multi_thread {
                tokio::task::block_in_place(scrub)
            } else {
                scrub()
            };
            if let Err(e) = result {
                tracing::error!(instance = %record.instance_id, error = %e, "could not remove the root password from the manual request record; remove the record's root_password field by hand");
            }
        }
        inst
    }

    /// Waits for an operator (or the deadline) to settle a pending request.
    async fn wait(&self, id: &InstanceId, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        loop {
            let Some(record) = self.load(id).await? else {
                return Err(ProviderError::conflict(format!(
                    "the manual request for instance {id} was deleted while Berth waited for an operator"
                )));
            };
            match record.status {
                RequestStatus::Completed => {
                    progress.event(StageEvent {
                        stage: Stage::WaitingForOperator,
                        phase: StagePhase::Completed,
                        detail: Some(address_detail(&record)),
                    });
                    return Ok(self.hand_over(record));
                }
                RequestStatus::Failed | RequestStatus::Cancelled => return Err(Self::refused(&record)),
                RequestStatus::Pending => {}
            }
            if now() >= record.created_at.saturating_add(self.deadline.as_secs()) {
                if let Some(err) = self.expire(id).await? {
                    return Err(err);
                }
                continue; // an operator settled it in the meantime: read it again
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Marks a still-pending request failed for want of an operator; `None` when it was no
    /// longer pending.
    async fn expire(&self, id: &InstanceId) -> Result<Option<ProviderError>, ProviderError> {
        let deadline = self.deadline;
        let key = id.clone();
        let expired = self
            .blocking(move |s| {
                s.locked(|l| {
                    let Some(mut r) = l.load(&key)? else {
                        return Ok::<_, StoreError>(false);
                    };
                    if r.status != RequestStatus::Pending {
                        return Ok(false);
                    }
                    r.status = RequestStatus::Failed;
                    r.reason = Some(format!("no operator completed it within {} s", deadline.as_secs()));
                    r.updated_at = now();
                    l.save(&r)?;
                    Ok(true)
                })
            })
            .await?;
        if !expired {
            return Ok(None);
        }
        tracing::warn!(instance = %id, deadline_seconds = deadline.as_secs(), "manual request expired: no operator completed it");
        Ok(Some(ProviderError::Timeout {
            what: format!("no operator completed the manual request for instance {id}; it is now marked failed"),
            after: deadline,
        }))
    }

    fn resolve(r: &InstanceRef) -> Option<InstanceId> {
        match r {
            InstanceRef::Id(id) => Some(id.clone()),
            InstanceRef::Backend(b) => InstanceId::parse(b).ok(),
        }
    }
}

fn address_detail(record: &Record) -> String {
    let Some(d) = &record.details else {
        return String::new();
    };
    let mut parts: Vec<String> = d.ipv4.map(|a| a.to_string()).into_iter().collect();
    parts.extend(d.ipv6.map(|a| a.to_string()));
    if let Some(p) = d.ssh_port {
        parts.push(format!("ssh port {p}"));
    }
    parts.join(", ")
}

/// The machine a record describes (without the password). Pending requests are
/// `Provisioning`; completed ones `Running` (Berth cannot see the real power state).
pub(crate) fn to_instance(record: &Record) -> Instance {
    let details = record.details.as_ref();
    Instance {
        instance_id: Some(record.instance_id.clone()),
        backend_id: record.instance_id.to_string(),
        kind: record.spec.kind,
        node: None,
        name: record.spec.name.clone(),
        state: match record.status {
            RequestStatus::Completed => PowerState::Running,
            RequestStatus::Pending => PowerState::Provisioning,
            RequestStatus::Failed | RequestStatus::Cancelled => PowerState::Unknown,
        },
        ipv4: details.and_then(|d| d.ipv4),
        ipv6: details.and_then(|d| d.ipv6),
        cores: Some(record.spec.cores),
        memory_mib: Some(record.spec.memory_mib),
        disk_gib: Some(record.spec.disk_gib),
        ssh_port: details.and_then(|d| d.ssh_port),
        root_password: None,
        login_user: None,
        pool: None,
    }
}

/// Only pending and completed requests stand for a machine.
fn is_machine(record: &Record) -> bool {
    matches!(record.status, RequestStatus::Pending | RequestStatus::Completed)
}

#[async_trait]
impl Provider for ManualProvider {
    fn backend(&self) -> &'static str {
        "manual"
    }

    async fn validate(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let dir = self.store.dir().display().to_string();
        let probe = self.blocking(|s| s.probe()).await;
        checks.push(match probe {
            Ok(()) => Check::ok("manual state_dir", format!("{dir} is writable")),
            Err(e) => Check::fail("manual state_dir", e.to_string()),
        });
        match self.blocking(|s| s.all()).await {
            Ok(records) => {
                let now = now();
                let pending: Vec<&Record> = records.iter().filter(|r| r.status == RequestStatus::Pending).collect();
                let overdue = pending
                    .iter()
                    .filter(|r| now >= r.created_at.saturating_add(self.deadline.as_secs()))
                    .count();
                let completed = records.iter().filter(|r| r.status == RequestStatus::Completed).count();
                let detail = format!(
                    "{} pending, {completed} completed, {} failed or cancelled",
                    pending.len(),
                    records.len() - pending.len() - completed
                );
                checks.push(if overdue > 0 {
                    Check::warn(
                        "manual requests",
                        format!("{detail}; {overdue} pending past the deadline (they fail when their create resumes)"),
                    )
                } else {
                    Check::ok("manual requests", detail)
                });
            }
            Err(e) => checks.push(Check::fail("manual requests", e.to_string())),
        }
        checks.push(match &self.webhook {
            Some(w) => Check::ok(
                "manual notification_webhook",
                format!(
                    "configured: {} (not contacted: a test post would reach the operators)",
                    w.shown_url()
                ),
            ),
            None => Check::warn(
                "manual notification_webhook",
                "not set: nobody is told about new requests; operators must watch `berth vm list --pending`",
            ),
        });
        checks
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        Ok(Capabilities {
            power: false,
            vms: true,
            containers: true,
            graceful_shutdown: false,
            reboot: false,
            reconfigure: false,
            static_ip: true,
            ipv6: true,
            list_templates: false,
            capacity: false,
            pools: false,
        })
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        spec.validate()?;
        let id = spec.instance_id.clone();
        let new_spec = spec.clone();
        let (record, fresh) = self
            .blocking(move |s| {
                s.locked(|l| match l.load(&new_spec.instance_id)? {
                    Some(r) => Ok::<_, StoreError>((r, false)),
                    None => {
                        let t = now();
                        let r = Record {
                            version: crate::store::RECORD_VERSION,
                            instance_id: new_spec.instance_id.clone(),
                            spec: new_spec,
                            status: RequestStatus::Pending,
                            created_at: t,
                            updated_at: t,
                            notified: false,
                            details: None,
                            reason: None,
                            root_password: None,
                        };
                        l.save(&r)?;
                        Ok((r, true))
                    }
                })
            })
            .await?;
        if record.spec != *spec {
            return Err(ProviderError::conflict(format!(
                "instance {id} was already requested with a different spec (name {:?}, {} vCPU, {} MiB, {} GiB)",
                record.spec.name, record.spec.cores, record.spec.memory_mib, record.spec.disk_gib
            )));
        }
        match record.status {
            RequestStatus::Completed => {
                progress.event(StageEvent {
                    stage: Stage::WaitingForOperator,
                    phase: StagePhase::Skipped,
                    detail: Some(address_detail(&record)),
                });
                return Ok(self.hand_over(record));
            }
            RequestStatus::Failed | RequestStatus::Cancelled => return Err(Self::refused(&record)),
            RequestStatus::Pending => {}
        }
        if fresh {
            tracing::info!(instance = %id, name = %spec.name, "manual request created; waiting for an operator");
        } else {
            tracing::info!(instance = %id, "resuming the wait for an operator");
        }
        progress.event(StageEvent {
            stage: Stage::WaitingForOperator,
            phase: StagePhase::Started,
            detail: Some(format!("run: {}", complete_command(&id))),
        });
        if !record.notified {
            self.notify_request(&record).await;
        }
        self.wait(&id, progress).await
    }

    async fn describe(&self, r: &InstanceRef) -> Result<Instance, ProviderError> {
        let missing = || ProviderError::not_found(r.to_string());
        let id = Self::resolve(r).ok_or_else(missing)?;
        match self.load(&id).await? {
            Some(record) if is_machine(&record) => Ok(to_instance(&record)),
            Some(record) => Err(ProviderError::not_found(format!(
                "{r} (its manual request was {}: {})",
                record.status,
                record.reason.as_deref().unwrap_or("no reason given")
            ))),
            None => Err(missing()),
        }
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        let records = self.blocking(|s| s.all().map_err(ProviderError::from)).await?;
        Ok(records
            .iter()
            .filter(|r| is_machine(r))
            .filter(|r| filter.kind.is_none_or(|k| k == r.spec.kind))
            .map(to_instance)
            .collect())
    }

    async fn power(&self, r: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        Err(ProviderError::unsupported(format!(
            "{op} of {r}: the manual backend cannot control power; the operator manages the machine"
        )))
    }

    async fn reconfigure(&self, r: &InstanceRef, _change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        Err(ProviderError::unsupported(format!(
            "reconfigure of {r}: the manual backend cannot resize machines; ask the operator"
        )))
    }

    /// Tells the operators to tear the machine down, then forgets the record. Tearing down the
    /// real machine is the operator's job. Requests that failed or were cancelled never had a
    /// machine: their record is removed and the answer is `AlreadyAbsent`.
    async fn delete(&self, r: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        let Some(id) = Self::resolve(r) else {
            return Ok(DeleteOutcome::AlreadyAbsent);
        };
        let Some(record) = self.load(&id).await? else {
            return Ok(DeleteOutcome::AlreadyAbsent);
        };
        if is_machine(&record) {
            // Notify first: a crash after it and before the removal only repeats the message.
            if !self.notify(&id, &delete_message(&record)).await {
                tracing::warn!(instance = %id, name = %record.spec.name, "manual instance deleted from Berth: the operator must tear the machine down");
            }
        }
        let key = id.clone();
        let removed = self.blocking(move |s| s.locked(|l| l.remove(&key))).await?;
        Ok(match removed {
            Some(r) if is_machine(&r) => DeleteOutcome::Deleted,
            _ => DeleteOutcome::AlreadyAbsent,
        })
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        Err(ProviderError::unsupported(
            "list_templates: the manual backend has no templates (the operator builds each machine)",
        ))
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        Err(ProviderError::unsupported(
            "capacity: the manual backend does not know the operator's capacity",
        ))
    }
}
