//! The container steps of `create`: make an LXC container from its template volume, with the
//! tags and the description marker in the create call itself (so a container is never
//! unmarked), and wait for the creating task.

use std::collections::HashSet;

use berth_core::{ProviderError, Stage, VmSpec};

use super::ProxmoxProvider;
use super::create::Made;
use super::dispatch::Dispatched;
use super::guest::Guest;
use super::marker::{TAG, description, instance_tag};
use super::preflight::FirstVmid;
use super::pve_params::{lxc_net0, nameserver, ssh_keys};
use super::stages::Stages;
use super::vmid::VmidSearch;
use crate::client::types::ClusterResource;
use crate::client::{GuestType, Params};

impl ProxmoxProvider {
    pub(crate) async fn create_ct_stage(
        &self,
        spec: &VmSpec,
        ostemplate: &str,
        resources: &[ClusterResource],
        first_vmid: FirstVmid,
        stages: &Stages<'_>,
    ) -> Result<(Guest, Option<Made>), ProviderError> {
        let used: HashSet<u32> = resources.iter().filter_map(|r| r.vmid).collect();
        let node = &self.config.node;
        stages.started(
            Stage::CloneTemplate,
            format!("creating a container from {ostemplate} on node {node}"),
        );
        let mut search = VmidSearch::new(&used, None, first_vmid);
        let dispatched = self
            .dispatch_new(
                &spec.instance_id,
                GuestType::Lxc,
                &mut search,
                |vmid| {
                    let params = self.ct_params(spec, ostemplate, vmid);
                    async move { self.client.create_container(node, &params).await }
                },
                |e| ProviderError::from(e).context(format!("creating a container from {ostemplate}")),
            )
            .await?;
        let what = format!("creating a container from {ostemplate}");
        let (guest, made) = match dispatched {
            Dispatched::Ours(g) => (
                self.wait_unlocked(&g, self.clone_timeout()).await?.ok_or_else(|| {
                    ProviderError::internal(format!("{what}: the new container {} disappeared", g.vmid))
                })?,
                None,
            ),
            Dispatched::Task { vmid, upid } => {
                let guest = self.new_guest(spec, GuestType::Lxc, vmid);
                let done = self
                    .await_creation(&guest, &upid, &what, &spec.instance_id)
                    .await
                    .map_err(|f| f.error)?;
                (done, Some(Made::Container))
            }
        };
        stages.completed(Stage::CloneTemplate, guest.label());
        Ok((guest, made))
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
}
