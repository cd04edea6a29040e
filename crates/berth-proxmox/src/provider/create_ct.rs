//! Creating an LXC container, resumably: the create call carries the tags and description
//! marker itself, so a found container is resumed; otherwise the spec is checked, the
//! container created from its template volume, started, and waited for. A container this call
//! made is removed again if a later step fails.

use std::collections::HashSet;

use berth_core::{Instance, ProviderError, Stage, VmSpec};

use super::ProxmoxProvider;
use super::dispatch::Dispatched;
use super::guest::{Guest, gib};
use super::marker::{TAG, description, instance_tag, merged_tags};
use super::pve_params::{drive_size, lxc_net0, nameserver, ssh_keys};
use super::stages::Stages;
use super::steps::root_disk;
use crate::client::types::ClusterResource;
use crate::client::{GuestType, Params};

impl ProxmoxProvider {
    pub(crate) async fn create_ct_stage(
        &self,
        spec: &VmSpec,
        ostemplate: &str,
        resources: &[ClusterResource],
        stages: &Stages<'_>,
    ) -> Result<Guest, ProviderError> {
        let used: HashSet<u32> = resources.iter().filter_map(|r| r.vmid).collect();
        let node = &self.config.node;
        stages.started(
            Stage::CloneTemplate,
            format!("creating a container from {ostemplate} on node {node}"),
        );
        let mut next = 0;
        let dispatched = self
            .dispatch_new(
                &spec.instance_id,
                GuestType::Lxc,
                &used,
                &mut next,
                |vmid| {
                    let params = self.ct_params(spec, ostemplate, vmid);
                    async move { self.client.create_container(node, &params).await }
                },
                |e| ProviderError::from(e).context(format!("creating a container from {ostemplate}")),
            )
            .await?;
        let what = format!("creating a container from {ostemplate}");
        let guest = match dispatched {
            Dispatched::Ours(g) => self
                .wait_unlocked(&g, self.clone_timeout())
                .await?
                .ok_or_else(|| ProviderError::internal(format!("{what}: the new container {} disappeared", g.vmid)))?,
            Dispatched::Task { vmid, upid } => {
                let guest = self.new_guest(spec, GuestType::Lxc, vmid);
                self.await_creation(&guest, &upid, &what, &spec.instance_id)
                    .await
                    .map_err(|f| f.error)?
            }
        };
        stages.completed(Stage::CloneTemplate, guest.label());
        Ok(guest)
    }

    fn ct_params(&self, spec: &VmSpec, ostemplate: &str, vmid: u32) -> Params {
        Params::new()
            .int("vmid", vmid)
            .str("ostemplate", ostemplate)
            .str("hostname", spec.name.clone())
            .opt_str("ssh-public-keys", ssh_keys(spec))
            .str("net0", lxc_net0(&self.config.bridge, &spec.network))
            .str("rootfs", format!("{}:{}", self.config.storage, spec.disk_gib))
            .int("cores", spec.cores)
            .int("memory", spec.memory_mib)
            .str("tags", format!("{TAG};{}", instance_tag(&spec.instance_id)))
            .str("description", description(&spec.instance_id))
            .opt_str("pool", self.config.pool.clone())
            .opt_str("nameserver", nameserver(spec, &self.config))
            .bool("unprivileged", true)
    }

    /// configure_vm (tags and size were set at creation; repaired if missing), start, network.
    pub(crate) async fn finish_ct(
        &self,
        spec: &VmSpec,
        g: &Guest,
        made_now: bool,
        stages: &Stages<'_>,
    ) -> Result<Instance, ProviderError> {
        let cfg = self.client.guest_config(&g.node, g.ty, g.vmid).await?;
        let tagged = cfg.tags().contains(&instance_tag(&spec.instance_id));
        let disk_small = root_disk(g.ty, &cfg)
            .and_then(|(_, v)| drive_size(&v))
            .is_none_or(|size| size < gib(spec.disk_gib));
        if made_now || !tagged || disk_small {
            stages.started(
                Stage::ConfigureVm,
                format!("checking the configuration of {}", g.label()),
            );
            if !tagged {
                let p = Params::new().str("tags", merged_tags(&cfg.tags(), &spec.instance_id));
                self.client.update_config(&g.node, g.ty, g.vmid, &p).await?;
            }
            self.grow_disk(g, &cfg, spec.disk_gib).await?;
            stages.completed(
                Stage::ConfigureVm,
                format!("{} cores, {} MiB, {} GiB", spec.cores, spec.memory_mib, spec.disk_gib),
            );
        } else {
            stages.skipped(Stage::ConfigureVm, format!("{} is already configured", g.label()));
        }
        self.start_and_wait(spec, g, stages).await
    }
}
