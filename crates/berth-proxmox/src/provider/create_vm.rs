//! The VM steps of `create`: clone the template (the clone carries the description marker and
//! name, since a clone cannot carry tags), on the template's node with `target` when it lives
//! elsewhere, retrying a transiently failed clone on a fresh VMID; then one config update with
//! tags, cloud-init, size and agent.

use std::collections::HashSet;

use berth_core::{GuestKind, Instance, Ipv4Config, PoolMark, ProviderError, Stage, VmSpec};

use super::ProxmoxProvider;
use super::create::Made;
use super::dispatch::Dispatched;
use super::guest::Guest;
use super::marker::{description, merged_tags, pool_tag};
use super::network::GuestIps;
use super::preflight::{ClonePlan, FirstVmid};
use super::pve_params::{agent_enabled, cloudinit_slot, drive_size, ipconfig0, nameserver, prop, ssh_keys};
use super::stages::Stages;
use super::steps::{power_what, root_disk};
use super::vmid::VmidSearch;
use crate::client::types::{ClusterResource, GuestConfig};
use crate::client::{GuestType, Params, PowerAction, PveError, pve_urlencode};
use std::net::Ipv4Addr;

/// Clone attempts when the clone task itself fails transiently (storage lock timeout).
const CLONE_TASK_ATTEMPTS: u32 = 2;

impl ProxmoxProvider {
    /// Clones the template; the template's configuration is read while the clone runs (a new
    /// clone's own differs only where `Made::Clone` says). `None`: an earlier attempt's clone
    /// was found instead.
    pub(crate) async fn clone_stage(
        &self,
        spec: &VmSpec,
        plan: &ClonePlan,
        resources: &[ClusterResource],
        first_vmid: FirstVmid,
        stages: &Stages<'_>,
    ) -> Result<(Guest, Option<Made>), ProviderError> {
        let t = &plan.template;
        // Both run to their end: a failed read never abandons a clone PVE is making.
        let (cloned, template_cfg) = tokio::join!(
            self.clone_template(spec, plan, resources, first_vmid, stages),
            self.client.guest_config(&t.node, GuestType::Qemu, t.vmid)
        );
        let (guest, fresh) = cloned?;
        let made = match template_cfg {
            // The template's boot disk must say its size, or the clone's is read after all.
            Ok(cfg)
                if fresh
                    && root_disk(GuestType::Qemu, &cfg)
                        .and_then(|(_, v)| drive_size(&v))
                        .is_some() =>
            {
                Some(Made::Clone(cfg))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(vmid = t.vmid, error = %e, "template config not read; reading the clone's");
                None
            }
        };
        Ok((guest, made))
    }

