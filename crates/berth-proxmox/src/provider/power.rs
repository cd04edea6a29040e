//! Power operations: start, hard stop, graceful shutdown with a forced stop after the timeout,
//! and reboot. Each is idempotent and returns the instance as it is afterwards.

use std::time::Duration;

use berth_core::{Instance, InstanceRef, PowerOp, ProviderError};

use super::ProxmoxProvider;
use crate::client::{Params, PowerAction};

impl ProxmoxProvider {
    pub(crate) async fn power_ref(&self, r: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        let g = self.owned(r).await?;
        let st = self.client.guest_status(&g.node, g.ty, g.vmid).await?;
        let mut cur = g.clone();
        cur.apply_status(&st);
        // A hibernated VM (`lock: suspended`) is stopped with its RAM saved: PVE's start resumes
        // it despite the lock, so it is not waited for. Any other lock is waited for only while
        // the guest is being made; otherwise it is a Conflict naming the lock.
        if cur.lock.as_deref().is_some_and(|l| l != "suspended") {
            cur = self
                .wait_unlocked(&cur, self.clone_timeout())
                .await?
                .ok_or_else(|| ProviderError::not_found(format!("{} (it disappeared)", g.label())))?;
        }
        let running = cur.is_running();
        let paused = cur.status.as_deref() == Some("paused");
        match op {
            PowerOp::Start if paused => {
                self.power_task(&cur, PowerAction::Resume, Params::new(), self.task_timeout())
                    .await?
            }
            PowerOp::Start if !running => self.start_guest(&cur).await?,
            PowerOp::Stop if running || paused => self.stop_guest(&cur).await?,
            PowerOp::Shutdown { timeout_secs } if running || paused => self.shutdown(&cur, timeout_secs).await?,
            PowerOp::Reboot if running => {
                self.power_task(&cur, PowerAction::Reboot, Params::new(), self.task_timeout())
                    .await?
            }
            // Rebooting a stopped machine means bringing it up.
            PowerOp::Reboot => self.start_guest(&cur).await?,
            _ => tracing::debug!(
                vmid = g.vmid,
                "{op}: nothing to do, {} is already {}",
                g.label(),
                cur.state()
            ),
        }
        self.instance_of(&cur).await
    }

    /// ACPI/agent shutdown; PVE hard-stops it after `timeout_secs` (`forceStop=1`). If it still
    /// runs afterwards, stop it.
    async fn shutdown(&self, g: &super::guest::Guest, timeout_secs: u64) -> Result<(), ProviderError> {
        let params = Params::new().int("timeout", timeout_secs).bool("forceStop", true);
        let wait = Duration::from_secs(timeout_secs) + self.task_timeout();
        if let Err(e) = self.power_task(g, PowerAction::Shutdown, params, wait).await {
            tracing::warn!(vmid = g.vmid, error = %e, "graceful shutdown failed; stopping hard");
        }
        let st = self.client.guest_status(&g.node, g.ty, g.vmid).await?;
        if st.status.as_deref() != Some("stopped") {
            self.stop_guest(g).await?;
        }
        Ok(())
    }
}
