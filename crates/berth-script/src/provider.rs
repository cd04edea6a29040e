//! `ScriptProvider`: the Provider contract on top of protocol-v1 script calls — create is
//! status-then-provision (idempotent by contract_id), power and delete act only on machines the
//! script reports with a contract_id, and `validate` is doctor's view of the executables.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, DeleteOutcome, GuestKind, Instance, InstanceId, InstanceRef, ListFilter, PowerOp,
    PowerState, ProgressSink, Provider, ProviderError, ReconfigureOutcome, Resize, Stage, StageEvent, StagePhase,
    Template, VmSpec,
};

use crate::config::{Action, ConfigError, ScriptConfig};
use crate::invoke::Runner;
use crate::ledger::{Ledger, Phase, Record};
use crate::protocol::{Request, WireInstance};

/// The script backend. Cheap to share behind an `Arc`; every call runs a fresh process.
pub struct ScriptProvider {
    runner: Runner,
    /// Without a `status` action: Berth's own record of its provisions.
    ledger: Option<Ledger>,
}

impl ScriptProvider {
    /// Validates `config`, resolves its paths against `base_dir` (the config file's directory,
    /// also the scripts' working directory) and snapshots the `pass_env` variables.
    pub fn new(config: ScriptConfig, base_dir: impl AsRef<Path>) -> Result<ScriptProvider, ConfigError> {
        let base_dir = base_dir.as_ref();
        config.validate(base_dir)?;
        let base_dir = std::path::absolute(base_dir)
            .map_err(|e| ConfigError::new("command", format!("cannot resolve {}: {e}", base_dir.display())))?;
        let scripts: BTreeMap<Action, PathBuf> = Action::ALL
            .into_iter()
            .filter_map(|a| config.executable(a, &base_dir).map(|p| (a, p)))
            .collect();
        let env = berth_exec::child_env(&config.env, &config.pass_env);
        let ledger = if scripts.contains_key(&Action::Status) {
            None
        } else {
            let dir = config.state_dir(&base_dir);
            Some(
                Ledger::open(&dir)
                    .map_err(|e| ConfigError::new("state_dir", format!("cannot create {}: {e}", dir.display())))?,
            )
        };
        Ok(ScriptProvider {
            ledger,
            runner: Runner {
                scripts,
                env,
                timeout: Duration::from_secs(config.timeout_seconds),
                max_output: usize::try_from(config.max_output_bytes).unwrap_or(usize::MAX),
                base_dir,
            },
        })
    }

    /// The resolved executable of each action.
    pub fn executables(&self) -> &BTreeMap<Action, PathBuf> {
        &self.runner.scripts
    }

    fn has_power(&self) -> bool {
        self.runner.scripts.contains_key(&Action::Start) && self.runner.scripts.contains_key(&Action::Stop)
    }

    /// What the configured actions cannot guarantee, for `berth doctor`.
    fn limits(&self) -> Vec<Check> {
        let has = |a| self.runner.scripts.contains_key(&a);
        let mut out = Vec::new();
        if let Some(ledger) = &self.ledger {
            out.push(Check::warn(
                "script status",
                format!(
                    "no `status` action: Berth cannot ask whether a machine exists, so it records its own provisions \
                     in {} and, after a provision that was cut off, asks `terminate` before provisioning again \
                     (machines changed by hand are not seen)",
                    ledger.dir().display()
                ),
            ));
        }
        if !has(Action::List) {
            out.push(Check::warn(
                "script list",
                "no `list` action: reconcile and capacity see only what Berth's records say it made here, \
                 not drift or machines made by hand",
            ));
        }
        if !self.has_power() {
            out.push(Check::warn(
                "script power",
                "no `start` and `stop` actions: start, stop and reboot are refused",
            ));
        }
        out
    }

