//! Snapshots of guests: what the snapshot, delete-snapshot and rollback workers do. A snapshot
//! keeps the guest's config (and, for a running VM with `vmstate`, its RAM); snapshots live in
//! the guest and die with it.

use std::collections::BTreeMap;

use crate::propstr::{self, drive_volume, is_cdrom, is_cloudinit};
use crate::state::{Guest, Kind, SnapshotEntry, World, unix_now};

/// Config keys a snapshot does not keep (PVE's `__snapshot_copy_config`): they describe the live
/// guest, and a rollback leaves them as they are.
const LIVE_KEYS: &[&str] = &["lock", "parent", "snapstate", "description"];

/// The lock each worker holds while it runs (PVE's names).
pub(crate) fn lock_name(what: &str) -> &'static str {
    match what {
        "snapshot" => "snapshot",
        "delete" => "snapshot-delete",
        _ => "rollback",
    }
}

/// Whether a disk of `config` sits where PVE cannot snapshot it: a raw image on file storage
/// (`dir`, `nfs`), or an unknown storage. Cloud-init and CD drives are not snapshotted.
pub(crate) fn unsupported(world: &World, node: &str, config: &BTreeMap<String, String>) -> bool {
    config
        .iter()
        .filter(|(k, v)| propstr::is_disk_key(k) && !is_cdrom(v) && !is_cloudinit(v))
        .filter_map(|(_, v)| drive_volume(v))
        .any(|volid| {
            let sid = volid.split(':').next().unwrap_or_default();
            match world.storage(sid) {
                Some(st) => st.is_file_based() && world.volume(node, &volid).is_some_and(|v| v.format == "raw"),
                None => true,
            }
        })
}

/// The guest, its worker's `lock` taken off (the handler set it when the task started).
fn guest_mut<'a>(world: &'a mut World, node: &str, kind: Kind, vmid: u32, lock: &str) -> Result<&'a mut Guest, String> {
    let g = world
        .guest_on_mut(node, kind, vmid)
        .ok_or_else(|| kind.missing_config(node, vmid))?;
    if g.lock() == Some(lock) {
        g.config.remove("lock");
    }
    Ok(g)
}

/// `qmsnapshot` / `vzsnapshot`.
pub(crate) fn take(
    world: &mut World,
    (node, kind, vmid): (&str, Kind, u32),
    name: &str,
    description: String,
    vmstate: bool,
) -> Result<Vec<String>, String> {
    let config = world
        .guest_on(node, kind, vmid)
        .ok_or_else(|| kind.missing_config(node, vmid))?
        .config
        .clone();
    let cannot = unsupported(world, node, &config);
    let g = guest_mut(world, node, kind, vmid, lock_name("snapshot"))?;
    if g.snapshots.iter().any(|s| s.name == name) {
        return Err(format!("snapshot name '{name}' already used"));
    }
    if cannot {
        return Err("snapshot feature is not available".into());
    }
    let mut kept = g.config.clone();
    for k in LIVE_KEYS {
        kept.remove(*k);
    }
    // RAM is saved only for a running VM (PVE drops `vmstate` otherwise).
    let vmstate = vmstate && g.running && kind == Kind::Qemu;
    g.snapshots.push(SnapshotEntry {
        name: name.to_owned(),
        parent: g.config.get("parent").cloned(),
        snaptime: unix_now(),
        description,
        vmstate,
        config: kept,
    });
    g.config.insert("parent".into(), name.to_owned());
    Ok(vec![format!("snapshot '{name}' created")])
}

/// `qmdelsnapshot` / `vzdelsnapshot`: the snapshots taken on top of it now sit on its parent.
pub(crate) fn delete(
    world: &mut World,
    (node, kind, vmid): (&str, Kind, u32),
    name: &str,
) -> Result<Vec<String>, String> {
    let g = guest_mut(world, node, kind, vmid, lock_name("delete"))?;
    let idx = g
        .snapshots
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
    let gone = g.snapshots.remove(idx);
    for s in &mut g.snapshots {
        if s.parent.as_deref() == Some(name) {
            s.parent.clone_from(&gone.parent);
        }
    }
    if g.config.get("parent").map(String::as_str) == Some(name) {
        match gone.parent {
            Some(p) => g.config.insert("parent".into(), p),
            None => g.config.remove("parent"),
        };
    }
    Ok(vec![format!("snapshot '{name}' removed")])
}

/// `qmrollback` / `vzrollback`: the guest gets the snapshot's config back and is stopped; it
/// runs again when the snapshot holds its RAM, or when `start` says so.
pub(crate) fn rollback(
    world: &mut World,
    (node, kind, vmid): (&str, Kind, u32),
    name: &str,
    start: bool,
) -> Result<Vec<String>, String> {
    let g = guest_mut(world, node, kind, vmid, lock_name("rollback"))?;
    let snap = g
        .snapshots
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
    let mut config = snap.config.clone();
    config.insert("parent".into(), name.to_owned());
    // Disks the guest gained since the snapshot stay, as unusedN (`__snapshot_rollback_get_unused`).
    let kept: Vec<String> = config
        .values()
        .filter_map(|v| crate::propstr::drive_volume(v))
        .collect();
    let newer: Vec<String> = g
        .config
        .iter()
        .filter(|(k, v)| (crate::propstr::is_disk_key(k) && !crate::propstr::is_cdrom(v)) || k.starts_with("unused"))
        .filter_map(|(_, v)| crate::propstr::drive_volume(v))
        .filter(|vol| !kept.contains(vol))
        .collect();
    for vol in newer {
        let n = (0..).find(|n| !config.contains_key(&format!("unused{n}"))).unwrap_or(0);
        config.insert(format!("unused{n}"), vol);
    }
    // What a snapshot does not keep stays as it is now.
    if let Some(d) = g.config.get("description") {
        config.insert("description".into(), d.clone());
    }
    g.config = config;
    g.pending.clear();
    g.pending_delete.clear();
    g.running = false;
    g.started_at = None;
    g.agent_ready_at = None;
    g.execs = Default::default();
    let mut log = vec![format!("rollback to snapshot '{name}'")];
    if snap.vmstate || start {
        log.extend(crate::actions::start(world, node, kind, vmid)?);
    }
    Ok(log)
}

/// Takes a failed or interrupted worker's lock off (as PVE's worker does on its way out).
pub(crate) fn unlock(world: &mut World, (node, kind, vmid): (&str, Kind, u32), what: &str) {
    if let Some(g) = world.guest_on_mut(node, kind, vmid)
        && g.lock() == Some(lock_name(what))
    {
        g.config.remove("lock");
    }
}
