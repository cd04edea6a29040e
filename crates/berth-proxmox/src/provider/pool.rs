//! Warm pools on Proxmox. `fill` is a create whose guest carries the pool tag and, kept
//! stopped, is never started. `take` hands a pool guest to an instance with one config update
//! guarded by the config's digest: the commit point (tags and description name the instance
//! from then on; a stopped guest gets the customer's cloud-init data in the same update). Then
//! the guest is personalised: a stopped one grows its disk and starts (cloud-init runs its first
//! boot with that data); a running one gets its host name and keys through the guest agent.
//! A running guest keeps its PVE name: renaming it would change the cloud-init data, so the
//! guest's next boot would count as a new instance (new host keys).

use std::time::Duration;

use berth_core::pool::{after_commit, personalise_script, personalised};
use berth_core::{GuestKind, Instance, InstanceId, InstanceRef, PoolMark, PoolMode, ProviderError, Stage, VmSpec};

use super::ProxmoxProvider;
use super::create::Fill;
use super::guest::Guest;
use super::marker::{description, handed_over_tags, instance_tag, owner_from_description, pool_tag};
use super::pve_params::{ipconfig0, nameserver, ssh_keys};
use super::stages::Stages;
use crate::client::types::GuestConfig;
use crate::client::{Params, pve_urlencode};

/// How long the personalisation of a running pool guest may take (its agent answers already).
const PERSONALISE_TIMEOUT: Duration = Duration::from_secs(60);

impl ProxmoxProvider {
    pub(crate) async fn fill_guest(
        &self,
        spec: &VmSpec,
        mark: &PoolMark,
        mode: PoolMode,
        stages: &Stages<'_>,
    ) -> Result<Instance, ProviderError> {
        spec.validate()?;
        if spec.kind != GuestKind::Vm {
            return Err(ProviderError::invalid("kind", "a warm pool holds VMs only"));
        }
        self.create_guest(spec, stages, Some(Fill { mark, mode })).await
    }

    pub(crate) async fn take_guest(
        &self,
        from: &InstanceId,
        mark: &PoolMark,
        mode: PoolMode,
        spec: &VmSpec,
        stages: &Stages<'_>,
    ) -> Result<Instance, ProviderError> {
        spec.validate()?;
        let resources = self.client.cluster_resources(Some("vm")).await?;
        if let Some(found) = self.find_owned(&spec.instance_id, Some(&spec.name), &resources).await? {
            // Taken before (or made by a create that followed a miss, maybe half-made).
            let label = found.label();
            let Some(g) = self.resume_existing(found, stages).await? else {
                return Err(ProviderError::unavailable(format!(
                    "{label}, the machine of instance {}, disappeared while it was waited for",
                    spec.instance_id
                )));
            };
            let mut inst = if mode == PoolMode::Running && g.tagged {
                self.personalise(spec, &g, mode, stages).await?
            } else {
                self.finish(spec, &g, stages, None).await?
            };
            inst.login_user = Some(self.user_of(spec));
            return Ok(inst);
        }
        let gone = |why: String| ProviderError::not_found(format!("pool machine {from} ({why})"));
        let Some(g) = self.find_owned(from, None, &resources).await? else {
            return Err(gone("it is gone".into()));
        };
        if g.pool.as_ref() != Some(mark) {
            return Err(gone(format!("it is no longer in {mark}")));
        }
        let usable = mode.to_string();
        if g.status.as_deref() != Some(usable.as_str()) {
            return Err(gone(format!(
                "{} is {}, not {usable} as its pool keeps it",
                g.label(),
                g.status.as_deref().unwrap_or("in an unknown state")
            )));
        }
        stages.started(
            Stage::CloneTemplate,
            format!("taking {} from pool {}", g.label(), mark.pool),
        );
        // The checks that count are against the config the digest covers: another take (or a
        // retirement) landing since the listing changed it, and this update then fails.
        let cfg = self.client.guest_config(&g.node, g.ty, g.vmid).await?;
        if !in_pool(&cfg, from, mark) {
            return Err(gone(format!("it is no longer in {mark}")));
        }
        if let Some(lock) = cfg.lock() {
            return Err(gone(format!("{} is locked ({lock})", g.label())));
        }
        let mut p = Params::new()
            .str("tags", handed_over_tags(&cfg.tags(), from, &spec.instance_id))
            .str("description", description(&spec.instance_id))
            .opt_str("digest", cfg.get("digest"));
        let user = self.user_of(spec);
        if mode == PoolMode::Stopped {
            // The customer's cloud-init data, for the first boot.
            p = p
                .str("name", spec.name.clone())
                .str("ciuser", user.clone())
                .int("cores", spec.cores)
                .int("memory", spec.memory_mib)
                .str("ipconfig0", ipconfig0(&spec.network))
                .opt_str("sshkeys", ssh_keys(spec).map(|k| pve_urlencode(&k)))
                .opt_str("nameserver", nameserver(spec, &self.config));
        }
        if let Err(e) = self.client.update_config(&g.node, g.ty, g.vmid, &p).await {
            // The digest moved (another agent took it, or it was drained), or the update failed:
            // what the guest carries now says which.
            let what = format!("taking {} from pool {}", g.label(), mark.pool);
            let e = ProviderError::from(e).context(&what);
            let now = match self.client.cluster_resources(Some("vm")).await {
                Ok(n) => n,
                Err(l) => return Err(e.context(format!("then listing the cluster failed too: {l}"))),
            };
            if self.find_owned(&spec.instance_id, None, &now).await?.is_none() {
                let still = self
                    .find_owned(from, None, &now)
                    .await?
                    .is_some_and(|g| g.pool.as_ref() == Some(mark));
                return Err(if still {
                    e
                } else {
                    gone("another order took it meanwhile".into())
                });
            }
        }
        let mut taken = g.clone();
        taken.owner = Some(spec.instance_id.clone());
        taken.pool = None;
        taken.tagged = true;
        if mode == PoolMode::Stopped {
            taken.name = spec.name.clone();
        }
        stages.completed(
            Stage::CloneTemplate,
            format!("taken from pool {} ({})", mark.pool, taken.label()),
        );
        // Past the commit point the machine is the instance's: "not found" now is no longer
        // "nothing was changed", and must not send the order to a create.
        let mut inst = self
            .personalise(spec, &taken, mode, stages)
            .await
            .map_err(|e| after_commit(e, &mark.pool))?;
        inst.login_user = Some(user);
        Ok(inst)
    }

