//! Reconcile: every Berth-owned machine each backend lists, against what the control plane
//! expects. Drift (a machine stopped behind our back, or running when it should not, or gone)
//! is reported with the heartbeat. A machine the control plane does not expect is an orphan: it
//! is stopped and kept in quarantine, reported, and deleted only after a grace period and only
//! when `[reconcile] delete_orphans` says so.

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

impl Agent {
    fn quarantine_path(&self) -> std::path::PathBuf {
        self.settings.agent.state_dir.join("quarantine.json")
    }

    fn load_quarantine(&self) -> Quarantine {
        std::fs::read(self.quarantine_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Instances with work in this agent right now (their machines are in flux).
    fn busy_instances(&self) -> HashSet<String> {
        self.journal
            .load_all()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.outcome.is_none() || self.is_active(&e.operation_id))
            .map(|e| e.instance_id)
            .collect()
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
        let busy = self.busy_instances();
        let mut quarantine = self.load_quarantine();
        let before = quarantine.orphans.len();
        let now = now_ms();
        let mut drift = Vec::new();
        let mut present = HashSet::new();
        for (b, vms) in &seen {
            for vm in vms {
                let Some(iid) = vm.instance_id.as_ref().map(|i| i.to_string()) else {
                    continue;
                };
                present.insert(iid.clone());
                if busy.contains(&iid) {
                    continue;
                }
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
        }
        if quarantine.orphans.len() != before || !quarantine.orphans.is_empty() {
            let bytes = serde_json::to_vec_pretty(&quarantine)?;
            fsutil::write_atomic(&self.quarantine_path(), &bytes, 0o600)?;
        }
        for kind in ["stopped", "running", "missing", "orphan"] {
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
