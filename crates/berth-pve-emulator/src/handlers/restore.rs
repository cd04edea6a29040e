//! Restoring a guest from a vzdump archive: `POST /nodes/{node}/qemu` with `archive`
//! (`qmrestore`) and `POST /nodes/{node}/lxc` with `restore=1` and the archive as `ostemplate`
//! (`vzrestore`). The archive holds the config and volumes as backed up (`run_vzdump` keeps
//! them); the restore allocates the volumes anew for the VMID, points the config at them and
//! makes a fresh cloud-init drive. Where: a VM's disks on the storages they were on unless
//! `storage` names one for all (qmrestore); a container's volumes all on `storage`, `local`
//! when not given (pve-container's `extract_param($param, 'storage') // 'local'`). Snapshots
//! and unused disks are not in a backup. Texts as qemu-server's and pve-container's.

use std::collections::BTreeMap;

use super::guest::{check_allocate, spawn};
use crate::actions::TaskAction;
use crate::api::{ApiError, ApiResult, Ctx, parse_vmid};
use crate::propstr::{drive_volume, is_cloudinit};
use crate::state::{Guest, Kind, World};

/// A restore under way.
#[derive(Clone)]
pub(crate) struct RestoreJob {
    pub node: String,
    pub vmid: u32,
    pub kind: Kind,
    pub archive: String,
    pub storage: Option<String>,
    /// Replaces the guest already at `vmid` (`force=1`).
    pub force: bool,
    pub pool: Option<String>,
}

/// Starts a restore of `archive` as guest `vmid` on `node` (`kind` is the endpoint's).
pub(super) fn start(ctx: &mut Ctx, node: &str, kind: Kind, archive: &str) -> ApiResult {
    let p = ctx.params.clone();
    let vmid = parse_vmid("vmid", p.required("vmid")?)?;
    let force = p.flag("force")?;
    if p.flag("start")? {
        return Err(ApiError::fail("starting a guest as it is restored is not emulated"));
    }
    let pool = p.get("pool").map(str::to_string);
    let storage = match kind {
        Kind::Qemu => p.get("storage").map(str::to_string),
        Kind::Lxc => Some(p.get("storage").unwrap_or("local").to_string()),
    };
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    check_allocate(&world, &ctx.token, pool.as_deref(), vmid)?;
    let what = if kind == Kind::Qemu { "VM" } else { "CT" };
    let image = world
        .volume(node, archive)
        .filter(|v| v.content == "backup")
        .and_then(|_| world.backups.get(archive))
        .ok_or_else(|| ApiError::fail(format!("volume '{archive}' does not exist")))?;
    if image.kind != kind {
        return Err(ApiError::fail(format!(
            "unable to restore {what} {vmid} - the archive '{archive}' is a {} backup",
            image.kind.label()
        )));
    }
    if let Some(sid) = &storage {
        let st = world.storage_for_alloc(sid, node).map_err(ApiError::fail)?;
        let (content, what) = match kind {
            Kind::Qemu => ("images", "vm images"),
            Kind::Lxc => ("rootdir", "container directories"),
        };
        if !st.supports(content) {
            return Err(ApiError::fail(format!("storage '{sid}' does not support {what}")));
        }
    }
    match world.guests.get(&vmid) {
        Some(g) if !force => {
            return Err(ApiError::fail(format!(
                "unable to restore {what} {vmid} - {what} {vmid} already exists on node '{}'",
                g.node
            )));
        }
        Some(g) if g.node != node || g.kind != kind => {
            return Err(ApiError::fail(format!(
                "unable to restore {what} {vmid} - {} {vmid} is on node '{}'",
                g.kind.label(),
                g.node
            )));
        }
        Some(g) if g.running => {
            return Err(ApiError::fail(format!(
                "unable to restore {what} {vmid} - {what} is running"
            )));
        }
        Some(_) => {}
        None => {
            let temp = BTreeMap::from([("lock".to_string(), "create".to_string())]);
            world.guests.insert(vmid, Guest::new(vmid, node, kind, temp));
        }
    }
    let job = RestoreJob {
        node: node.to_string(),
        vmid,
        kind,
        archive: archive.to_string(),
        storage,
        force,
        pool,
    };
    let duration = world.timings.clone;
    let task = if kind == Kind::Qemu { "qmrestore" } else { "vzrestore" };
    spawn(
        ctx,
        &mut world,
        node,
        task,
        vmid,
        duration,
        TaskAction::Restore(Box::new(job)),
    )
}

/// The worker: the guest at `vmid` replaced (with `force`), the archive's volumes made anew,
/// the config pointed at them.
pub(crate) fn finish(world: &mut World, job: RestoreJob) -> Result<Vec<String>, String> {
    let RestoreJob {
        node,
        vmid,
        kind,
        archive,
        storage,
        force,
        pool,
    } = job;
    let image = world
        .backups
        .get(&archive)
        .cloned()
        .ok_or_else(|| format!("volume '{archive}' does not exist"))?;
    let mut log = vec![format!("restore {} archive '{archive}'", kind.as_str())];
    let placeholder = world
        .guest_on(&node, kind, vmid)
        .is_some_and(|g| g.lock() == Some("create"));
    if force && !placeholder && world.guest_on(&node, kind, vmid).is_some() {
        log.extend(crate::actions::destroy(world, &node, kind, vmid, true)?);
    }
    let mut config = image.config.clone();
    config.retain(|k, _| !k.starts_with("unused"));
    for vol in &image.volumes {
        let old = vol.volid();
        let sid = storage.clone().unwrap_or_else(|| vol.storage.clone());
        let n = world.next_disk_index(&sid, &node, vmid);
        let v = world.new_volume(&sid, vmid, &format!("disk-{n}"), vol.size, None, &vol.content);
        let new = world.insert_volume(&node, v);
        for value in config.values_mut() {
            if drive_volume(value).as_deref() == Some(old.as_str()) {
                *value = value.replacen(&old, &new, 1);
            }
        }
        log.push(format!("new volume '{new}' (restored from '{old}')"));
    }
    // A fresh cloud-init drive where the config had one.
    let drives: Vec<(String, String)> = config
        .iter()
        .filter(|(_, v)| is_cloudinit(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in drives {
        let old = drive_volume(&value).unwrap_or_default();
        let sid = storage
            .clone()
            .unwrap_or_else(|| old.split(':').next().unwrap_or_default().to_string());
        let new = world.alloc_cloudinit(&node, &sid, vmid);
        config.insert(key, value.replacen(&old, &new, 1));
    }
    for k in ["lock", "parent"] {
        config.remove(k);
    }
    world.guests.insert(vmid, Guest::new(vmid, &node, kind, config));
    if let Some(p) = pool.and_then(|p| world.pools.get_mut(&p)) {
        p.vms.insert(vmid);
    }
    log.push(format!("restore of {} {vmid} finished", kind.label()));
    Ok(log)
}