    /// The rest of a take (also of one resumed after the commit point): a stopped guest is
    /// finished as any create is (disk grown, started, its address awaited); a running one gets
    /// its host name and keys through the guest agent (idempotent), and its disk grown.
    async fn personalise(
        &self,
        spec: &VmSpec,
        g: &Guest,
        mode: PoolMode,
        stages: &Stages<'_>,
    ) -> Result<Instance, ProviderError> {
        if mode == PoolMode::Stopped {
            return self.finish(spec, g, stages, None).await;
        }
        stages.started(
            Stage::ConfigureVm,
            format!(
                "putting the host name and SSH keys into {} through its guest agent",
                g.label()
            ),
        );
        // Stopped since (a host restart, a resumed take): started first; the command then waits
        // for its guest agent.
        let st = self.client.guest_status(&g.node, g.ty, g.vmid).await?;
        if st.status.as_deref() != Some("running") {
            self.start_guest(g).await?;
        }
        let cfg = self.client.guest_config(&g.node, g.ty, g.vmid).await?;
        let keys: Vec<String> = spec.ssh_keys.iter().map(|k| k.as_str().to_owned()).collect();
        let script = personalise_script(&spec.name, &self.user_of(spec), &keys);
        let r = InstanceRef::Id(spec.instance_id.clone());
        let (grown, out) = tokio::join!(
            self.grow_disk(g, &cfg, spec.disk_gib),
            self.exec_ref(&r, &script, PERSONALISE_TIMEOUT)
        );
        grown?;
        let out = out.map_err(|e| e.context(format!("personalising {}", g.label())))?;
        personalised(&g.label(), &out)?;
        stages.completed(
            Stage::ConfigureVm,
            format!("host name {}, {} SSH key(s)", spec.name, keys.len()),
        );
        self.start_and_wait(spec, g, stages).await
    }

    fn user_of(&self, spec: &VmSpec) -> String {
        spec.user.clone().unwrap_or_else(|| self.config.ci_user.clone())
    }
}

/// Whether a guest's config shows it in `mark`'s pool under pool machine `from`: its pool tag,
/// its marker tag and its description all say so.
pub(crate) fn in_pool(cfg: &GuestConfig, from: &InstanceId, mark: &PoolMark) -> bool {
    let tags = cfg.tags();
    tags.contains(&pool_tag(mark))
        && tags.contains(&instance_tag(from))
        && cfg
            .get("description")
            .as_deref()
            .and_then(owner_from_description)
            .as_ref()
            == Some(from)
}
