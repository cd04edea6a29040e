//! What the cluster offers: templates (the PVE `template` flag, never name guessing, plus
//! container template volumes), the node's capacity, and this backend's capabilities.

use berth_core::{Capabilities, Capacity, GuestKind, ProviderError, Template};

use super::ProxmoxProvider;
use super::guest::{Guest, mib, to_gib};
use crate::client::GuestType;

impl ProxmoxProvider {
    pub(crate) async fn templates(&self) -> Result<Vec<Template>, ProviderError> {
        let (resources, ct) = tokio::try_join!(
            async {
                self.client
                    .cluster_resources(Some("vm"))
                    .await
                    .map_err(ProviderError::from)
            },
            self.ct_templates()
        )?;
        let mut out: Vec<Template> = resources
            .iter()
            .filter_map(Guest::from_resource)
            .filter(|g| g.template && g.ty == GuestType::Qemu)
            .map(|g| Template {
                id: g.vmid.to_string(),
                name: g.name.clone(),
                kind: GuestKind::Vm,
                node: Some(g.node.clone()),
                disk_gib: g.disk_gib,
                format: None,
            })
            .collect();
        out.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
        out.extend(ct);
        Ok(out)
    }

    /// Container template volumes (`vztmpl`) on the configured node's storages.
    async fn ct_templates(&self) -> Result<Vec<Template>, ProviderError> {
        let node = &self.config.node;
        let storages = self.client.storages(node, Some("vztmpl")).await?;
        let mut out = Vec::new();
        for st in storages.iter().filter(|s| s.has_content("vztmpl") && s.active) {
            let Some(id) = st.storage.as_deref() else { continue };
            for v in self.client.storage_content(node, id, Some("vztmpl")).await? {
                let name = v.volid.rsplit('/').next().unwrap_or(&v.volid).to_owned();
                out.push(Template {
                    id: v.volid.clone(),
                    name,
                    kind: GuestKind::Container,
                    node: Some(node.clone()),
                    disk_gib: None,
                    format: None,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn node_capacity(&self) -> Result<Capacity, ProviderError> {
        let node = &self.config.node;
        let (status, storage, resources) = tokio::try_join!(
            self.client.node_status(node),
            self.client.storage_status(node, &self.config.storage),
            self.client.cluster_resources(Some("vm"))
        )?;
        let instances = resources
            .iter()
            .filter(|r| r.is_guest() && !r.template && r.node.as_deref() == Some(node.as_str()))
            .count();
        Ok(Capacity {
            cpus_total: status.cpuinfo.cpus.unwrap_or(0),
            memory_mib_total: status.memory.total.unwrap_or(0) / mib(1),
            memory_mib_used: status.memory.used.unwrap_or(0) / mib(1),
            disk_gib_total: storage.total.map(to_gib).unwrap_or(0),
            disk_gib_free: storage.avail.map(|b| b / (1 << 30)).unwrap_or(0),
            instances: u32::try_from(instances).unwrap_or(u32::MAX),
            node: Some(node.clone()),
        })
    }

    /// Proxmox supports everything Berth asks of a backend; the call confirms the API answers.
    pub(crate) async fn read_capabilities(&self) -> Result<Capabilities, ProviderError> {
        self.client.version().await?;
        Ok(Capabilities {
            power: true,
            vms: true,
            containers: true,
            graceful_shutdown: true,
            reboot: true,
            reconfigure: true,
            static_ip: true,
            ipv6: true,
            list_templates: true,
            capacity: true,
            pools: true,
        })
    }
}
