//! The create flow both guest kinds share: find the instance's guest by its marker (resuming
//! one whose creation still runs) or make it, finish it, and remove a half-made guest when a
//! later step fails. The kind-specific steps live in `create_vm` and `create_ct`.

use berth_core::{GuestKind, Instance, PoolMark, PoolMode, ProviderError, Stage, VmSpec};

use super::ProxmoxProvider;
use super::create_vm::check_kind;
use super::guest::{Guest, gib};
use super::marker::{instance_tag, merged_tags};
use super::pve_params::drive_size;
use super::stages::Stages;
use super::steps::root_disk;
use crate::client::types::GuestConfig;
use crate::client::{GuestType, Params, Poll, Upid};

/// Rounds of "found the instance's guest, but it vanished while waited for" before giving up.
const OBTAIN_ROUNDS: u32 = 3;

impl ProxmoxProvider {
    pub(crate) async fn create_guest(
        &self,
        spec: &VmSpec,
        stages: &Stages<'_>,
        fill: Option<Fill<'_>>,
    ) -> Result<Instance, ProviderError> {
        let (mut guest, made) = self.obtain(spec, stages).await?;
        // A guest without its tags never finished configure_vm: it is ours to remove on failure.
        let half_made = made.is_some() || !guest.tagged;
        if let Some(f) = fill {
            guest.pool = Some(f.mark.clone());
        }
        let result = match made {
            Some(made) => self.finish_new(spec, &guest, made, stages, fill).await,
            None => self.finish(spec, &guest, stages, fill).await,
        };
        if result.is_err() && half_made {
            self.remove_half_made(&guest, &spec.instance_id).await;
        }
        result
    }

    /// The instance's guest, found (and waited for, if its creation still runs) or newly made
    /// (`Some`: how). The checks that need no cluster listing are asked together with it.
    async fn obtain(&self, spec: &VmSpec, stages: &Stages<'_>) -> Result<(Guest, Option<Made>), ProviderError> {
        let poll = Poll::new(self.poll_interval());
        let mut round = 0;
        loop {
            round += 1;
            let (resources, early) = tokio::join!(self.client.cluster_resources(Some("vm")), self.early_checks(spec));
            let resources = resources?;
            if let Some(found) = self.find_owned(&spec.instance_id, Some(&spec.name), &resources).await? {
                check_kind(&found, spec.kind)?;
                let label = found.label();
                if let Some(g) = self.resume_existing(found, stages).await? {
                    return Ok((g, None));
                }
                // The earlier attempt's guest vanished (its task failed): look again, then start
                // afresh. A guest that keeps vanishing while still listed is not waited for forever.
                if round >= OBTAIN_ROUNDS {
                    return Err(ProviderError::unavailable(format!(
                        "{label}, the guest of instance {}, disappeared each time it was waited for \
                         ({round} times) while Proxmox still lists it; try again later",
                        spec.instance_id
                    )));
                }
                poll.sleep(self.clone_timeout()).await;
                continue;
            }
            let made = match spec.kind {
                GuestKind::Vm => {
                    let (plan, first_vmid) = self.preflight_vm(spec, &resources, early).await?;
                    self.clone_stage(spec, &plan, &resources, first_vmid, stages).await?
                }
                GuestKind::Container => {
                    let passed = early.judge()?;
                    let ostemplate = passed.ostemplate.unwrap_or_default();
                    self.create_ct_stage(spec, &ostemplate, &resources, passed.first_vmid, stages)
                        .await?
                }
            };
            return Ok(made);
        }
    }

    /// The rest of a create whose guest this call made: what its configuration holds is known
    /// without reading it back. A cloned VM gets its tags, cloud-init and size in one config
    /// update while its disk grows; a container got all of that at creation.
    async fn finish_new(
        &self,
        spec: &VmSpec,
        g: &Guest,
        made: Made,
        stages: &Stages<'_>,
        fill: Option<Fill<'_>>,
    ) -> Result<Instance, ProviderError> {
        stages.started(Stage::ConfigureVm, format!("configuring {}", g.label()));
        let mut g = g.clone();
        if let Made::Clone(template_cfg) = &made {
            // Both run to their end (neither leaves a task behind the other's failure).
            let (configured, grown) = tokio::join!(
                self.apply_vm_config(spec, &g, template_cfg, true, fill.map(|f| f.mark)),
                self.grow_disk(&g, template_cfg, spec.disk_gib)
            );
            configured?;
            grown?;
            // PVE counts a VM's CPUs as sockets × cores; the clone keeps the template's sockets.
            let sockets: u32 = template_cfg.get("sockets").and_then(|s| s.parse().ok()).unwrap_or(1);
            g.cores = Some(spec.cores.saturating_mul(sockets.max(1)));
        }
        let size = format!("{} cores, {} MiB, {} GiB", spec.cores, spec.memory_mib, spec.disk_gib);
        stages.completed(Stage::ConfigureVm, size);
        if let Some(f) = fill
            && f.mode == PoolMode::Stopped
        {
            return Ok(kept_stopped(&g, stages));
        }
        self.start_new(spec, &g, stages).await
    }

