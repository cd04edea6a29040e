//! Checkpoints: before an apply restarts or moves a guest (VM or container) it takes a snapshot
//! of it, and before it deletes one it writes a backup (snapshots die with the guest). `rollback` puts the
//! snapshotted VMs back; it is itself shown before it runs.

use std::time::Duration;

use berth_proxmox::client::{GuestType, Params, PveClient};
use serde::{Deserialize, Serialize};

use crate::apply::{ApplyError, pve};
use crate::plan::{Action, Change};

/// What was kept before a risky change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Checkpoint {
    /// A snapshot `name` of VM `vmid` on `node`; `running` whether it ran when taken.
    Snapshot {
        addr: String,
        node: String,
        vmid: u32,
        name: String,
        running: bool,
    },
    /// A vzdump backup of guest `vmid` on `storage`, written before it was deleted; `volid` the
    /// backup volume (none: not found after the backup, or an older record); where a restore
    /// puts it back: its pool, and for a container the storage of its root disk (PVE restores
    /// every volume of a container to one storage).
    Backup {
        addr: String,
        node: String,
        vmid: u32,
        storage: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        volid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore_to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
    },
}

impl Checkpoint {
    pub fn addr(&self) -> &str {
        match self {
            Checkpoint::Snapshot { addr, .. } | Checkpoint::Backup { addr, .. } => addr,
        }
    }
}

/// A checkpointed guest's type, from its address (`vm.150`, `ct.200`).
pub(crate) fn guest_type(addr: &str) -> GuestType {
    if addr.starts_with("ct.") {
        GuestType::Lxc
    } else {
        GuestType::Qemu
    }
}

/// The snapshot name of an apply: `berth-<id>` (PVE's format: a letter first, at most 40).
pub fn snapshot_name(apply_id: &str) -> String {
    format!("berth-{}", &apply_id[..apply_id.len().min(30)])
}

/// Whether a VM change needs a checkpoint first, and which.
/// Not before a move, a grow or a disk move: PVE refuses to migrate local disks with snapshots
/// and to resize qcow2 images that have them.
pub(crate) fn needed(ch: &Change) -> bool {
    match ch.action {
        Action::Delete => true,
        Action::UpdateRestart { .. } => !ch
            .fields
            .iter()
            .any(|f| f.field.ends_with(".size") || f.field.ends_with(".storage")),
        _ => false,
    }
}

/// Takes the checkpoint `ch` needs. A snapshot the storage cannot take is a warning (the change
/// still runs); a delete without a backup is refused unless `no_backup`.
pub(crate) async fn take(
    c: &PveClient,
    ch: &Change,
    apply_id: &str,
    opts: &crate::apply::ApplyOptions,
    t: Duration,
) -> Result<(Option<Checkpoint>, Option<String>), ApplyError> {
    let no_backup = opts.no_backup;
    let before = ch.before.as_ref();
    let node = before.and_then(|b| b.get("node")).cloned().unwrap_or_default();
    let running = before.and_then(|b| b.get("state")).is_some_and(|s| s == "running");
    let vmid = crate::vm_apply::vmid_of(ch);
    let ty = guest_type(&ch.addr);
    if ch.action == Action::Delete {
        // Resumed: the backup the first attempt wrote stands (a second one of a half-deleted VM
        // would be worth less, and could prune the first).
        let earlier = opts
            .earlier
            .iter()
            .find(|cp| matches!(cp, Checkpoint::Backup { .. }) && cp.addr() == ch.addr);
        if let Some(Checkpoint::Backup { storage, .. }) = earlier {
            return Ok((
                None,
                Some(format!("{}: backed up to {storage} by the first attempt", ch.addr)),
            ));
        }
        if no_backup {
            return Ok((
                None,
                Some(format!("{}: deleted without a backup (--no-backup)", ch.addr)),
            ));
        }
        let storages = c
            .storages(&node, Some("backup"))
            .await
            .map_err(pve(&ch.addr, "find backup storage"))?;
        let Some(storage) = storages
            .into_iter()
            .find(|s| s.enabled && s.active)
            .and_then(|s| s.storage)
        else {
            return Err(ApplyError::NoBackup {
                addr: ch.addr.clone(),
                node,
            });
        };
        let p = Params::new()
            .str("vmid", vmid.to_string())
            .str("storage", storage.clone())
            .str("mode", "snapshot");
        let upid = c.vzdump(&node, &p).await.map_err(pve(&ch.addr, "backup"))?;
        c.wait_task(&upid, t).await.map_err(pve(&ch.addr, "backup"))?;
        // The newest backup of this guest on that storage is the one just written.
        let volid = c
            .storage_content(&node, &storage, Some("backup"))
            .await
            .map_err(pve(&ch.addr, "find the backup"))?
            .into_iter()
            .filter(|v| v.vmid == Some(vmid))
            .max_by_key(|v| (v.ctime, v.volid.clone()))
            .map(|v| v.volid);
        let step = format!(
            "{}: backed up to {} first",
            ch.addr,
            volid.as_deref().unwrap_or(&storage)
        );
        let cp = Checkpoint::Backup {
            addr: ch.addr.clone(),
            node,
            vmid,
            storage,
            volid,
            restore_to: (ty == GuestType::Lxc)
                .then(|| before.and_then(|b| b.get("rootfs.storage")).cloned())
                .flatten(),
            pool: before.and_then(|b| b.get("pool")).cloned(),
        };
        return Ok((Some(cp), Some(step)));
    }
    let name = snapshot_name(apply_id);
    let made = async {
        let upid = c
            .create_snapshot(&node, ty, vmid, &name, &format!("before apply {apply_id}"), false)
            .await?;
        c.wait_task(&upid, t).await
    };
    let seen = match made.await {
        Ok(_) => "",
        Err(e) => {
            // The snapshot of this apply is there all the same (made by a first attempt that
            // was resumed, or PVE made it but its task was not seen to end): it is the checkpoint.
            let have = c.snapshots(&node, ty, vmid).await.unwrap_or_default();
            if !have.iter().any(|s| s.name == name) {
                return Ok((None, Some(format!("{}: warning: no checkpoint ({e})", ch.addr))));
            }
            " (already there)"
        }
    };
    let step = format!("{}: checkpoint snapshot {name}{seen}", ch.addr);
    let cp = Checkpoint::Snapshot {
        addr: ch.addr.clone(),
        node,
        vmid,
        name,
        running,
    };
    Ok((Some(cp), Some(step)))
}

