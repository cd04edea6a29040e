//! describe, list, reconfigure and delete. Reads use one `/cluster/resources` call (plus
//! addresses of running guests); mutations require Berth's marker.

use berth_core::{
    DeleteOutcome, Instance, InstanceId, InstanceRef, ListFilter, PoolMark, ProviderError, ReconfigureOutcome, Resize,
};
use futures::StreamExt;

use super::ProxmoxProvider;
use super::guest::{Guest, gib, to_gib};
use super::marker::owner_from_description;
use super::pve_params::drive_size;
use super::steps::root_disk;
use crate::client::{GuestType, Params};

/// Concurrent address look-ups while listing.
const LIST_CONCURRENCY: usize = 8;

fn not_found(r: &InstanceRef) -> ProviderError {
    ProviderError::not_found(match r {
        InstanceRef::Id(id) => format!("instance {id} (no Proxmox guest carries its marker)"),
        InstanceRef::Backend(b) => format!("Proxmox guest {b}"),
    })
}

impl ProxmoxProvider {
    /// The guest as it is now: fresh status from `status/current`, addresses if running.
    pub(crate) async fn instance_of(&self, g: &Guest) -> Result<Instance, ProviderError> {
        let mut cur = g.clone();
        match self.client.guest_status(&g.node, g.ty, g.vmid).await {
            Ok(st) => cur.apply_status(&st),
            Err(e) if e.is_not_found() => {
                return Err(ProviderError::not_found(format!("{} (it disappeared)", g.label())));
            }
            Err(e) => return Err(e.into()),
        }
        let ips = self.current_ips(&cur).await;
        Ok(cur.to_instance(ips.v4, ips.v6))
    }

    pub(crate) async fn describe_ref(&self, r: &InstanceRef) -> Result<Instance, ProviderError> {
        let g = self.locate(r).await?.ok_or_else(|| not_found(r))?;
        self.instance_of(&g).await
    }

    /// Locates a guest for a mutation: absent is `NotFound`, unmarked is `Conflict`.
    pub(crate) async fn owned(&self, r: &InstanceRef) -> Result<Guest, ProviderError> {
        let g = self.locate(r).await?.ok_or_else(|| not_found(r))?;
        Self::require_owned(&g)?;
        Ok(g)
    }

    /// Takes a pool machine out of its pool (its pool tag removed by a digest-guarded update)
    /// before it is destroyed, so a take racing the delete either commits first (`false`: the
    /// machine is the instance's, and is left alone) or finds it no longer in the pool.
    async fn retire(&self, g: &Guest, id: &InstanceId, mark: &PoolMark) -> Result<bool, ProviderError> {
        let cfg = self.client.guest_config(&g.node, g.ty, g.vmid).await?;
        if !super::pool::in_pool(&cfg, id, mark) {
            return Ok(cfg
                .get("description")
                .as_deref()
                .and_then(owner_from_description)
                .as_ref()
                == Some(id));
        }
        let tags: Vec<String> = cfg
            .tags()
            .into_iter()
            .filter(|t| *t != super::marker::pool_tag(mark))
            .collect();
        let p = Params::new()
            .str("tags", tags.join(";"))
            .opt_str("digest", cfg.get("digest"));
        match self.client.update_config(&g.node, g.ty, g.vmid, &p).await {
            Ok(()) => Ok(true),
            Err(e) => {
                // Changed meanwhile: whose it is now decides.
                let now = self
                    .client
                    .guest_config(&g.node, g.ty, g.vmid)
                    .await
                    .map_err(|_| ProviderError::from(e))?;
                Ok(now
                    .get("description")
                    .as_deref()
                    .and_then(owner_from_description)
                    .as_ref()
                    == Some(id))
            }
        }
    }

