//! The VM steps of `create`: clone the template (the clone carries the description marker and
//! name, since a clone cannot carry tags), on the template's node with `target` when it lives
//! elsewhere, retrying a transiently failed clone on a fresh VMID; then one config update with
//! tags, cloud-init, size and agent.

use std::collections::HashSet;

use berth_core::{GuestKind, Instance, Ipv4Config, ProviderError, Stage, VmSpec};

use super::ProxmoxProvider;
use super::dispatch::Dispatched;
use super::guest::Guest;
use super::marker::{description, merged_tags};
use super::preflight::ClonePlan;
use super::pve_params::{agent_enabled, cloudinit_slot, ipconfig0, nameserver, prop, ssh_keys};
use super::stages::Stages;
use super::vmid::VmidSearch;
use crate::client::types::{ClusterResource, GuestConfig};
use crate::client::{GuestType, Params, PveError, pve_urlencode};

/// Clone attempts when the clone task itself fails transiently (storage lock timeout).
const CLONE_TASK_ATTEMPTS: u32 = 2;

impl ProxmoxProvider {
    pub(crate) async fn clone_stage(
        &self,
        spec: &VmSpec,
        plan: &ClonePlan,
        resources: &[ClusterResource],
        stages: &Stages<'_>,
    ) -> Result<Guest, ProviderError> {
        let used: HashSet<u32> = resources.iter().filter_map(|r| r.vmid).collect();
        stages.started(
            Stage::CloneTemplate,
            format!("cloning {} to node {}", plan.template.label(), self.config.node),
        );
        let mut search = VmidSearch::new(&used, Some(plan.template.node.as_str()));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let what = format!("clone of {}", plan.template.label());
            let dispatched = self
                .dispatch_new(
                    &spec.instance_id,
                    GuestType::Qemu,
                    &mut search,
                    |vmid| {
                        let params = self.clone_params(spec, plan, vmid);
                        async move {
                            self.client
                                .clone_vm(&plan.template.node, plan.template.vmid, &params)
                                .await
                        }
                    },
                    |e| clone_error(e, plan),
                )
                .await?;
            let guest = match dispatched {
                Dispatched::Ours(g) => self
                    .wait_unlocked(&g, self.clone_timeout())
                    .await?
                    .ok_or_else(|| ProviderError::internal(format!("{what}: the new VM {} disappeared", g.vmid)))?,
                Dispatched::Task { vmid, upid } => {
                    let guest = self.new_guest(spec, GuestType::Qemu, vmid);
                    match self.await_creation(&guest, &upid, &what, &spec.instance_id).await {
                        Ok(done) => done,
                        Err(f) => {
                            let transient = matches!(f.error, ProviderError::Unavailable { .. });
                            if transient && f.removed && attempt < CLONE_TASK_ATTEMPTS {
                                tracing::warn!(error = %f.error, "clone task failed transiently; cloning again");
                                continue;
                            }
                            return Err(f.error);
                        }
                    }
                }
            };
            stages.completed(Stage::CloneTemplate, guest.label());
            return Ok(guest);
        }
    }

    fn clone_params(&self, spec: &VmSpec, plan: &ClonePlan, vmid: u32) -> Params {
        let mut p = Params::new()
            .int("newid", vmid)
            .str("name", spec.name.clone())
            .str("description", description(&spec.instance_id))
            .bool("full", plan.full)
            .opt_str("storage", plan.storage.clone())
            .opt_str("pool", self.config.pool.clone());
        if plan.cross_node {
            p.push("target", self.config.node.clone());
        }
        p
    }

    /// A guest this call just asked PVE to make.
    pub(crate) fn new_guest(&self, spec: &VmSpec, ty: GuestType, vmid: u32) -> Guest {
        Guest {
            vmid,
            node: self.config.node.clone(),
            ty,
            name: spec.name.clone(),
            owner: Some(spec.instance_id.clone()),
            tagged: ty == GuestType::Lxc,
            lock: Some(if ty == GuestType::Qemu { "clone" } else { "create" }.into()),
            status: None,
            template: false,
            cores: Some(spec.cores),
            memory_mib: Some(spec.memory_mib),
            disk_gib: Some(spec.disk_gib),
        }
    }

    pub(crate) async fn apply_vm_config(
        &self,
        spec: &VmSpec,
        g: &Guest,
        cfg: &GuestConfig,
    ) -> Result<(), ProviderError> {
        let user = spec.user.clone().unwrap_or_else(|| self.config.ci_user.clone());
        let mut p = Params::new()
            .str("tags", merged_tags(&cfg.tags(), &spec.instance_id))
            .str("ciuser", user)
            .int("cores", spec.cores)
            .int("memory", spec.memory_mib)
            .str("ipconfig0", ipconfig0(&spec.network))
            .opt_str("sshkeys", ssh_keys(spec).map(|k| pve_urlencode(&k)))
            .opt_str("nameserver", nameserver(spec, &self.config));
        if !agent_enabled(cfg) {
            p.push("agent", "1");
        }
        if let Some(slot) = cloudinit_slot(cfg) {
            tracing::info!(
                vmid = g.vmid,
                "the template has no cloud-init drive; adding one as {slot}"
            );
            p.push(slot, format!("{}:cloudinit", self.config.storage));
        }
        if let Some(net0) = cfg.get("net0")
            && prop(&net0, "bridge").as_deref() != Some(self.config.bridge.as_str())
        {
            p.push("net0", with_bridge(&net0, &self.config.bridge));
        }
        let what = format!("configuring {}", g.label());
        match self.client.update_config(&g.node, g.ty, g.vmid, &p).await {
            Ok(()) => Ok(()),
            Err(e) if e.locked_by().is_some() => {
                self.wait_unlocked(g, self.clone_timeout()).await?;
                self.client
                    .update_config(&g.node, g.ty, g.vmid, &p)
                    .await
                    .map_err(|e| ProviderError::from(e).context(&what))
            }
            Err(e) => Err(ProviderError::from(e).context(&what)),
        }
    }

    /// start_vm (skipped if running) and wait_network; the finished instance.
    pub(crate) async fn start_and_wait(
        &self,
        spec: &VmSpec,
        g: &Guest,
        stages: &Stages<'_>,
    ) -> Result<Instance, ProviderError> {
        let st = self.client.guest_status(&g.node, g.ty, g.vmid).await?;
        let mut cur = g.clone();
        cur.apply_status(&st);
        if cur.is_running() {
            stages.skipped(Stage::StartVm, format!("{} is already running", g.label()));
        } else {
            stages.started(Stage::StartVm, format!("starting {}", g.label()));
            self.start_guest(g).await?;
            stages.completed(Stage::StartVm, format!("{} is running", g.label()));
        }
        stages.started(Stage::WaitNetwork, format!("waiting for an address of {}", g.label()));
        let expected = match spec.network.ipv4 {
            Ipv4Config::Static { address, .. } => Some(address),
            Ipv4Config::Dhcp => None,
        };
        let ips = self.wait_network(g, expected).await?;
        let shown = ips.v4.map(|a| a.to_string()).unwrap_or_default();
        stages.completed(Stage::WaitNetwork, shown);
        // Report the guest as PVE has it now (sizes included), not as we asked for it.
        let st = self.client.guest_status(&g.node, g.ty, g.vmid).await?;
        cur.apply_status(&st);
        Ok(cur.to_instance(ips.v4, ips.v6))
    }
}

