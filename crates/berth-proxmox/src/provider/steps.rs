//! Building blocks shared by create, power and delete: waiting for a task or a lock, starting
//! and stopping a guest, resizing its disk, and removing a half-made guest after a failure.

use crate::client::Poll;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use berth_core::{InstanceId, ProviderError};

use super::ProxmoxProvider;
use super::guest::{Guest, gib};
use super::marker::{owner_from_description, owner_from_tags};
use super::pve_params::{boot_disk, drive_size};
use crate::client::types::GuestConfig;
use crate::client::{GuestType, Params, PowerAction, PveError, Upid};

impl ProxmoxProvider {
    /// Waits for a task; the error names `what` and carries PVE's exit status and log tail.
    pub(crate) async fn run_task(&self, upid: &Upid, timeout: Duration, what: &str) -> Result<(), ProviderError> {
        match self.client.wait_task(upid, timeout).await {
            Ok(outcome) => {
                if !outcome.warnings.is_empty() {
                    tracing::warn!(task = %upid, "{what} finished with warnings: {}", outcome.warnings.join(" | "));
                }
                Ok(())
            }
            Err(e) => Err(task_error(e, what)),
        }
    }

    /// Polls until the guest has no lock. `Ok(None)` if it disappeared meanwhile (a failed
    /// clone removes itself). Creation locks (`clone`, `create`) may last up to `timeout`; any
    /// other lock (backup, migrate, suspended, …) is not waited for: a `Conflict` naming it.
    pub(crate) async fn wait_unlocked(&self, g: &Guest, timeout: Duration) -> Result<Option<Guest>, ProviderError> {
        let poll = Poll::new(self.poll_interval());
        loop {
            let st = match self.client.guest_status(&g.node, g.ty, g.vmid).await {
                Ok(st) => st,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let mut cur = g.clone();
            cur.apply_status(&st);
            let Some(lock) = cur.lock.clone() else {
                return Ok(Some(cur));
            };
            if !is_creation_lock(&lock) {
                return Err(locked_conflict(g, &lock));
            }
            if poll.elapsed() >= timeout {
                return Err(ProviderError::Timeout {
                    what: format!("{} to lose its '{lock}' lock", g.label()),
                    after: timeout,
                });
            }
            poll.sleep(timeout).await;
        }
    }

    /// Starts a guest and waits for the start task; an already running guest is fine.
    pub(crate) async fn start_guest(&self, g: &Guest) -> Result<(), ProviderError> {
        self.power_task(g, PowerAction::Start, Params::new(), self.task_timeout())
            .await
    }

    /// Hard-stops a guest and waits; an already stopped guest is fine.
    pub(crate) async fn stop_guest(&self, g: &Guest) -> Result<(), ProviderError> {
        self.power_task(g, PowerAction::Stop, Params::new(), self.task_timeout())
            .await
    }

    pub(crate) async fn power_task(
        &self,
        g: &Guest,
        action: PowerAction,
        params: Params,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let what = power_what(g, action);
        let upid = self.send_power(g, action, params).await?;
        self.power_done(upid.as_ref(), action, timeout, &what).await
    }

    /// Asks for a power action; `None` when the guest is already in that state.
    pub(crate) async fn send_power(
        &self,
        g: &Guest,
        action: PowerAction,
        params: Params,
    ) -> Result<Option<Upid>, ProviderError> {
        match self.client.power(&g.node, g.ty, g.vmid, action, &params).await {
            Ok(u) => Ok(Some(u)),
            Err(e) if already_in_state(&e, action) => Ok(None),
            Err(e) => Err(ProviderError::from(e).context(power_what(g, action))),
        }
    }

    /// Waits for the task of `send_power` (nothing to wait for when it had nothing to do).
    pub(crate) async fn power_done(
        &self,
        upid: Option<&Upid>,
        action: PowerAction,
        timeout: Duration,
        what: &str,
    ) -> Result<(), ProviderError> {
        let Some(upid) = upid else { return Ok(()) };
        match self.client.wait_task(upid, timeout).await {
            Ok(_) => Ok(()),
            Err(e) if already_in_state(&e, action) => Ok(()),
            Err(e) => Err(task_error(e, what)),
        }
    }

    /// Grows the boot disk (VM) or root disk (container) to `disk_gib` if it is smaller.
    /// Returns whether it resized. Never shrinks.
    pub(crate) async fn grow_disk(&self, g: &Guest, cfg: &GuestConfig, disk_gib: u64) -> Result<bool, ProviderError> {
        let Some((key, value)) = root_disk(g.ty, cfg) else {
            return Err(ProviderError::internal(format!(
                "{} has no boot disk to resize",
                g.label()
            )));
        };
        let current = drive_size(&value).unwrap_or(0);
        if gib(disk_gib) <= current {
            return Ok(false);
        }
        let what = format!("resize of {} {key} to {disk_gib} GiB", g.label());
        let upid = self
            .client
            .resize_disk(&g.node, g.ty, g.vmid, &key, &format!("{disk_gib}G"))
            .await
            .map_err(|e| ProviderError::from(e).context(&what))?;
        if let Some(upid) = upid {
            self.run_task(&upid, self.task_timeout(), &what).await?;
        }
        Ok(true)
    }

    /// Removes a guest this create made before it failed: stop, delete with purge, wait. Only a
    /// guest that carries `id`'s marker is touched. Errors are logged (the caller returns the
    /// original error); `true` when the guest is gone afterwards.
    pub(crate) async fn remove_half_made(&self, g: &Guest, id: &InstanceId) -> bool {
        let cfg = match self.client.guest_config(&g.node, g.ty, g.vmid).await {
            Ok(cfg) => cfg,
            Err(e) if e.is_not_found() => return true,
            Err(e) => {
                tracing::error!(vmid = g.vmid, error = %e, "cannot check half-made {} for removal", g.label());
                return false;
            }
        };
        let by_desc = cfg.get("description").as_deref().and_then(owner_from_description);
        let by_tags = owner_from_tags(&cfg.tags());
        if by_desc.as_ref() != Some(id) && by_tags.as_ref() != Some(id) {
            tracing::warn!(
                vmid = g.vmid,
                "not removing {}: it does not carry the marker of {id}",
                g.label()
            );
            return false;
        }
        tracing::warn!(vmid = g.vmid, node = %g.node, "removing half-made {}", g.label());
        match self.destroy(g).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(vmid = g.vmid, error = %e, "could not remove half-made {}; remove it by hand", g.label());
                false
            }
        }
    }

    /// Stops (if running) and deletes a guest, waiting for each task. Absent is success.
    pub(crate) async fn destroy(&self, g: &Guest) -> Result<bool, ProviderError> {
        let Some(cur) = self.wait_unlocked(g, self.clone_timeout()).await? else {
            return Ok(false);
        };
        if cur.is_running() || cur.status.as_deref() == Some("paused") {
            self.stop_guest(&cur).await?;
        }
        let what = format!("delete of {}", cur.label());
        let upid = match self.client.delete_guest(&cur.node, cur.ty, cur.vmid).await {
            Ok(u) => u,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(ProviderError::from(e).context(&what)),
        };
        self.run_task(&upid, self.task_timeout(), &what).await?;
        Ok(true)
    }
}

