//! Checks a spec against the live cluster before anything is created: the node exists, is
//! online and is big enough; the template exists, is a template and can be cloned to the node;
//! the storage exists there with the right content. Every refusal names the field.

use berth_core::{GuestKind, ProviderError, VmSpec};

use super::ProxmoxProvider;
use super::guest::{Guest, mib};
use super::pve_params::{cloned_volumes, volume_storage};
use super::vmid::candidate;
use crate::client::GuestType;
use crate::client::types::{ClusterResource, StorageInfo};
use crate::config::validate_ct_template;

/// What to clone, where from, and with which clone options.
#[derive(Debug, Clone)]
pub(crate) struct ClonePlan {
    pub template: Guest,
    /// `storage` for a full clone (omitted for linked clones and when the target cannot take it).
    pub storage: Option<String>,
    pub full: bool,
    /// The template lives on another node: clone there with `target=<node>`.
    pub cross_node: bool,
}

/// The checks of a create that need nothing from `/cluster/resources`, asked at the same time
/// as it (one round trip instead of two or three); judged only once the instance is known not
/// to exist already.
pub(crate) struct EarlyChecks {
    node: Result<(), ProviderError>,
    storage: Result<StorageInfo, ProviderError>,
    /// Containers: the template volume exists on the node.
    ct_template: Option<Result<String, ProviderError>>,
    /// Whether the instance's first VMID candidate is free (`GET /cluster/nextid?vmid=N`).
    first_vmid: FirstVmid,
}

/// The answer about the first VMID candidate, asked early (`VmidSearch` uses it once).
pub(crate) type FirstVmid = (u32, Result<bool, ProviderError>);

/// What the early checks found, once judged.
pub(crate) struct Passed {
    pub storage: StorageInfo,
    /// Containers: the template volume.
    pub ostemplate: Option<String>,
    pub first_vmid: FirstVmid,
}

impl EarlyChecks {
    /// The first refusal, in the order container template (a bad one is named before any
    /// request), node, storage.
    pub(crate) fn judge(self) -> Result<Passed, ProviderError> {
        let ostemplate = self.ct_template.transpose()?;
        self.node?;
        Ok(Passed {
            storage: self.storage?,
            ostemplate,
            first_vmid: self.first_vmid,
        })
    }
}

impl ProxmoxProvider {
    /// Node, storage, container template and the first VMID candidate, all at once (and, the
    /// first time, the node's task history, to pace the waits that follow).
    pub(crate) async fn early_checks(&self, spec: &VmSpec) -> EarlyChecks {
        let first = candidate(&spec.instance_id, 0, self.config.vmid_min, self.config.vmid_max);
        let content = match spec.kind {
            GuestKind::Vm => "images",
            GuestKind::Container => "rootdir",
        };
        let ct = async {
            match spec.kind {
                GuestKind::Vm => None,
                GuestKind::Container => Some(self.check_ct_template(spec).await),
            }
        };
        let (node, storage, ct_template, free, ()) = tokio::join!(
            self.check_node_fits(&self.config.node, Some(spec.cores), Some(spec.memory_mib)),
            self.target_storage(content),
            ct,
            async { self.client.vmid_is_free(first).await.map_err(ProviderError::from) },
            self.client.learn_from_history(&self.config.node)
        );
        EarlyChecks {
            node,
            storage,
            ct_template,
            first_vmid: (first, free),
        }
    }

    /// The node exists, is online, and has at least the cores and memory the spec asks for.
    pub(crate) async fn check_node_fits(
        &self,
        node: &str,
        cores: Option<u32>,
        memory_mib: Option<u64>,
    ) -> Result<(), ProviderError> {
        let nodes = self.client.nodes().await?;
        let Some(info) = nodes.iter().find(|n| n.node == node) else {
            let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
            return Err(ProviderError::invalid(
                "node",
                format!(
                    "node '{node}' is not in the cluster (nodes: {}); fix `node` in the configuration",
                    names.join(", ")
                ),
            ));
        };
        if info.status.as_deref().is_some_and(|s| s != "online") {
            return Err(ProviderError::unavailable(format!(
                "node '{node}' is {}",
                info.status.as_deref().unwrap_or("?")
            )));
        }
        if let (Some(c), Some(max)) = (cores, info.maxcpu)
            && f64::from(c) > max
        {
            return Err(ProviderError::invalid(
                "cores",
                format!("{c} cores is more than node '{node}' has ({max} CPUs)"),
            ));
        }
        if let (Some(m), Some(max)) = (memory_mib, info.maxmem)
            && mib(m) > max
        {
            return Err(ProviderError::invalid(
                "memory_mib",
                format!("{m} MiB is more than node '{node}' has in total ({} MiB)", max / mib(1)),
            ));
        }
        Ok(())
    }

    /// The configured storage on the configured node, checked for `content` (`images`/`rootdir`).
    pub(crate) async fn target_storage(&self, content: &str) -> Result<StorageInfo, ProviderError> {
        let (node, want) = (&self.config.node, &self.config.storage);
        let list = self.client.storages(node, None).await?;
        let Some(st) = list.into_iter().find(|s| s.storage.as_deref() == Some(want.as_str())) else {
            return Err(ProviderError::invalid(
                "storage",
                format!("storage '{want}' does not exist on node '{node}'"),
            ));
        };
        if !st.enabled || !st.active {
            return Err(ProviderError::invalid(
                "storage",
                format!("storage '{want}' is not active on node '{node}'"),
            ));
        }
        if !st.has_content(content) {
            return Err(ProviderError::invalid(
                "storage",
                format!(
                    "storage '{want}' on node '{node}' does not hold '{content}' (its content is {})",
                    st.content.as_deref().unwrap_or("empty")
                ),
            ));
        }
        Ok(st)
    }