    /// configure_vm, start_vm, wait_network for a guest found from an earlier attempt: what it
    /// lacks (tags, cloud-init, size; a container only its tags) is read from its configuration
    /// and repaired. Disks grow to the requested size.
    pub(crate) async fn finish(
        &self,
        spec: &VmSpec,
        g: &Guest,
        stages: &Stages<'_>,
        fill: Option<Fill<'_>>,
    ) -> Result<Instance, ProviderError> {
        let cfg = self.client.guest_config(&g.node, g.ty, g.vmid).await?;
        let tagged = cfg.tags().contains(&instance_tag(&spec.instance_id));
        let disk_small = root_disk(g.ty, &cfg)
            .and_then(|(_, v)| drive_size(&v))
            .is_none_or(|size| size < gib(spec.disk_gib));
        if !tagged || disk_small {
            stages.started(Stage::ConfigureVm, format!("configuring {}", g.label()));
            if !tagged {
                match g.ty {
                    GuestType::Qemu => self.apply_vm_config(spec, g, &cfg, false, fill.map(|f| f.mark)).await?,
                    GuestType::Lxc => {
                        let p = Params::new().str("tags", merged_tags(&cfg.tags(), &spec.instance_id));
                        self.client.update_config(&g.node, g.ty, g.vmid, &p).await?;
                    }
                }
            }
            self.grow_disk(g, &cfg, spec.disk_gib).await?;
            let size = format!("{} cores, {} MiB, {} GiB", spec.cores, spec.memory_mib, spec.disk_gib);
            stages.completed(Stage::ConfigureVm, size);
        } else {
            stages.skipped(Stage::ConfigureVm, format!("{} is already configured", g.label()));
        }
        if let Some(f) = fill
            && f.mode == PoolMode::Stopped
        {
            let st = self.client.guest_status(&g.node, g.ty, g.vmid).await?;
            let mut cur = g.clone();
            cur.apply_status(&st);
            return Ok(kept_stopped(&cur, stages));
        }
        self.start_and_wait(spec, g, stages).await
    }

    /// A found guest: wait for a running clone/create to finish; `None` if it disappeared.
    pub(crate) async fn resume_existing(&self, g: Guest, stages: &Stages<'_>) -> Result<Option<Guest>, ProviderError> {
        let stage = Stage::CloneTemplate;
        let Some(lock) = g.lock.clone() else {
            stages.skipped(stage, format!("{} already exists", g.label()));
            return Ok(Some(g));
        };
        stages.started(stage, format!("waiting for {} (locked: {lock})", g.label()));
        let cur = self.wait_unlocked(&g, self.clone_timeout()).await?;
        if let Some(cur) = &cur {
            stages.completed(stage, cur.label());
        }
        Ok(cur)
    }

    /// Waits for the task that makes `guest` (a clone or a container create) and then for its
    /// lock to go. On a failed task the half-made guest is removed (a timed-out task is stopped
    /// first); the error says whether that removal succeeded, so a transient failure may be
    /// tried again on a fresh VMID.
    pub(crate) async fn await_creation(
        &self,
        guest: &Guest,
        upid: &Upid,
        what: &str,
        id: &berth_core::InstanceId,
    ) -> Result<Guest, CreationFailed> {
        if let Err(error) = self.run_task(upid, self.clone_timeout(), what).await {
            if matches!(error, ProviderError::Timeout { .. }) {
                let _ = self.client.stop_task(upid).await;
            }
            let removed = self.remove_half_made(guest, id).await;
            return Err(CreationFailed { error, removed });
        }
        // PVE drops the creation lock inside the task, before it ends.
        let mut done = guest.clone();
        done.lock = None;
        done.status = Some("stopped".into());
        Ok(done)
    }
}

/// What `fill` adds to a create: the pool mark among the tags, and whether the guest starts.
#[derive(Clone, Copy)]
pub(crate) struct Fill<'a> {
    pub mark: &'a PoolMark,
    pub mode: PoolMode,
}

/// A stopped pool machine, done: the start is skipped (its first boot is its customer's).
fn kept_stopped(g: &Guest, stages: &Stages<'_>) -> Instance {
    stages.skipped(Stage::StartVm, format!("{} stays stopped in its pool", g.label()));
    let mut done = g.clone();
    done.lock = None;
    done.tagged = true;
    done.status.get_or_insert_with(|| "stopped".into());
    done.to_instance(None, None)
}

/// How this create made its guest, which says what its configuration holds.
pub(crate) enum Made {
    /// Cloned from a template with this configuration: the clone's differs only in name,
    /// description, MAC addresses and disk volume names.
    Clone(GuestConfig),
    /// Created with every setting in the create call.
    Container,
}

/// A creating task that failed, and whether its half-made guest is gone.
pub(crate) struct CreationFailed {
    pub error: ProviderError,
    pub removed: bool,
}