/// The command that restores a backup of the guest at `addr` by hand.
fn restore_tool(addr: &str) -> &'static str {
    match guest_type(addr) {
        GuestType::Lxc => "pct restore",
        GuestType::Qemu => "qmrestore",
    }
}

/// What `rollback` would do, a line each.
pub fn rollback_steps(checkpoints: &[Checkpoint]) -> Vec<String> {
    checkpoints
        .iter()
        .map(|cp| match cp {
            Checkpoint::Snapshot {
                addr, name, running, ..
            } => format!(
                "roll {addr} back to snapshot {name}{} (writes since are lost)",
                if *running { ", then start it" } else { "" }
            ),
            Checkpoint::Backup {
                addr,
                volid: Some(volid),
                ..
            } => format!("restore {addr} from its backup {volid} (if its VMID is still free)"),
            Checkpoint::Backup { addr, storage, .. } => format!(
                "{addr} was deleted; its backup is on {storage} (restore it with {})",
                restore_tool(addr)
            ),
        })
        .collect()
}

/// Puts the snapshotted guests back (a guest moved since is found where it is now) and restores
/// the deleted ones from their backups, where their VMID is still free (a guest made there
/// since is never overwritten: that is said, with the command that would). One checkpoint that
/// fails does not stop the others: the rollback then ends `RollbackIncomplete`, saying each.
pub async fn rollback(c: &PveClient, checkpoints: &[Checkpoint], t: Duration) -> Result<Vec<String>, ApplyError> {
    let mut done = Vec::new();
    let mut failed = 0;
    let where_now = c.cluster_resources(Some("vm")).await.map_err(pve("cluster", "read"))?;
    for cp in checkpoints {
        match put_back(c, cp, &where_now, t).await {
            Ok(Some(line)) => done.push(line),
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                done.push(format!("FAILED: {e}"));
            }
        }
    }
    if failed > 0 {
        return Err(ApplyError::RollbackIncomplete { failed, lines: done });
    }
    Ok(done)
}

/// One checkpoint put back: what was done (none: nothing to do for it).
async fn put_back(
    c: &PveClient,
    cp: &Checkpoint,
    where_now: &[berth_proxmox::client::types::ClusterResource],
    t: Duration,
) -> Result<Option<String>, ApplyError> {
    let (addr, node, vmid, name, running) = match cp {
        Checkpoint::Snapshot {
            addr,
            node,
            vmid,
            name,
            running,
        } => (addr, node, vmid, name, running),
        Checkpoint::Backup {
            addr,
            node,
            vmid,
            volid: Some(volid),
            restore_to,
            pool,
            ..
        } => {
            if let Some(now) = where_now.iter().find(|r| r.vmid == Some(*vmid)) {
                return Ok(Some(format!(
                    "{addr}: not restored: VMID {vmid} is taken again (on {}); `{} --force {volid} {vmid}` would replace it",
                    now.node.as_deref().unwrap_or("?"),
                    restore_tool(addr)
                )));
            }
            let upid = c
                .restore_guest(
                    node,
                    guest_type(addr),
                    *vmid,
                    volid,
                    restore_to.as_deref(),
                    pool.as_deref(),
                )
                .await
                .map_err(pve(addr, "restore"))?;
            c.wait_task(&upid, t).await.map_err(pve(addr, "restore"))?;
            return Ok(Some(format!("{addr}: restored from {volid}")));
        }
        Checkpoint::Backup { .. } => return Ok(None),
    };
    let node = where_now
        .iter()
        .find(|r| r.vmid == Some(*vmid))
        .and_then(|r| r.node.clone())
        .unwrap_or_else(|| node.clone());
    let upid = c
        .rollback_snapshot(&node, guest_type(addr), *vmid, name, *running)
        .await
        .map_err(pve(addr, "rollback"))?;
    c.wait_task(&upid, t).await.map_err(pve(addr, "rollback"))?;
    Ok(Some(format!("{addr}: rolled back to {name}")))
}