    /// `status` for a machine; `None` when the script says `not_found`. Checks that the script
    /// answered about the machine that was asked for.
    async fn lookup(&self, r: &InstanceRef) -> Result<Option<Instance>, ProviderError> {
        if let Some(ledger) = &self.ledger {
            return match r {
                // What `provision` answered; a cut-off provision is not a machine to use.
                InstanceRef::Id(id) => Ok(record(ledger, id)?.and_then(|r| match r.phase {
                    Phase::Made => r.instance,
                    Phase::Provisioning => None,
                })),
                InstanceRef::Backend(b) => Err(ProviderError::unsupported(format!(
                    "look up {b}: this script backend has no `status` action"
                ))),
            };
        }
        let mut req = Request::new(Action::Status);
        match r {
            InstanceRef::Id(id) => req.contract_id = Some(id.as_str()),
            InstanceRef::Backend(b) => req.external_id = Some(b.as_str()),
        }
        let resp = match self.runner.call(&req, None).await {
            Ok(resp) => resp,
            Err(e) if e.code() == berth_core::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let wire = resp
            .instance
            .ok_or_else(|| ProviderError::internal("status answered without an instance"))?;
        let mut inst = self.instance(wire, Action::Status)?;
        match r {
            InstanceRef::Id(id) => match &inst.instance_id {
                None => inst.instance_id = Some(id.clone()),
                Some(got) if got != id => {
                    return Err(self.shape(
                        Action::Status,
                        format!("asked for contract {id}, answered with contract {got}"),
                    ));
                }
                Some(_) => {}
            },
            InstanceRef::Backend(b) if &inst.backend_id != b => {
                return Err(self.shape(
                    Action::Status,
                    format!("asked for external_id {b}, answered with {}", inst.backend_id),
                ));
            }
            InstanceRef::Backend(_) => {}
        }
        Ok(Some(inst))
    }

    /// `lookup`, requiring the machine to exist and to be Berth's (carry a contract_id).
    async fn owned(&self, r: &InstanceRef) -> Result<Instance, ProviderError> {
        let inst = self
            .lookup(r)
            .await?
            .ok_or_else(|| ProviderError::not_found(r.to_string()))?;
        if inst.instance_id.is_none() {
            return Err(ProviderError::conflict(format!(
                "{r} has no contract_id: Berth does not own it and will not change it"
            )));
        }
        Ok(inst)
    }

    /// Runs a start/stop/terminate-like action on an owned machine, naming it by both ids.
    async fn act(&self, action: Action, inst: &Instance) -> Result<Option<Instance>, ProviderError> {
        let mut req = Request::new(action);
        req.contract_id = inst.instance_id.as_ref().map(|i| i.as_str());
        req.external_id = Some(&inst.backend_id);
        let resp = self.runner.call(&req, None).await?;
        resp.instance.map(|w| self.instance(w, action)).transpose()
    }

    fn instance(&self, wire: WireInstance, action: Action) -> Result<Instance, ProviderError> {
        wire.into_instance().map_err(|why| self.shape(action, why))
    }

    fn shape(&self, action: Action, why: String) -> ProviderError {
        let script = self
            .runner
            .scripts
            .get(&action)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        ProviderError::internal(format!("script {script} action {action}: wrong response: {why}"))
    }

    /// `provision` and its answer checked (the machine must be the one asked for).
    async fn run_provision(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        progress.event(event(Stage::CloneTemplate, StagePhase::Started, None));
        let resp = self.runner.call(&Request::provision(spec), Some(progress)).await?;
        let wire = resp
            .instance
            .ok_or_else(|| self.shape(Action::Provision, "no instance".into()))?;
        let mut inst = self.instance(wire, Action::Provision)?;
        match &inst.instance_id {
            None => inst.instance_id = Some(spec.instance_id.clone()),
            Some(got) if got != &spec.instance_id => {
                return Err(self.shape(
                    Action::Provision,
                    format!("asked for contract {}, answered with contract {got}", spec.instance_id),
                ));
            }
            Some(_) => {}
        }
        progress.event(event(
            Stage::CloneTemplate,
            StagePhase::Completed,
            Some(inst.backend_id.clone()),
        ));
        Ok(inst)
    }

    /// Create without a `status` action: what the record says was made is returned as it is; a
    /// provision that was cut off (it may have made a machine Berth never heard of) is undone
    /// with `terminate` first, and if that fails nothing is provisioned.
    async fn create_recorded(
        &self,
        ledger: &Ledger,
        spec: &VmSpec,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        let id = &spec.instance_id;
        match record(ledger, id)? {
            Some(Record {
                phase: Phase::Made,
                instance: Some(made),
                ..
            }) => {
                progress.event(event(
                    Stage::CloneTemplate,
                    StagePhase::Skipped,
                    Some(made.backend_id.clone()),
                ));
                return Ok(made);
            }
            Some(_) => {
                progress.event(event(
                    Stage::Cleanup,
                    StagePhase::Started,
                    Some("an earlier provision was cut off: terminating what it may have made".into()),
                ));
                let mut req = Request::new(Action::Terminate);
                req.contract_id = Some(id.as_str());
                match self.runner.call(&req, None).await {
                    Ok(_) => {}
                    Err(e) if e.code() == berth_core::ErrorCode::NotFound => {}
                    Err(e) => {
                        return Err(ProviderError::conflict(format!(
                            "an earlier provision of {id} was cut off and `terminate` for it failed ({e}); \
                             Berth will not provision again and risk a second machine: check the host, then retry"
                        )));
                    }
                }
                progress.event(event(Stage::Cleanup, StagePhase::Completed, None));
            }
            None => {}
        }
        let cut_off = Record {
            contract_id: id.clone(),
            phase: Phase::Provisioning,
            instance: None,
        };
        ledger.put(&cut_off).map_err(|e| recording(ledger, e))?;
        let mut inst = self.run_provision(spec, progress).await?;
        // The size asked for, where the script does not say (capacity counts it).
        inst.cores = inst.cores.or(Some(spec.cores));
        inst.memory_mib = inst.memory_mib.or(Some(spec.memory_mib));
        inst.disk_gib = inst.disk_gib.or(Some(spec.disk_gib));
        let made = Record {
            phase: Phase::Made,
            // Serialization skips the password: it is never stored.
            instance: Some(inst.clone()),
            ..cut_off
        };
        ledger.put(&made).map_err(|e| recording(ledger, e))?;
        Ok(inst)
    }
}

impl ScriptProvider {
    /// Delete without a `status` action: `terminate` by contract id (and the external id the
    /// record holds, if any), then the record goes. A machine cut off mid-provision is asked for
    /// too, by contract id alone.
    async fn delete_recorded(&self, ledger: &Ledger, r: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        let mut req = Request::new(Action::Terminate);
        let rec = match r {
            InstanceRef::Id(id) => {
                req.contract_id = Some(id.as_str());
                record(ledger, id)?
            }
            InstanceRef::Backend(b) => {
                req.external_id = Some(b.as_str());
                None
            }
        };
        let external = rec
            .as_ref()
            .and_then(|r| r.instance.as_ref())
            .map(|i| i.backend_id.clone());
        if req.external_id.is_none() {
            req.external_id = external.as_deref();
        }
        let outcome = match self.runner.call(&req, None).await {
            Ok(_) => DeleteOutcome::Deleted,
            Err(e) if e.code() == berth_core::ErrorCode::NotFound => DeleteOutcome::AlreadyAbsent,
            Err(e) => return Err(e),
        };
        if let InstanceRef::Id(id) = r {
            ledger.remove(id).map_err(|e| recording(ledger, e))?;
        }
        Ok(outcome)
    }
}

fn record(ledger: &Ledger, id: &InstanceId) -> Result<Option<Record>, ProviderError> {
    ledger.get(id).map_err(|e| recording(ledger, e))
}

fn recording(ledger: &Ledger, e: std::io::Error) -> ProviderError {
    ProviderError::internal(format!("script backend record in {}: {e}", ledger.dir().display()))
}

fn event(stage: Stage, phase: StagePhase, detail: Option<String>) -> StageEvent {
    StageEvent { stage, phase, detail }
}

#[async_trait]
impl Provider for ScriptProvider {
    fn backend(&self) -> &'static str {
        "script"
    }