    pub(crate) async fn list_guests(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        let resources = self.client.cluster_resources(Some("vm")).await?;
        let mut guests: Vec<Guest> = resources
            .iter()
            .filter_map(Guest::from_resource)
            .filter(|g| !g.template && filter.kind.is_none_or(|k| k == g.kind()))
            .collect();
        self.mark_interrupted(&mut guests).await?;
        if !filter.all {
            guests.retain(|g| g.owner.is_some());
        }
        guests.sort_by_key(|g| g.vmid);
        let instances = futures::stream::iter(guests)
            .map(|g| async move {
                if filter.without_addresses {
                    return g.to_instance(None, None);
                }
                let ips = self.current_ips(&g).await;
                g.to_instance(ips.v4, ips.v6)
            })
            .buffered(LIST_CONCURRENCY)
            .collect()
            .await;
        Ok(instances)
    }

    /// Untagged guests inside Berth's VMID range may be creates interrupted before configure:
    /// their description tells. (Only those are read, so foreign guests cost nothing.)
    async fn mark_interrupted(&self, guests: &mut [Guest]) -> Result<(), ProviderError> {
        let range = self.config.vmid_min..=self.config.vmid_max;
        for g in guests.iter_mut().filter(|g| !g.tagged && range.contains(&g.vmid)) {
            match self.client.guest_config(&g.node, g.ty, g.vmid).await {
                Ok(cfg) => g.owner = cfg.get("description").as_deref().and_then(owner_from_description),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub(crate) async fn reconfigure_ref(
        &self,
        r: &InstanceRef,
        change: &Resize,
    ) -> Result<ReconfigureOutcome, ProviderError> {
        change.validate()?;
        let g = self.owned(r).await?;
        let (cfg, st) = tokio::try_join!(
            self.client.guest_config(&g.node, g.ty, g.vmid),
            self.client.guest_status(&g.node, g.ty, g.vmid)
        )?;
        let mut cur = g.clone();
        cur.apply_status(&st);
        let current_disk = root_disk(g.ty, &cfg).and_then(|(_, v)| drive_size(&v));
        if let (Some(want), Some(have)) = (change.disk_gib, current_disk)
            && gib(want) < have
        {
            return Err(ProviderError::invalid(
                "disk_gib",
                format!(
                    "disks only grow: {} has {} GiB, {want} GiB asked",
                    g.label(),
                    to_gib(have)
                ),
            ));
        }
        if change.cores.is_some() || change.memory_mib.is_some() {
            self.check_node_fits(&g.node, change.cores, change.memory_mib).await?;
        }
        let mut p = Params::new();
        if let Some(c) = change
            .cores
            .filter(|c| Some(*c) != cfg.get_u64("cores").map(|v| v as u32))
        {
            p.push("cores", c.to_string());
        }
        if let Some(m) = change.memory_mib.filter(|m| Some(*m) != cfg.get_u64("memory")) {
            p.push("memory", m.to_string());
        }
        let what = format!("reconfiguring {}", g.label());
        if !p.is_empty() {
            self.client
                .update_config(&g.node, g.ty, g.vmid, &p)
                .await
                .map_err(|e| ProviderError::from(e).context(&what))?;
        }
        if let Some(d) = change.disk_gib {
            self.grow_disk(&g, &cfg, d).await?;
        }
        // QEMU applies CPU and memory changes of a running VM at the next start (pending);
        // LXC applies them live.
        let restart_required = !p.is_empty() && cur.is_running() && g.ty == GuestType::Qemu;
        Ok(ReconfigureOutcome { restart_required })
    }

    pub(crate) async fn delete_ref(&self, r: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        let Some(g) = self.locate(r).await? else {
            return Ok(DeleteOutcome::AlreadyAbsent);
        };
        Self::require_owned(&g)?;
        if let (Some(mark), InstanceRef::Id(id)) = (&g.pool, r)
            && !self.retire(&g, id, mark).await?
        {
            // Taken by an order before it could be retired: it is that instance's now.
            return Ok(DeleteOutcome::AlreadyAbsent);
        }
        if self.destroy(&g).await? {
            Ok(DeleteOutcome::Deleted)
        } else {
            Ok(DeleteOutcome::AlreadyAbsent)
        }
    }
}