    /// Everything a VM clone needs, checked; nothing is changed.
    pub(crate) async fn preflight_vm(
        &self,
        spec: &VmSpec,
        resources: &[ClusterResource],
        early: EarlyChecks,
    ) -> Result<(ClonePlan, FirstVmid), ProviderError> {
        let template = self.resolve_template(spec.template.as_deref(), resources)?;
        if let Some(max) = template.disk_gib
            && max > spec.disk_gib
        {
            return Err(ProviderError::invalid(
                "disk_gib",
                format!(
                    "{} GiB is smaller than the template's disk ({max} GiB); disks can only grow",
                    spec.disk_gib
                ),
            ));
        }
        let Passed {
            storage, first_vmid, ..
        } = early.judge()?;
        let full = self.config.full_clone;
        let cross_node = template.node != self.config.node;
        let mut plan = ClonePlan {
            storage: full.then(|| self.config.storage.clone()),
            template,
            full,
            cross_node,
        };
        if cross_node {
            self.check_cross_node(&plan.template).await?;
            if full && !storage.shared {
                tracing::info!(
                    storage = %self.config.storage,
                    "cross-node clone: '{}' is not shared, the disks stay on the template's shared storage",
                    self.config.storage
                );
                plan.storage = None;
            }
        }
        Ok((plan, first_vmid))
    }

    /// `spec.template` (a VMID or a template name) or the configured default, as a QEMU template.
    /// A name prefers the template on the configured node; a template on another node is
    /// replaced by a same-named one on the configured node when there is one.
    fn resolve_template(&self, want: Option<&str>, resources: &[ClusterResource]) -> Result<Guest, ProviderError> {
        let guests: Vec<Guest> = resources.iter().filter_map(Guest::from_resource).collect();
        let want = want
            .map(str::to_owned)
            .unwrap_or_else(|| self.config.template_vmid.to_string());
        let node = &self.config.node;
        let chosen = if let Ok(vmid) = want.parse::<u32>() {
            let Some(g) = guests.iter().find(|g| g.vmid == vmid) else {
                return Err(ProviderError::invalid(
                    "template",
                    format!("no VM with id {vmid} exists in the cluster"),
                ));
            };
            if g.ty != GuestType::Qemu || !g.template {
                return Err(ProviderError::invalid(
                    "template",
                    format!(
                        "{} is not a VM template; choose a template (see `list_templates`)",
                        g.label()
                    ),
                ));
            }
            g.clone()
        } else {
            let mut named: Vec<&Guest> = guests
                .iter()
                .filter(|g| g.template && g.ty == GuestType::Qemu && g.name == want)
                .collect();
            named.sort_by_key(|g| (&g.node != node, g.vmid));
            match named.first() {
                Some(g) => (*g).clone(),
                None => {
                    return Err(ProviderError::invalid(
                        "template",
                        format!("no VM template named '{want}' exists"),
                    ));
                }
            }
        };
        if &chosen.node != node
            && let Some(local) = guests
                .iter()
                .find(|g| g.template && g.ty == GuestType::Qemu && &g.node == node && g.name == chosen.name)
        {
            tracing::info!(
                template = chosen.vmid,
                local = local.vmid,
                "using the same-named template on node {node}"
            );
            return Ok(local.clone());
        }
        Ok(chosen)
    }

    /// A template on another node can be cloned to ours only if every disk is on shared storage.
    async fn check_cross_node(&self, template: &Guest) -> Result<(), ProviderError> {
        let (cfg, storages) = tokio::try_join!(
            self.client.guest_config(&template.node, GuestType::Qemu, template.vmid),
            self.client.storages(&template.node, None)
        )?;
        for (key, value) in cloned_volumes(&cfg) {
            let Some(st) = volume_storage(&value) else { continue };
            let shared = storages.iter().any(|s| s.storage.as_deref() == Some(st) && s.shared);
            if !shared {
                return Err(ProviderError::invalid(
                    "template",
                    format!(
                        "{} is on another node and its {key} is on local storage '{st}', so it cannot be cloned to \
                         node '{}'; use a template on '{}' or keep the template on shared storage",
                        template.label(),
                        self.config.node,
                        self.config.node
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The container template volume of `spec` (or the configured default), checked to exist.
    async fn check_ct_template(&self, spec: &VmSpec) -> Result<String, ProviderError> {
        let ostemplate = match (&spec.template, &self.config.ct_template) {
            (Some(t), _) => t.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => {
                return Err(ProviderError::invalid(
                    "template",
                    "a container needs a template volume: give one in the spec or set ct_template in the configuration",
                ));
            }
        };
        validate_ct_template(&ostemplate).map_err(|m| ProviderError::invalid("template", m))?;
        self.check_ct_volume(&ostemplate).await?;
        Ok(ostemplate)
    }

    async fn check_ct_volume(&self, ostemplate: &str) -> Result<(), ProviderError> {
        let node = &self.config.node;
        let storage = ostemplate.split_once(':').map(|(s, _)| s).unwrap_or_default();
        let volumes = match self.client.storage_content(node, storage, Some("vztmpl")).await {
            Ok(v) => v,
            Err(e) if e.status().is_some_and(|s| s < 500) || e.is_missing_object() => {
                return Err(ProviderError::invalid(
                    "template",
                    format!("cannot list container templates on storage '{storage}' of node '{node}': {e}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if volumes.iter().any(|v| v.volid == ostemplate) {
            Ok(())
        } else {
            Err(ProviderError::invalid(
                "template",
                format!("container template '{ostemplate}' does not exist on node '{node}'"),
            ))
        }
    }
}