    /// The clone itself; `true` when this call's clone task made the guest.
    async fn clone_template(
        &self,
        spec: &VmSpec,
        plan: &ClonePlan,
        resources: &[ClusterResource],
        first_vmid: FirstVmid,
        stages: &Stages<'_>,
    ) -> Result<(Guest, bool), ProviderError> {
        let used: HashSet<u32> = resources.iter().filter_map(|r| r.vmid).collect();
        stages.started(
            Stage::CloneTemplate,
            format!("cloning {} to node {}", plan.template.label(), self.config.node),
        );
        let mut search = VmidSearch::new(&used, Some(plan.template.node.as_str()), first_vmid);
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
            let (guest, fresh) = match dispatched {
                Dispatched::Ours(g) => (
                    self.wait_unlocked(&g, self.clone_timeout())
                        .await?
                        .ok_or_else(|| ProviderError::internal(format!("{what}: the new VM {} disappeared", g.vmid)))?,
                    false,
                ),
                Dispatched::Task { vmid, upid } => {
                    let guest = self.new_guest(spec, GuestType::Qemu, vmid);
                    match self.await_creation(&guest, &upid, &what, &spec.instance_id).await {
                        Ok(done) => (done, true),
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
            return Ok((guest, fresh));
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
            pool: None,
            tagged: ty == GuestType::Lxc,
            lock: Some(if ty == GuestType::Qemu { "clone" } else { "create" }.into()),
            status: None,
            template: false,
            cores: Some(spec.cores),
            memory_mib: Some(spec.memory_mib),
            disk_gib: Some(spec.disk_gib),
        }
    }

    /// The one config update of a create. `cfg` is the guest's configuration, or for a clone
    /// made just now its template's (`from_template`): a NIC moved to another bridge then gets
    /// a fresh MAC address from PVE, as the clone's own was.
    pub(crate) async fn apply_vm_config(
        &self,
        spec: &VmSpec,
        g: &Guest,
        cfg: &GuestConfig,
        from_template: bool,
        pool: Option<&PoolMark>,
    ) -> Result<(), ProviderError> {
        let user = spec.user.clone().unwrap_or_else(|| self.config.ci_user.clone());
        let mut tags = merged_tags(&cfg.tags(), &spec.instance_id);
        if let Some(mark) = pool {
            let t = pool_tag(mark);
            if !cfg.tags().contains(&t) {
                tags = format!("{tags};{t}");
            }
        }
        let mut p = Params::new()
            .str("tags", tags)
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
            p.push("net0", with_bridge(&net0, &self.config.bridge, !from_template));
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
        let (ips, _) = self
            .wait_network(g, static_v4(spec), &format!("{}/agent-address", g.node))
            .await?;
        stages.completed(Stage::WaitNetwork, shown(&ips));
        // Report the guest as PVE has it now (sizes included), not as we asked for it.
        let st = self.client.guest_status(&g.node, g.ty, g.vmid).await?;
        cur.apply_status(&st);
        Ok(cur.to_instance(ips.v4, ips.v6))
    }

    /// start_vm and wait_network for a guest this call made and configured (so it is stopped,
    /// and has what the create asked for: it is reported without a read-back). Its addresses
    /// are looked for while it starts: a guest that reports them runs, so its start is done.
    pub(crate) async fn start_new(
        &self,
        spec: &VmSpec,
        g: &Guest,
        stages: &Stages<'_>,
    ) -> Result<Instance, ProviderError> {
        stages.started(Stage::StartVm, format!("starting {}", g.label()));
        let upid = self.send_power(g, PowerAction::Start, Params::new()).await?;
        let what = power_what(g, PowerAction::Start);
        let started = self.power_done(upid.as_ref(), PowerAction::Start, self.task_timeout(), &what);
        let key = format!("{}/{}/start-to-address", g.node, g.ty.label());
        let network = self.wait_network(g, static_v4(spec), &key);
        let running = || {
            stages.completed(Stage::StartVm, format!("{} is running", g.label()));
            stages.started(Stage::WaitNetwork, format!("waiting for an address of {}", g.label()));
        };
        tokio::pin!(started, network);
        let ips = tokio::select! {
            biased;
            done = &mut started => {
                done?;
                running();
                network.await?.0
            }
            found = &mut network => match found {
                Ok((ips, reported)) => {
                    if !reported {
                        // Nothing in the guest answered: only the start task says it runs.
                        started.await?;
                    }
                    running();
                    ips
                }
                Err(e) => {
                    // The start's own failure says more, and the task must end before the
                    // half-made guest can be removed.
                    started.await?;
                    return Err(e);
                }
            },
        };
        // A cancellation may land here as after any other stage event (the address may have
        // been there already when the start was seen to end: nothing else is awaited then).
        tokio::task::yield_now().await;
        stages.completed(Stage::WaitNetwork, shown(&ips));
        let mut cur = g.clone();
        cur.status = Some("running".into());
        cur.lock = None;
        Ok(cur.to_instance(ips.v4, ips.v6))
    }
}

/// The static IPv4 address the spec asks for, which the guest must report.
fn static_v4(spec: &VmSpec) -> Option<Ipv4Addr> {
    match spec.network.ipv4 {
        Ipv4Config::Static { address, .. } => Some(address),
        Ipv4Config::Dhcp => None,
    }
}

/// The address shown when the network stage completes.
fn shown(ips: &GuestIps) -> String {
    ips.v4.map(|a| a.to_string()).unwrap_or_default()
}

/// Replaces the `bridge=` of a `net0` property string, keeping model and the rest, and the MAC
/// address when `keep_mac` (without one, PVE makes a new one).
fn with_bridge(net0: &str, bridge: &str, keep_mac: bool) -> String {
    let mut parts: Vec<String> = net0
        .split(',')
        .filter(|p| !p.starts_with("bridge=") && (keep_mac || !p.starts_with("macaddr=")))
        .map(|p| match p.split_once('=') {
            // `virtio=BC:24:…` is the model with its MAC.
            Some((model, mac)) if !keep_mac && mac.contains(':') => model.to_owned(),
            _ => p.to_owned(),
        })
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
            with_bridge("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", "vmbr1", true),
            "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1"
        );
        assert_eq!(
            with_bridge("virtio=BC:24:11:00:00:01", "vmbr1", true),
            "virtio=BC:24:11:00:00:01,bridge=vmbr1"
        );
        // A template's NIC: its MAC is not the clone's, so PVE makes a new one.
        assert_eq!(
            with_bridge("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", "vmbr1", false),
            "virtio,bridge=vmbr1,firewall=1"
        );
        assert_eq!(
            with_bridge("model=e1000,macaddr=BC:24:11:00:00:01,bridge=vmbr0", "vmbr1", false),
            "model=e1000,bridge=vmbr1"
        );
    }
}
