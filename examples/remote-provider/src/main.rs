//! A complete Berth provider for an imaginary cloud (machines in memory), served over gRPC
//! with berth-provider-sdk: `cargo run -p remote-provider -- --listen unix:/tmp/cloud.sock`.
//! Create is idempotent by the instance id (the map's key); deleting what is absent is fine.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use berth_provider_sdk::*;

const TEMPLATES: [&str; 2] = ["debian-12", "ubuntu-24.04"];
const HOST_MEMORY_MIB: u64 = 256 * 1024;

#[derive(Default)]
struct Cloud {
    machines: Mutex<BTreeMap<InstanceId, Instance>>,
    made: AtomicU32,
}

fn is(m: &Instance, r: &InstanceRef) -> bool {
    match r {
        InstanceRef::Id(id) => m.instance_id.as_ref() == Some(id),
        InstanceRef::Backend(b) => &m.backend_id == b,
    }
}

impl Cloud {
    fn with<T>(&self, r: &InstanceRef, f: impl FnOnce(&mut Instance) -> T) -> Result<T, ProviderError> {
        let mut ms = self.machines.lock().expect("machines");
        let m = ms.values_mut().find(|m| is(m, r));
        m.map(f).ok_or_else(|| ProviderError::not_found(r.to_string()))
    }

    fn refuse(spec: &VmSpec) -> Result<(), ProviderError> {
        spec.validate()?;
        if spec.kind == GuestKind::Container {
            return Err(ProviderError::unsupported("containers on the imaginary cloud"));
        }
        if spec.memory_mib > HOST_MEMORY_MIB {
            return Err(ProviderError::invalid("memory_mib", "more than the host has"));
        }
        match &spec.template {
            Some(t) if !TEMPLATES.contains(&t.as_str()) => Err(ProviderError::invalid(
                "template",
                format!("expected one of {TEMPLATES:?} (got {t:?})"),
            )),
            _ => Ok(()),
        }
    }
}

async fn stage(progress: &dyn ProgressSink, stage: Stage, phase: StagePhase) {
    progress.event(StageEvent {
        stage,
        phase,
        detail: None,
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[async_trait]
impl Provider for Cloud {
    fn backend(&self) -> &'static str {
        "imaginary-cloud"
    }

    async fn validate(&self) -> Vec<Check> {
        vec![Check::ok("imaginary cloud", "always reachable")]
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        Ok(Capabilities {
            power: true,
            vms: true,
            reboot: true,
            graceful_shutdown: true,
            reconfigure: true,
            list_templates: true,
            capacity: true,
            ..Capabilities::default()
        })
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        Cloud::refuse(spec)?;
        let id = InstanceRef::Id(spec.instance_id.clone());
        if let Ok(m) = self.with(&id, |m| m.clone()) {
            return Ok(m); // made before (a retry after a break): the same machine
        }
        stage(progress, Stage::CloneTemplate, StagePhase::Started).await;
        let n = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        let m = Instance {
            instance_id: Some(spec.instance_id.clone()),
            backend_id: format!("ic-{n}"),
            kind: GuestKind::Vm,
            node: None,
            name: spec.name.clone(),
            state: PowerState::Running,
            ipv4: Some(Ipv4Addr::new(10, 88, (n / 250) as u8, (n % 250 + 2) as u8)),
            ipv6: None,
            cores: Some(spec.cores),
            memory_mib: Some(spec.memory_mib),
            disk_gib: Some(spec.disk_gib),
            ssh_port: None,
            login_user: Some(spec.user.clone().unwrap_or_else(|| "debian".into())),
            root_password: None,
            pool: None,
        };
        // The commit point: once in the map, a retry finds it.
        let m = {
            let mut ms = self.machines.lock().expect("machines");
            ms.entry(spec.instance_id.clone()).or_insert(m).clone()
        };
        stage(progress, Stage::CloneTemplate, StagePhase::Completed).await;
        stage(progress, Stage::StartVm, StagePhase::Started).await;
        stage(progress, Stage::StartVm, StagePhase::Completed).await;
        Ok(m)
    }

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError> {
        self.with(id, |m| m.clone())
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        let ms = self.machines.lock().expect("machines");
        let kind = |m: &&Instance| filter.kind.is_none_or(|k| k == m.kind);
        Ok(ms.values().filter(kind).cloned().collect())
    }

    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        self.with(id, |m| {
            m.state = match op {
                PowerOp::Stop | PowerOp::Shutdown { .. } => PowerState::Stopped,
                PowerOp::Start | PowerOp::Reboot => PowerState::Running,
            };
            m.clone()
        })
    }

    async fn reconfigure(&self, id: &InstanceRef, change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        change.validate()?;
        self.with(id, |m| {
            m.cores = change.cores.or(m.cores);
            m.memory_mib = change.memory_mib.or(m.memory_mib);
            m.disk_gib = change.disk_gib.or(m.disk_gib);
            ReconfigureOutcome {
                restart_required: m.state == PowerState::Running,
            }
        })
    }

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        let mut ms = self.machines.lock().expect("machines");
        let before = ms.len();
        ms.retain(|_, m| !is(m, id));
        Ok(if ms.len() < before {
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::AlreadyAbsent
        })
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        Ok(TEMPLATES
            .iter()
            .map(|t| Template {
                id: t.to_string(),
                name: t.to_string(),
                kind: GuestKind::Vm,
                node: None,
                disk_gib: Some(10),
                format: None,
            })
            .collect())
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        let ms = self.machines.lock().expect("machines");
        Ok(Capacity {
            cpus_total: 64,
            memory_mib_total: HOST_MEMORY_MIB,
            memory_mib_used: ms.values().filter_map(|m| m.memory_mib).sum(),
            disk_gib_total: 10_000,
            disk_gib_free: 10_000u64.saturating_sub(ms.values().filter_map(|m| m.disk_gib).sum()),
            instances: ms.len() as u32,
            node: None,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(Cloud::default()).await
}