/// `start of VM 100 (web)`: the power action, for errors.
pub(crate) fn power_what(g: &Guest, action: PowerAction) -> String {
    format!("{action:?} of {}", g.label()).to_lowercase()
}

/// The disk that `disk_gib` describes: the boot disk of a VM, `rootfs` of a container.
pub(crate) fn root_disk(ty: GuestType, cfg: &GuestConfig) -> Option<(String, String)> {
    match ty {
        GuestType::Qemu => boot_disk(cfg),
        GuestType::Lxc => cfg.get("rootfs").map(|v| ("rootfs".to_owned(), v)),
    }
}

/// The locks PVE holds while it makes a guest (`clone`, `create`): they end with that task.
pub(crate) fn is_creation_lock(lock: &str) -> bool {
    matches!(lock, "clone" | "create")
}

/// A guest held by a lock Berth does not wait for, named, with what to do about it.
pub(crate) fn locked_conflict(g: &Guest, lock: &str) -> ProviderError {
    let hint = match lock {
        "suspended" => "it is hibernated; start it to resume it, then try again",
        "backup" | "migrate" | "snapshot" | "snapshot-delete" | "rollback" | "disk" | "mounted" => {
            "another operation holds it; try again when that has finished"
        }
        _ => "remove the lock (`qm unlock` / `pct unlock`) if nothing holds it any more",
    };
    ProviderError::conflict(format!("{} is locked ({lock}): {hint}", g.label()))
}

