//! Moving Berth's guests between the cluster's nodes. A running VM moves live (its disks on local
//! storage copied along), a running container is restarted on the target.

use std::time::{Duration, Instant};

use berth_core::{Instance, InstanceRef, PowerState, ProviderError};

use super::ProxmoxProvider;
use crate::client::GuestType;
use crate::client::migrate::{MigrateCheck, MigrateOptions};

impl ProxmoxProvider {
    pub(crate) async fn migrate_ref(&self, r: &InstanceRef, to: &str, online: bool) -> Result<Instance, ProviderError> {
        let g = self.owned(r).await?;
        if g.node == to {
            return Err(ProviderError::conflict(format!(
                "{} is already on node {to}",
                g.label()
            )));
        }
        let nodes: Vec<String> = self.client.nodes().await?.into_iter().map(|n| n.node).collect();
        if !nodes.iter().any(|n| n == to) {
            return Err(ProviderError::invalid(
                "to",
                format!(
                    "{} cannot move to {to}: it is not a node of this cluster ({})",
                    g.label(),
                    nodes.join(", ")
                ),
            ));
        }
        // The precondition check (PVE 8 has none for containers: 501, then PVE decides alone).
        let check = match self.client.migrate_check(&g.node, g.ty, g.vmid).await {
            Ok(c) => c,
            Err(e) if e.status() == Some(501) => MigrateCheck {
                running: self.describe_ref(r).await?.state == PowerState::Running,
                ..MigrateCheck::default()
            },
            Err(e) => return Err(e.into()),
        };
        if let Some(why) = check.not_allowed_nodes.get(to) {
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
        // An HA-managed guest's task only queues the move: wait until it is there.
        let deadline = Instant::now() + self.clone_timeout();
        loop {
            let inst = self.describe_ref(r).await?;
            if inst.node.as_deref() == Some(to) {
                return Ok(inst);
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::Timeout {
                    what: format!("{what} (still on {})", inst.node.unwrap_or_default()),
                    after: self.clone_timeout(),
                });
            }
            tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms.max(10))).await;
        }
    }
}
