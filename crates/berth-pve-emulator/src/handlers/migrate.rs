//! Moving guests and their disks: `…/migrate` (the GET precondition check and the task; online
//! for running VMs, `restart` for containers, local disks only with `with-local-disks`),
//! `qemu/…/move_disk` and `lxc/…/move_volume`. Texts as qemu-server and pve-container word them.

use serde_json::{Value, json};

use super::guest::{guest, spawn};
use crate::actions::TaskAction;
use crate::api::{ApiError, ApiResult, Ctx};
use crate::propstr::{drive_volume, is_cdrom, is_disk_key, set_drive_volume};
use crate::state::{Guest, Kind, World};

/// A guest's disks on storage the target node cannot see as the same storage (not shared).
fn local_disks(world: &World, g: &Guest) -> Vec<(String, String)> {
    g.config
        .iter()
        .filter(|(k, v)| (is_disk_key(k) && !is_cdrom(v)) || k.starts_with("unused"))
        .filter_map(|(k, v)| Some((k.clone(), drive_volume(v)?)))
        .filter(|(_, volid)| {
            let sid = volid.split(':').next().unwrap_or_default();
            world.storage(sid).is_some_and(|s| !s.shared)
        })
        .collect()
}

/// Storages of the guest's disks that `target` does not have.
fn unavailable(world: &World, g: &Guest, target: &str) -> Vec<String> {
    let mut out: Vec<String> = g
        .config
        .iter()
        .filter(|(k, v)| (is_disk_key(k) && !is_cdrom(v)) || k.starts_with("unused"))
        .filter_map(|(_, v)| drive_volume(v))
        .filter_map(|volid| volid.split(':').next().map(str::to_string))
        .filter(|sid| world.storage_for_alloc(sid, target).is_err())
        .collect();
    out.dedup();
    out
}

