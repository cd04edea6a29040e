//! Moving Berth's guests between the cluster's nodes. A running VM moves live (its disks on local
//! storage copied along), a running container is restarted on the target.

use berth_core::{Instance, InstanceRef, ProviderError};

use super::ProxmoxProvider;
use crate::client::GuestType;
use crate::client::migrate::MigrateOptions;

impl ProxmoxProvider {
    pub(crate) async fn migrate_ref(&self, r: &InstanceRef, to: &str, online: bool) -> Result<Instance, ProviderError> {
        let g = self.owned(r).await?;
        if g.node == to {
            return Err(ProviderError::conflict(format!(
                "{} is already on node {to}",
                g.label()
            )));
        }
        let check = self.client.migrate_check(&g.node, g.ty, g.vmid).await?;
        if !check.allowed_nodes.iter().any(|n| n == to) {
            let why = check.not_allowed_nodes.get(to).map_or_else(
                || "not a node of this cluster, or offline".to_owned(),
                |v| v.to_string(),
            );
            return Err(ProviderError::invalid(
                "to",
                format!("{} cannot move to {to}: {why}", g.label()),
            ));
        }
        if check.running && !online {
            return Err(ProviderError::invalid(
                "online",
                format!("{} is running: move it with --online, or stop it first", g.label()),
            ));
        }
        let o = MigrateOptions {
            online: online && g.ty == GuestType::Qemu && check.running,
            restart: online && g.ty == GuestType::Lxc && check.running,
            with_local_disks: check.running && !check.local_disks.is_empty(),
        };
        let what = format!("migration of {} to {to}", g.label());
        let upid = self
            .client
            .migrate(&g.node, g.ty, g.vmid, to, o)
            .await
            .map_err(|e| ProviderError::from(e).context(&what))?;
        self.run_task(&upid, self.clone_timeout(), &what).await?;
        self.describe_ref(r).await
    }
}