/// Replaces the `bridge=` of a `net0` property string, keeping model, MAC and the rest.
fn with_bridge(net0: &str, bridge: &str) -> String {
    let mut parts: Vec<String> = net0
        .split(',')
        .filter(|p| !p.starts_with("bridge="))
        .map(str::to_owned)
        .collect();
    parts.insert(1.min(parts.len()), format!("bridge={bridge}"));
    parts.join(",")
}

pub(crate) fn check_kind(g: &Guest, want: GuestKind) -> Result<(), ProviderError> {
    if g.kind() == want {
        return Ok(());
    }
    Err(ProviderError::conflict(format!(
        "instance {} already exists as {} (a {}), not as a {want}",
        g.owner.as_ref().map(ToString::to_string).unwrap_or_default(),
        g.label(),
        g.kind()
    )))
}

/// Clone refusals that are about the template or the clone mode, named as such.
fn clone_error(e: PveError, plan: &ClonePlan) -> ProviderError {
    let text = e.to_string();
    let tpl = plan.template.label();
    if text.contains("uses local storage")
        || text.contains("non-shared storage")
        || text.contains("not available on node")
    {
        return ProviderError::invalid("template", format!("{tpl} cannot be cloned to this node: {text}"));
    }
    if text.contains("clone feature is not supported") {
        return ProviderError::unsupported(format!(
            "cloning {tpl} this way is not supported by its storage ({text}); set full_clone = true"
        ));
    }
    ProviderError::from(e).context(format!("clone of {tpl}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_is_replaced_in_place() {
        assert_eq!(
            with_bridge("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", "vmbr1"),
            "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1"
        );
        assert_eq!(
            with_bridge("virtio=BC:24:11:00:00:01", "vmbr1"),
            "virtio=BC:24:11:00:00:01,bridge=vmbr1"
        );
    }
}