/// `GET …/migrate`: what a migration would meet.
pub(super) fn precondition(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let world = ctx.world();
    // The container check came with pve-container 6.0.8 (PVE 9).
    if kind == Kind::Lxc && world.pve_major < 9 {
        return Err(ApiError::Status(
            501,
            "Method 'GET /nodes/{node}/lxc/{vmid}/migrate' not implemented".into(),
        ));
    }
    ctx.token.check_vm(&world, vmid, &["VM.Migrate"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    let mut allowed = Vec::new();
    let mut not_allowed = serde_json::Map::new();
    for n in world.nodes.iter().filter(|n| n.name != node) {
        let missing = unavailable(&world, g, &n.name);
        if missing.is_empty() && n.online {
            allowed.push(json!(n.name));
        } else {
            not_allowed.insert(n.name.clone(), json!({ "unavailable_storages": missing }));
        }
    }
    let disks: Vec<Value> = local_disks(&world, g)
        .into_iter()
        .map(|(key, volid)| {
            let size = world.volume(node, &volid).map_or(0, |v| v.size);
            json!({ "volid": volid, "drivename": key, "size": size, "is_unused": u8::from(key.starts_with("unused")) })
        })
        .collect();
    let (nodes_key, not_key) = match kind {
        Kind::Qemu => ("allowed_nodes", "not_allowed_nodes"),
        Kind::Lxc => ("allowed-nodes", "not-allowed-nodes"),
    };
    let mut v = json!({ "running": u8::from(g.running), nodes_key: allowed, not_key: not_allowed });
    if kind == Kind::Qemu {
        v["local_disks"] = json!(disks);
        v["local_resources"] = json!([]);
        v["mapped-resources"] = json!([]);
    }
    crate::api::Reply::data(v)
}

/// `POST …/migrate`: a `qmigrate`/`vzmigrate` task (an HA-managed guest: an `hamigrate` request).
pub(super) fn migrate(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let target = ctx.params.required("target")?.to_string();
    let online = ctx.params.flag("online")?;
    let restart = ctx.params.flag("restart")?;
    let with_local = ctx.params.flag("with-local-disks")?;
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.Migrate"], false)?;
    if target == node {
        return Err(ApiError::param("target", "target is local node."));
    }
    let t = world
        .node(&target)
        .ok_or_else(|| ApiError::fail(format!("no such cluster node '{target}'")))?;
    if !t.online {
        return Err(ApiError::fail(format!("target node '{target}' is not online")));
    }
    let g = guest(&world, node, kind, vmid)?;
    if let Some(lock) = g.lock() {
        return Err(ApiError::fail(format!("{} is locked ({lock})", kind.label())));
    }
    match kind {
        Kind::Qemu if g.running && !online => {
            return Err(ApiError::fail("can't migrate running VM without --online"));
        }
        Kind::Qemu if g.running && !with_local => {
            if let Some((_, volid)) = local_disks(&world, g).first() {
                return Err(ApiError::fail(format!(
                    "can't migrate local disk '{volid}': can't live migrate attached local disks without with-local-disks option"
                )));
            }
        }
        Kind::Lxc if g.running && online => {
            return Err(ApiError::fail("lxc live migration is currently not implemented"));
        }
        Kind::Lxc if g.running && !restart => {
            return Err(ApiError::fail(
                "can't migrate running container without --online or --restart",
            ));
        }
        _ => {}
    }
    if let Some(sid) = unavailable(&world, g, &target).first() {
        return Err(ApiError::fail(format!(
            "storage '{sid}' is not available on node '{target}'"
        )));
    }
    let ha = world.ha.managing(kind, vmid).is_some();
    if let Some(g) = world.guest_on_mut(node, kind, vmid) {
        g.config.insert("lock".into(), "migrate".into());
    }
    let task_type = match (ha, kind) {
        (true, _) => "hamigrate",
        (false, Kind::Qemu) => "qmigrate",
        (false, Kind::Lxc) => "vzmigrate",
    };
    let duration = world.timings.clone;
    let action = TaskAction::Migrate {
        node: node.to_string(),
        kind,
        vmid,
        target,
    };
    spawn(ctx, &mut world, node, task_type, vmid, duration, action)
}

/// The migration's effect: the config and local volumes go to `target`.
pub(crate) fn finish_migrate(
    world: &mut World,
    node: &str,
    kind: Kind,
    vmid: u32,
    target: &str,
) -> Result<Vec<String>, String> {
    let g = world
        .guest_on(node, kind, vmid)
        .ok_or_else(|| kind.missing_config(node, vmid))?;
    let local: Vec<String> = world
        .volumes
        .iter()
        .filter(|((scope, _), v)| scope == node && v.vmid == Some(vmid))
        .filter(|(_, v)| matches!(v.content.as_str(), "images" | "rootdir"))
        .map(|((_, volid), _)| volid.clone())
        .collect();
    let running = g.running;
    let mut log = vec![format!(
        "starting migration of {} {vmid} to node '{target}'",
        kind.label()
    )];
    for volid in local {
        if let Some(vol) = world.volumes.remove(&(node.to_string(), volid.clone())) {
            log.push(format!("copying local disk '{volid}' to node '{target}'"));
            world.volumes.insert((target.to_string(), volid), vol);
        }
    }
    if let Some(g) = world.guests.get_mut(&vmid) {
        g.node = target.to_string();
        g.config.remove("lock");
    }
    log.push(format!(
        "migration finished successfully ({})",
        if running { "online" } else { "offline" }
    ));
    Ok(log)
}

/// `POST qemu/…/move_disk` and `lxc/…/move_volume`: a copy of one disk on another storage; the
/// source is removed with `delete`, else kept as `unusedN`.
pub(super) fn move_disk(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let key_param = if kind == Kind::Qemu { "disk" } else { "volume" };
    let disk = ctx.params.required(key_param)?.to_string();
    let storage = ctx.params.get("storage").map(str::to_string);
    let delete = ctx.params.flag("delete")?;
    let format = ctx.params.get("format").map(str::to_string);
    let Some(storage) = storage else {
        return Err(ApiError::param("storage", "property is missing"));
    };
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.Config.Disk"], false)?;
    ctx.token
        .check(&format!("/storage/{storage}"), &["Datastore.AllocateSpace"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    let label = kind.label();
    if let Some(lock) = g.lock() {
        return Err(ApiError::fail(format!("{label} is locked ({lock})")));
    }
    let volid = g
        .config
        .get(&disk)
        .and_then(|v| drive_volume(v))
        .ok_or_else(|| ApiError::fail(format!("disk '{disk}' does not exist")))?;
    if kind == Kind::Lxc && g.running {
        return Err(ApiError::fail("cannot move volumes of a running container"));
    }
    if delete && !g.snapshots.is_empty() {
        return Err(ApiError::fail(
            "you can't move a disk with snapshots and delete the source",
        ));
    }
    let target = world.storage_for_alloc(&storage, node).map_err(ApiError::fail)?;
    let content = if kind == Kind::Qemu { "images" } else { "rootdir" };
    if !target.supports(content) {
        let what = if kind == Kind::Qemu {
            "vm images"
        } else {
            "container directories"
        };
        return Err(ApiError::param(
            "storage",
            format!("storage '{storage}' does not support {what}"),
        ));
    }
    let source = world.volume(node, &volid);
    let same_format = format.as_deref().is_none_or(|f| source.is_some_and(|v| v.format == f));
    if volid.starts_with(&format!("{storage}:")) && same_format {
        return Err(ApiError::fail("you can't move to the same storage with same format"));
    }
    if let Some(g) = world.guest_on_mut(node, kind, vmid) {
        g.config.insert("lock".into(), "move".into());
    }
    let (task_type, duration) = (
        if kind == Kind::Qemu { "qmmove" } else { "move_volume" },
        world.timings.resize,
    );
    let action = TaskAction::MoveDisk(Box::new(DiskMove {
        node: node.to_string(),
        kind,
        vmid,
        disk,
        storage,
        format,
        delete,
    }));
    spawn(ctx, &mut world, node, task_type, vmid, duration, action)
}

/// A failed migration or move leaves the guest unlocked, where it was.
pub(crate) fn unlock(world: &mut World, node: &str, kind: Kind, vmid: u32, lock: &str) {
    if let Some(g) = world.guest_on_mut(node, kind, vmid)
        && g.lock() == Some(lock)
    {
        g.config.remove("lock");
    }
}

/// What a `MoveDisk` task does.
#[derive(Clone)]
pub(crate) struct DiskMove {
    pub node: String,
    pub kind: Kind,
    pub vmid: u32,
    pub disk: String,
    pub storage: String,
    pub format: Option<String>,
    pub delete: bool,
}

pub(crate) fn finish_move(world: &mut World, m: DiskMove) -> Result<Vec<String>, String> {
    let g = world
        .guest_on(&m.node, m.kind, m.vmid)
        .ok_or_else(|| m.kind.missing_config(&m.node, m.vmid))?;
    let value = g
        .config
        .get(&m.disk)
        .cloned()
        .ok_or_else(|| format!("disk '{}' does not exist", m.disk))?;
    let old = drive_volume(&value).ok_or_else(|| format!("disk '{}' has no volume", m.disk))?;
    let size = world.volume(&m.node, &old).map_or(0, |v| v.size);
    let content = if m.kind == Kind::Qemu { "images" } else { "rootdir" };
    let new = world.alloc_disk(&m.node, &m.storage, m.vmid, size, m.format.as_deref(), content);
    let mut log = vec![format!("moving disk '{old}' to '{new}'")];
    let g = world.guest_on_mut(&m.node, m.kind, m.vmid).expect("checked");
    g.config.insert(m.disk.clone(), set_drive_volume(&value, &new));
    g.config.remove("lock");
    if !m.delete {
        let n = (0..)
            .find(|n| !g.config.contains_key(&format!("unused{n}")))
            .unwrap_or(0);
        g.config.insert(format!("unused{n}"), old.clone());
    } else {
        world.remove_volume(&m.node, &old);
        log.push(format!("removed source volume '{old}'"));
    }
    Ok(log)
}