/// `VM 100 already running` / `CT 100 already running`.
static ALREADY_RUNNING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:VM|CT) \d+ already running$").expect("valid regex"));
/// `VM 100 not running` / `CT 100 not running`.
static NOT_RUNNING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:VM|CT) \d+ not running$").expect("valid regex"));

/// PVE's ways of saying the power action has nothing to do: the whole message of a refused
/// request, or the exit status of a failed task (never the task log or other text, where e.g.
/// `QEMU guest agent is not running` would otherwise read as "not running").
fn already_in_state(e: &PveError, action: PowerAction) -> bool {
    let text = match e {
        PveError::Api { message, .. } => message.trim(),
        PveError::TaskFailed { exitstatus, .. } => exitstatus.trim(),
        _ => return false,
    };
    match action {
        PowerAction::Start => ALREADY_RUNNING.is_match(text),
        PowerAction::Stop | PowerAction::Shutdown => NOT_RUNNING.is_match(text),
        PowerAction::Reboot | PowerAction::Resume => false,
    }
}

/// A failed wait as a `ProviderError`: timeouts stay timeouts; a task that failed on a lock
/// timeout is transient; other task failures are internal errors with PVE's text.
pub(crate) fn task_error(e: PveError, what: &str) -> ProviderError {
    match &e {
        PveError::TaskFailed { .. } if e.is_lock_timeout() => ProviderError::unavailable(format!("{what}: {e}")),
        PveError::Timeout { after, .. } => ProviderError::Timeout {
            what: format!("{what} ({e})"),
            after: *after,
        },
        _ => ProviderError::from(e).context(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn api(message: &str) -> PveError {
        PveError::Api {
            method: "POST",
            path: "/nodes/pve1/qemu/100/status/shutdown".into(),
            status: 500,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    fn task(exitstatus: &str, log: &[&str]) -> PveError {
        PveError::TaskFailed {
            upid: "UPID:pve1:00000001:00000001:00000001:qmshutdown:100:root@pam:".into(),
            exitstatus: exitstatus.into(),
            log_tail: log.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn already_in_state_matches_only_pves_own_message() {
        use PowerAction::*;
        assert!(already_in_state(&api("VM 100 not running"), Shutdown));
        assert!(already_in_state(&task("CT 200 not running", &[]), Stop));
        assert!(already_in_state(&task("VM 100 already running", &[]), Start));
        assert!(already_in_state(&api("VM 100 already running\n"), Start));
        // The agent, not the VM, is not running: a real failure.
        assert!(!already_in_state(&api("QEMU guest agent is not running"), Shutdown));
        assert!(!already_in_state(
            &task("QEMU guest agent is not running", &[]),
            Shutdown
        ));
        // Only the exit status counts, never the task log.
        assert!(!already_in_state(
            &task("shutdown failed", &["VM 100 not running"]),
            Shutdown
        ));
        assert!(!already_in_state(
            &task("start failed: QEMU exited with code 1", &["VM 100 already running"]),
            Start
        ));
        assert!(!already_in_state(&api("VM 100 not running"), Start));
        assert!(!already_in_state(&api("VM 100 not running"), Reboot));
    }
}
