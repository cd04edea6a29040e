//! Reconcile: every Berth-owned machine each backend lists, against what the control plane
//! expects. Drift (a machine stopped behind our back, or running when it should not, or gone)
//! is reported with the heartbeat. A machine the control plane does not expect is an orphan: it
//! is stopped and kept in quarantine, reported, and deleted only after a grace period and only
//! when `[reconcile] delete_orphans` says so. Each instance is read again just before its machine
//! is stopped or deleted, so a list read a moment earlier never decides that alone. A machine
//! whose failed provision is kept for a look (`post_provision.keep_failed`) is reported, never
//! stopped or deleted; one an operator released from quarantine ([`crate::release`]) is left
//! alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_api::wire::{Drift, InstanceView};
use berth_core::{InstanceRef, ListFilter, PowerOp, PowerState};
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::fsutil;
use crate::lease::now_ms;

/// Statuses under which a machine is expected to exist.
const LIVE: &[&str] = &["provisioning", "running", "stopped", "terminating"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Quarantine {
    /// Instance id → when first found orphaned (ms), backend, backend id.
    pub orphans: BTreeMap<String, Orphan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Orphan {
    pub since: i64,
    pub backend: String,
    pub vm_id: String,
}

/// A machine kept after its provision failed, for a look (`post_provision.keep_failed`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub since: i64,
    pub backend: String,
}

impl Agent {
    fn kept_dir(&self) -> std::path::PathBuf {
        self.settings.agent.state_dir.join("kept")
    }

    fn kept_path(&self, instance_id: &str) -> std::path::PathBuf {
        self.kept_dir()
            .join(format!("{}.json", fsutil::safe_file_name(instance_id)))
    }

    /// Marks the machine of `instance_id` as kept after a failed provision.
    pub(crate) fn keep(&self, instance_id: &str, backend: &str) {
        let k = Kept {
            since: now_ms(),
            backend: backend.into(),
        };
        let written = fsutil::ensure_private_dir(&self.kept_dir())
            .and_then(|()| fsutil::write_atomic(&self.kept_path(instance_id), &serde_json::to_vec(&k)?, 0o600));
        match written {
            Ok(()) => {
                tracing::warn!(instance = %instance_id, backend, "provision failed; the machine is kept for a look (post_provision.keep_failed)")
            }
            Err(e) => {
                tracing::error!(instance = %instance_id, error = %e, "cannot record a kept machine; reconcile will quarantine it")
            }
        }
    }

    /// The machine is gone (terminated): no longer kept.
    pub(crate) fn unkeep(&self, instance_id: &str) {
        let _ = fsutil::remove_durable(&self.kept_path(instance_id));
    }

    fn kept(&self, instance_id: &str) -> Option<Kept> {
        std::fs::read(self.kept_path(instance_id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn quarantine_path(&self) -> std::path::PathBuf {
        self.settings.agent.state_dir.join("quarantine.json")
    }

    fn load_quarantine(&self) -> Quarantine {
        crate::release::quarantined(&self.settings.agent.state_dir)
    }

    /// Instances with work of this agent under way: running now, or in the journal for an
    /// operation that has not finished (it comes back to us). An entry of an operation that
    /// finished elsewhere (another agent took it over) is removed here, so it does not keep its
    /// instance busy; so is one the control plane no longer knows.
    pub(crate) async fn busy_instances(&self) -> HashSet<String> {
        let mut busy = HashSet::new();
        for e in self.journal.load_all().unwrap_or_default() {
            if !self.is_active(&e.operation_id) {
                match self.client.operation(&e.operation_id).await {
                    Ok(op) if op.status == "succeeded" || op.status == "failed" => {
                        tracing::info!(operation = %e.operation_id, status = %op.status, "the operation finished elsewhere; dropping its journal entry");
                        let _ = self.journal.remove(&e.operation_id);
                        continue;
                    }
                    Err(err) if crate::lease::is_lease_gone(&err) => {
                        tracing::info!(operation = %e.operation_id, "the control plane no longer has this operation; dropping its journal entry");
                        let _ = self.journal.remove(&e.operation_id);
                        continue;
                    }
                    _ => {}
                }
            }
            busy.insert(e.instance_id);
        }
        busy
    }

    /// Whether the machine of `iid` may be stopped or deleted as an orphan: read again now, its
    /// instance is not one the control plane expects, no work of ours is on it, and it is not
    /// kept for a look.
    pub(crate) async fn still_orphaned(&self, iid: &str) -> bool {
        if self.kept(iid).is_some()
            || self
                .journal
                .load_all()
                .unwrap_or_default()
                .iter()
                .any(|e| e.instance_id == iid)
        {
            return false;
        }
        match self.client.instance(iid).await {
            Ok(i) => !LIVE.contains(&i.status.as_str()),
            Err(e) if crate::lease::is_lease_gone(&e) => true,
            Err(e) => {
                tracing::warn!(instance = %iid, error = %e, "cannot read the instance again; leaving its machine alone this pass");
                false
            }
        }
    }

    /// One pass. Machines are listed before instances are read, so a machine being made now
    /// always finds its instance (the instance is recorded before its work is handed out).
    pub async fn reconcile_once(&self) -> anyhow::Result<Vec<Drift>> {
        let mut seen = Vec::new();
        // A backend that cannot list is left out of this pass; nothing is "missing" then (it
        // may be on that backend).
        let mut all_listed = true;
        for b in &self.backends {
            match b.provider.list(ListFilter::default()).await {
                Ok(vms) => {
                    for vm in &vms {
                        if let Some(iid) = &vm.instance_id {
                            self.routes.located(&iid.to_string(), &b.name);
                        }
                    }
                    seen.push((b, vms));
                }
                // A backend that cannot list at all (a script without `list`; doctor says so).
                Err(e) if e.code() == berth_core::ErrorCode::Unsupported => {
                    tracing::debug!(backend = %b.name, error = %e, "backend cannot list machines; not reconciled");
                    all_listed = false;
                }
                Err(e) if self.backends.len() == 1 => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(backend = %b.name, error = %e, "cannot list machines; reconciling the other backends");
                    all_listed = false;
                }
            }
        }
        let expected: HashMap<String, InstanceView> = self
            .client
            .instances()
            .await?
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        let busy = self.busy_instances().await;
        // Taken over by an operator (`berth agent release`): read once per pass.
        let state_dir = &self.settings.agent.state_dir;
        let released: HashSet<String> = crate::release::released(state_dir)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut quarantine = self.load_quarantine();
        let before = quarantine.orphans.len();
        let now = now_ms();
        let mut drift = Vec::new();
        let mut present = HashSet::new();
        for (b, vms) in &seen {
            for vm in vms {
                // Machines made outside the control plane (`berth vm create`) are not ours to
                // judge: no drift, no orphan.
                let Some(iid) = vm
                    .instance_id
                    .as_ref()
                    .filter(|i| i.scope() == berth_core::Scope::ControlPlane)
                    .map(|i| i.to_string())
                else {
                    continue;
                };
                present.insert(iid.clone());
                if busy.contains(&iid) {
                    continue;
                }
                // An operator took this one over (`berth agent release`): not ours any more.
                if released.contains(&iid) {
                    quarantine.orphans.remove(&iid);
                    continue;
                }
                let kept = self.kept(&iid);
                let report = |kind: &str, detail: String, since: i64| Drift {
                    instance_id: iid.clone(),
                    kind: kind.into(),
                    backend: b.name.clone(),
                    vm_id: Some(vm.backend_id.clone()),
                    detail: Some(detail),
                    since,
                };
                match expected.get(&iid) {
                    Some(i) if LIVE.contains(&i.status.as_str()) => {
                        quarantine.orphans.remove(&iid);
                        if i.status == "running" && vm.state == PowerState::Stopped {
                            drift.push(report(
                                "stopped",
                                "expected running; the machine is stopped".into(),
                                now,
                            ));
                        } else if i.status == "stopped" && vm.state == PowerState::Running {
                            drift.push(report(
                                "running",
                                "expected stopped; the machine is running".into(),
                                now,
                            ));
                        }
                    }
                    other if kept.is_some() => {
                        let why = match other {
                            Some(i) => format!("the instance is {}", i.status),
                            None => "the control plane has no such instance".into(),
                        };
                        quarantine.orphans.remove(&iid);
                        let since = kept.map_or(now, |k| k.since);
                        drift.push(report(
                            "kept",
                            format!("{why}; kept for a look after its provision failed (post_provision.keep_failed)"),
                            since,
                        ));
                    }
                    other => {
                        let why = match other {
                            Some(i) => format!("the instance is {}", i.status),
                            None => "the control plane has no such instance".into(),
                        };
                        let o = quarantine.orphans.entry(iid.clone()).or_insert_with(|| Orphan {
                            since: now,
                            backend: b.name.clone(),
                            vm_id: vm.backend_id.clone(),
                        });
                        let since = o.since;
                        let r = InstanceRef::Id(vm.instance_id.clone().expect("owned"));
                        let grace = self.settings.reconcile.orphan_grace_seconds as i64 * 1000;
                        let act = self.settings.reconcile.delete_orphans && now - since >= grace
                            || vm.state == PowerState::Running;
                        if act && !self.still_orphaned(&iid).await {
                            // Read again, it is no orphan (re-provisioned, or work started on it).
                            quarantine.orphans.remove(&iid);
                            continue;
                        }
                        if self.settings.reconcile.delete_orphans && now - since >= grace {
                            match b.provider.delete(&r).await {
                                Ok(_) => {
                                    tracing::warn!(instance = %iid, backend = %b.name, "deleted an orphan after its grace period");
                                    metrics::counter!("berth_orphans_deleted_total", "backend" => b.name.clone())
                                        .increment(1);
                                    quarantine.orphans.remove(&iid);
                                    continue;
                                }
                                Err(e) => tracing::error!(instance = %iid, error = %e, "cannot delete an orphan"),
                            }
                        } else if vm.state == PowerState::Running {
                            match b.provider.power(&r, PowerOp::Stop).await {
                                Ok(_) => {
                                    tracing::warn!(instance = %iid, backend = %b.name, vm = %vm.backend_id, "orphan stopped and quarantined ({why})")
                                }
                                Err(e) => tracing::error!(instance = %iid, error = %e, "cannot stop an orphan"),
                            }
                        }
                        drift.push(report("orphan", format!("{why}; stopped and quarantined"), since));
                    }
                }
            }
        }
        for (iid, i) in &expected {
            let mine = i.agent_id.as_deref() == Some(self.agent_id.as_str());
            if mine
                && all_listed
                && matches!(i.status.as_str(), "running" | "stopped")
                && !present.contains(iid)
                && !busy.contains(iid)
            {
                drift.push(Drift {
                    instance_id: iid.clone(),
                    kind: "missing".into(),
                    backend: self
                        .routes
                        .location(iid)
                        .unwrap_or_else(|| self.backends[0].name.clone()),
                    vm_id: i.vm_id.clone(),
                    detail: Some(format!("expected {}; no machine carries this instance id", i.status)),
                    since: now,
                });
            }
        }
        if all_listed {
            quarantine.orphans.retain(|iid, _| present.contains(iid));
            crate::release::forget_gone(state_dir, &released, &present);
        }
        if quarantine.orphans.len() != before || !quarantine.orphans.is_empty() {
            let bytes = serde_json::to_vec_pretty(&quarantine)?;
            fsutil::write_atomic(&self.quarantine_path(), &bytes, 0o600)?;
        }
        for kind in ["stopped", "running", "missing", "orphan", "kept"] {
            let n = drift.iter().filter(|d| d.kind == kind).count();
            metrics::gauge!("berth_drift", "kind" => kind).set(n as f64);
        }
        Ok(drift)
    }

    pub async fn reconcile_loop(self: Arc<Self>) {
        let every = Duration::from_secs(self.settings.polling.reconcile_interval_seconds);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.reconcile_once().await {
                Ok(d) => {
                    if !d.is_empty() {
                        tracing::warn!(count = d.len(), "reconcile found drift");
                    }
                    self.set_drift(d);
                }
                Err(e) => tracing::warn!(error = %e, "reconcile failed; trying again next round"),
            }
        }
    }
}