    async fn validate(&self) -> Vec<Check> {
        let mut by_path: BTreeMap<&PathBuf, Vec<&str>> = BTreeMap::new();
        for (action, path) in &self.runner.scripts {
            by_path.entry(path).or_default().push(action.as_str());
        }
        let mut checks = Vec::new();
        let mut all_ok = true;
        for (path, actions) in by_path {
            let name = format!("script executable ({})", actions.join(", "));
            let check = match std::fs::metadata(path) {
                Err(e) => Check::fail(name, format!("{}: {e}", path.display())),
                Ok(m) if !m.is_file() => Check::fail(name, format!("{} is not a file", path.display())),
                Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                    Check::fail(name, format!("{} is not executable (chmod +x it)", path.display()))
                }
                Ok(_) => Check::ok(name, format!("{} is executable", path.display())),
            };
            all_ok &= check.status == berth_core::CheckStatus::Ok;
            checks.push(check);
        }
        checks.extend(self.limits());
        if !self.runner.scripts.contains_key(&Action::Health) {
            checks.push(Check::warn(
                "script health",
                "no `health_check` or `command` configured: live check skipped",
            ));
        } else if !all_ok {
            checks.push(Check::fail("script health", "skipped: fix the executables first"));
        } else {
            checks.push(match self.runner.call(&Request::new(Action::Health), None).await {
                Ok(_) => Check::ok("script health", "the health action succeeded"),
                Err(e) => Check::fail("script health", e.to_string()),
            });
        }
        checks
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        Ok(Capabilities {
            power: self.has_power(),
            vms: true,
            containers: false,
            graceful_shutdown: false,
            reboot: self.has_power(),
            reconfigure: false,
            static_ip: false,
            ipv6: false,
            list_templates: false,
            capacity: false,
            pools: false,
        })
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        spec.validate()?;
        if spec.kind != GuestKind::Vm {
            return Err(ProviderError::invalid(
                "kind",
                format!("the script backend makes VMs only (got {})", spec.kind),
            ));
        }
        if let Some(ledger) = &self.ledger {
            return self.create_recorded(ledger, spec, progress).await;
        }
        let id = InstanceRef::Id(spec.instance_id.clone());
        if let Some(existing) = self.lookup(&id).await?
            && existing.state != PowerState::Provisioning
        {
            progress.event(event(
                Stage::CloneTemplate,
                StagePhase::Skipped,
                Some(existing.backend_id.clone()),
            ));
            return Ok(existing);
        }
        self.run_provision(spec, progress).await
    }

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError> {
        self.lookup(id)
            .await?
            .ok_or_else(|| ProviderError::not_found(id.to_string()))
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        // Scripts manage VMs only: a containers-only listing needs no script run.
        if filter.kind == Some(GuestKind::Container) {
            return Ok(Vec::new());
        }
        if !self.runner.scripts.contains_key(&Action::List) {
            // Without `list` (nor `status`): what Berth made here, as its records say.
            let Some(ledger) = &self.ledger else {
                return Err(ProviderError::unsupported(
                    "list: this script backend has no `list` action (no reconcile)",
                ));
            };
            let records = ledger.all().map_err(|e| recording(ledger, e))?;
            return Ok(records
                .into_iter()
                .filter(|r| r.phase == Phase::Made)
                .filter_map(|r| r.instance)
                .collect());
        }
        let resp = self.runner.call(&Request::new(Action::List), None).await?;
        let mut out = Vec::new();
        for mut wire in resp.instances.unwrap_or_default() {
            // One machine with a contract id that is not Berth's must not hide the others: it is
            // listed as not owned.
            if let Some(contract) = &wire.contract_id
                && let Err(e) = InstanceId::parse(contract)
            {
                tracing::warn!(
                    external_id = %berth_exec::redact_secrets(&wire.external_id),
                    contract_id = %berth_exec::redacted_snippet(contract, 80),
                    error = %berth_exec::redact_secrets(&e.to_string()),
                    "listed machine has a contract_id that is not a valid instance id; treating it as not owned by Berth"
                );
                wire.contract_id = None;
            }
            let inst = self.instance(wire, Action::List)?;
            if filter.all || inst.instance_id.is_some() {
                out.push(inst);
            }
        }
        Ok(out)
    }

    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        if !self.has_power() {
            return Err(ProviderError::unsupported(format!(
                "power of {id}: this script backend has no `start` and `stop` actions"
            )));
        }
        let inst = self.owned(id).await?;
        let after = match op {
            PowerOp::Start => self.act(Action::Start, &inst).await?,
            // The protocol has no graceful shutdown: stop is the script's best way down.
            PowerOp::Stop | PowerOp::Shutdown { .. } => self.act(Action::Stop, &inst).await?,
            PowerOp::Reboot => {
                self.act(Action::Stop, &inst).await?;
                self.act(Action::Start, &inst).await?
            }
        };
        match after {
            Some(mut a) if a.backend_id == inst.backend_id => {
                a.instance_id = a.instance_id.or(inst.instance_id);
                Ok(a)
            }
            _ => self.describe(id).await,
        }
    }

    async fn reconfigure(&self, id: &InstanceRef, _change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        Err(ProviderError::unsupported(format!(
            "reconfigure of {id}: protocol 1 has no resize action"
        )))
    }

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        if let Some(ledger) = &self.ledger {
            return self.delete_recorded(ledger, id).await;
        }
        let inst = match self.owned(id).await {
            Ok(inst) => inst,
            Err(e) if e.code() == berth_core::ErrorCode::NotFound => return Ok(DeleteOutcome::AlreadyAbsent),
            Err(e) => return Err(e),
        };
        match self.act(Action::Terminate, &inst).await {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(e) if e.code() == berth_core::ErrorCode::NotFound => Ok(DeleteOutcome::AlreadyAbsent),
            Err(e) => Err(e),
        }
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        Err(ProviderError::unsupported(
            "list_templates: protocol 1 has no template action",
        ))
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        Err(ProviderError::unsupported(
            "capacity: protocol 1 has no capacity action",
        ))
    }
}
