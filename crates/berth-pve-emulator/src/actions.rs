//! What workers do when their time is up: clone, power changes, destroy, CT create, resize.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::propstr::{self, drive_volume, format_size, get_kv, is_cdrom, is_cloudinit, set_drive_volume, set_kv};
use crate::state::{Guest, Kind, Volume, World, unix_now};

/// A full or linked clone of a qemu VM (`qmclone`).
#[derive(Clone)]
pub(crate) struct CloneJob {
    pub node: String,
    pub src: u32,
    pub newid: u32,
    pub target: Option<String>,
    pub full: bool,
    pub storage: Option<String>,
    pub format: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub pool: Option<String>,
    /// Clone the guest as it was at this snapshot.
    pub snapname: Option<String>,
    /// newid already exists on another node: pmxcfs refuses the temporary config.
    pub conflict_elsewhere: bool,
}

/// A container creation (`vzcreate`).
#[derive(Clone)]
pub(crate) struct CreateCtJob {
    pub node: String,
    pub vmid: u32,
    pub config: BTreeMap<String, String>,
    pub rootfs_storage: String,
    pub rootfs_size: u64,
    pub rootfs_opts: Vec<String>,
    pub ostemplate: String,
    pub pool: Option<String>,
    pub start: bool,
}

#[derive(Clone)]
pub(crate) enum TaskAction {
    Clone(Box<CloneJob>),
    Start {
        node: String,
        kind: Kind,
        vmid: u32,
    },
    Stop {
        node: String,
        kind: Kind,
        vmid: u32,
        skiplock: bool,
    },
    Reboot {
        node: String,
        kind: Kind,
        vmid: u32,
    },
    Destroy {
        node: String,
        kind: Kind,
        vmid: u32,
        unreferenced: bool,
        /// Also out of HA, backup jobs and replication (`purge=1`).
        purge: bool,
    },
    CreateCt(Box<CreateCtJob>),
    /// `qmcreate`.
    CreateVm(Box<crate::handlers::CreateVmJob>),
    /// `qmrestore` / `vzrestore`.
    Restore(Box<crate::handlers::RestoreJob>),
    Resize {
        node: String,
        kind: Kind,
        vmid: u32,
        disk: String,
        size: String,
    },
    /// `qmsnapshot` / `vzsnapshot`.
    Snapshot {
        node: String,
        kind: Kind,
        vmid: u32,
        name: String,
        description: String,
        vmstate: bool,
    },
    /// `qmdelsnapshot` / `vzdelsnapshot`.
    DeleteSnapshot {
        node: String,
        kind: Kind,
        vmid: u32,
        name: String,
    },
    /// `qmrollback` / `vzrollback`.
    Rollback {
        node: String,
        kind: Kind,
        vmid: u32,
        name: String,
        start: bool,
    },
    /// `qmigrate` / `vzmigrate` / `hamigrate`.
    Migrate {
        node: String,
        kind: Kind,
        vmid: u32,
        target: String,
    },
    /// `qmmove` / `move_volume`.
    MoveDisk(Box<crate::handlers::DiskMove>),
    /// `hastart` / `hastop`: the HA manager brings the guest to its requested state.
    HaEnforce {
        kind: Kind,
        vmid: u32,
    },
    /// `vzdump`: a backup volume per guest.
    Vzdump {
        node: String,
        storage: String,
        vmids: Vec<u32>,
        mode: String,
    },
    /// `srvreload`: the node's staged network configuration becomes the running one.
    NetworkReload {
        node: String,
    },
    /// Ends with this error (used for async config updates that failed).
    Fail(String),
    /// Nothing left to do (async config updates that were applied).
    Noop,
}

/// Applies the action; `Err` is the task's error text.
pub(crate) fn complete(world: &mut World, action: TaskAction) -> Result<Vec<String>, String> {
    match action {
        TaskAction::Clone(job) => clone(world, *job),
        TaskAction::Start { node, kind, vmid } => start(world, &node, kind, vmid),
        TaskAction::Migrate {
            node,
            kind,
            vmid,
            target,
        } => crate::handlers::finish_migrate(world, &node, kind, vmid, &target),
        TaskAction::MoveDisk(m) => crate::handlers::finish_move(world, *m),
        TaskAction::Restore(job) => crate::handlers::finish_restore(world, *job),
        TaskAction::HaEnforce { kind, vmid } => {
            crate::handlers::ha_enforce(world, kind, vmid);
            Ok(Vec::new())
        }
        TaskAction::Vzdump {
            node,
            storage,
            vmids,
            mode,
        } => crate::handlers::run_vzdump(world, &node, &storage, &vmids, &mode),
        TaskAction::NetworkReload { node } => crate::handlers::apply_network_reload(world, &node),
        TaskAction::Snapshot {
            node,
            kind,
            vmid,
            name,
            description,
            vmstate,
        } => crate::snapshots::take(world, (&node, kind, vmid), &name, description, vmstate),
        TaskAction::DeleteSnapshot { node, kind, vmid, name } => {
            crate::snapshots::delete(world, (&node, kind, vmid), &name)
        }
        TaskAction::Rollback {
            node,
            kind,
            vmid,
            name,
            start,
        } => crate::snapshots::rollback(world, (&node, kind, vmid), &name, start),
        TaskAction::Stop {
            node,
            kind,
            vmid,
            skiplock,
        } => {
            let g = world
                .guest_on_mut(&node, kind, vmid)
                .ok_or_else(|| kind.missing_config(&node, vmid))?;
            if !skiplock && let Some(lock) = g.lock() {
                return Err(format!("{} is locked ({lock})", kind.label()));
            }
            g.running = false;
            g.started_at = None;
            g.agent_ready_at = None;
            // Whatever the guest agent started dies with the guest.
            g.execs = Default::default();
            Ok(Vec::new())
        }
        TaskAction::Reboot { node, kind, vmid } => {
            let agent_ready = world.timings.agent_ready;
            let g = world
                .guest_on_mut(&node, kind, vmid)
                .ok_or_else(|| kind.missing_config(&node, vmid))?;
            if !g.running {
                return Err(format!("{} {vmid} not running", kind.label()));
            }
            apply_pending(g);
            let now = Instant::now();
            g.started_at = Some(now);
            g.agent_ready_at = Some(now + agent_ready);
            g.execs = Default::default();
            Ok(Vec::new())
        }
        TaskAction::Destroy {
            node,
            kind,
            vmid,
            unreferenced,
            purge,
        } => {
            let log = destroy(world, &node, kind, vmid, unreferenced)?;
            if purge {
                crate::handlers::purge_guest(world, kind, vmid);
            }
            Ok(log)
        }
        TaskAction::CreateCt(job) => create_ct(world, *job),
        TaskAction::CreateVm(job) => crate::handlers::finish_create(world, *job),
        TaskAction::Resize {
            node,
            kind,
            vmid,
            disk,
            size,
        } => resize(world, &node, kind, vmid, &disk, &size),
        TaskAction::Fail(msg) => Err(msg),
        TaskAction::Noop => Ok(Vec::new()),
    }
}

/// Undoes what a failed or interrupted worker left behind (like PVE's cleanup paths).
pub(crate) fn abort(world: &mut World, action: TaskAction) {
    match action {
        TaskAction::Clone(job) => {
            let partial = world
                .guests
                .get(&job.newid)
                .is_some_and(|g| g.lock() == Some("clone") && g.node == job.node);
            if partial {
                remove_partial(world, &job.node, job.newid);
            }
        }
        TaskAction::CreateVm(job) if world.guests.get(&job.vmid).is_some_and(|g| g.lock() == Some("create")) => {
            remove_partial(world, &job.node, job.vmid);
        }
        TaskAction::Restore(job) if world.guests.get(&job.vmid).is_some_and(|g| g.lock() == Some("create")) => {
            remove_partial(world, &job.node, job.vmid);
        }
        TaskAction::CreateCt(job) => {
            let partial = world.guests.get(&job.vmid).is_some_and(|g| g.lock() == Some("create"));
            if partial {
                remove_partial(world, &job.node, job.vmid);
            }
        }
        TaskAction::Destroy { node, kind, vmid, .. } => {
            if let Some(g) = world.guest_on_mut(&node, kind, vmid)
                && g.lock() == Some("destroyed")
            {
                g.config.remove("lock");
            }
        }
        TaskAction::Migrate { node, kind, vmid, .. } => crate::handlers::unlock(world, &node, kind, vmid, "migrate"),
        TaskAction::MoveDisk(m) => crate::handlers::unlock(world, &m.node, m.kind, m.vmid, "move"),
        TaskAction::Snapshot { node, kind, vmid, .. } => {
            crate::snapshots::unlock(world, (&node, kind, vmid), "snapshot")
        }
        TaskAction::DeleteSnapshot { node, kind, vmid, .. } => {
            crate::snapshots::unlock(world, (&node, kind, vmid), "delete")
        }
        TaskAction::Rollback { node, kind, vmid, .. } => {
            crate::snapshots::unlock(world, (&node, kind, vmid), "rollback")
        }
        _ => {}
    }
}

/// Removes a half-created guest with its volumes and pool membership.
fn remove_partial(world: &mut World, node: &str, vmid: u32) {
    world.guests.remove(&vmid);
    for volid in world.volumes_of(node, vmid) {
        world.remove_volume(node, &volid);
    }
    world.remove_from_pools(vmid);
}

/// Moves pending values into the config and marks the cloud-init drive as regenerated.
pub(crate) fn apply_pending(g: &mut Guest) {
    let pending = std::mem::take(&mut g.pending);
    for (k, v) in pending {
        g.config.insert(k, v);
    }
    for k in std::mem::take(&mut g.pending_delete) {
        g.config.remove(&k);
    }
    regenerate_cloudinit(g);
}

/// Records the cloud-init values as written to the drive.
pub(crate) fn regenerate_cloudinit(g: &mut Guest) {
    g.cloudinit_applied = g
        .config
        .iter()
        .filter(|(k, _)| crate::guestcfg::is_cloudinit_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
}

pub(crate) fn start(world: &mut World, node: &str, kind: Kind, vmid: u32) -> Result<Vec<String>, String> {
    let agent_ready = world.timings.agent_ready;
    let g = world
        .guest_on_mut(node, kind, vmid)
        .ok_or_else(|| kind.missing_config(node, vmid))?;
    if g.is_template() {
        return Err(match kind {
            Kind::Qemu => "you can't start a vm if it's a template".to_string(),
            Kind::Lxc => "you can't start a CT if it's a template".to_string(),
        });
    }
    if g.running {
        return Err(format!("{} {vmid} already running", kind.label()));
    }
    if let Some(lock) = g.lock() {
        return Err(format!("{} is locked ({lock})", kind.label()));
    }
    apply_pending(g);
    let mut log = Vec::new();
    if kind == Kind::Qemu && g.config.values().any(|v| is_cloudinit(v)) {
        log.push("generating cloud-init ISO".to_string());
    }
    let now = Instant::now();
    g.running = true;
    g.started_at = Some(now);
    g.agent_ready_at = Some(now + agent_ready);
    Ok(log)
}

fn clone(world: &mut World, job: CloneJob) -> Result<Vec<String>, String> {
    let CloneJob {
        node,
        src,
        newid,
        target,
        full,
        storage,
        format,
        name,
        description,
        pool,
        snapname,
        conflict_elsewhere,
    } = job;
    if conflict_elsewhere {
        return Err(format!(
            "close (rename) atomic file '/etc/pve/nodes/{node}/qemu-server/{newid}.conf' failed: File exists"
        ));
    }
    let Some(source) = world.guest_on(&node, Kind::Qemu, src) else {
        world.guests.remove(&newid);
        return Err(format!("clone failed: {}", Kind::Qemu.missing_config(&node, src)));
    };
    let src_conf = match &snapname {
        Some(s) => match source.snapshots.iter().find(|x| x.name == *s) {
            Some(snap) => snap.config.clone(),
            None => {
                world.guests.remove(&newid);
                return Err(format!("clone failed: snapshot '{s}' does not exist"));
            }
        },
        None => source.config.clone(),
    };
    let src_name = source.config.get("name").cloned();
    let mut conf = BTreeMap::new();
    let mut log = Vec::new();
    for (k, v) in &src_conf {
        let k = k.as_str();
        if matches!(k, "template" | "lock" | "parent" | "snaptime" | "vmstate") || k.starts_with("unused") {
            continue;
        }
        if k.starts_with("net") {
            let fresh = propstr::random_mac();
            let stripped: Vec<String> = propstr::parse(v)
                .into_iter()
                .map(|(pk, pv)| match pk {
                    Some(pk) if propstr::is_mac(&pv) && pk != "hwaddr" => pk,
                    Some(pk) => format!("{pk}={pv}"),
                    None => pv,
                })
                .collect();
            conf.insert(k.to_string(), propstr::qemu_net_with_mac(&stripped.join(","), &fresh));
            continue;
        }
        match k {
            "smbios1" => {
                conf.insert(k.to_string(), set_kv(v, "uuid", &propstr::random_uuid()));
                continue;
            }
            "vmgenid" => {
                conf.insert(k.to_string(), propstr::random_uuid());
                continue;
            }
            _ => {}
        }
        if !propstr::is_disk_key(k) || (is_cdrom(v) && !is_cloudinit(v)) {
            conf.insert(k.to_string(), v.clone());
            continue;
        }
        let Some(volid) = drive_volume(v) else {
            conf.insert(k.to_string(), v.clone());
            continue;
        };
        let sid = volid.split(':').next().unwrap_or_default().to_string();
        let src_vol = world.volume(&node, &volid).cloned();
        let size = get_kv(v, "size")
            .and_then(|s| propstr::parse_size(&s).ok())
            .or(src_vol.as_ref().map(|s| s.size))
            .unwrap_or(0);
        let lvm_note = |world: &World, sid: &str, new: &str| -> Option<String> {
            let lvm = world.storage(sid).is_some_and(|s| !s.is_file_based());
            let short = new
                .split(':')
                .nth(1)
                .unwrap_or(new)
                .rsplit('/')
                .next()
                .unwrap_or(new)
                .to_string();
            lvm.then(|| format!("  Logical volume \"{short}\" created."))
        };
        if is_cloudinit(v) {
            let dst = if full {
                storage.clone().unwrap_or_else(|| sid.clone())
            } else {
                sid.clone()
            };
            log.push(format!("create full clone of drive {k} ({volid})"));
            let new = world.alloc_cloudinit(&node, &dst, newid);
            log.extend(lvm_note(world, &dst, &new));
            conf.insert(k.to_string(), set_drive_volume(v, &new));
        } else if full {
            let dst = storage.clone().unwrap_or_else(|| sid.clone());
            let fmt = format.clone().or(src_vol.as_ref().map(|s| s.format.clone()));
            log.push(format!("create full clone of drive {k} ({volid})"));
            let new = world.alloc_disk(&node, &dst, newid, size, fmt.as_deref(), "images");
            log.extend(lvm_note(world, &dst, &new));
            let gib = size as f64 / (1u64 << 30) as f64;
            log.push(format!("transferred {gib:.1} GiB of {gib:.1} GiB (100.00%)"));
            conf.insert(k.to_string(), set_drive_volume(v, &new));
        } else {
            log.push(format!("create linked clone of drive {k} ({volid})"));
            let n = world.next_disk_index(&sid, &node, newid);
            let base = volid.split_once(':').map(|(_, n)| n.to_string()).unwrap_or_default();
            let file_based = world.storage(&sid).is_some_and(|s| s.is_file_based());
            let volname = if file_based {
                let fmt = src_vol
                    .as_ref()
                    .map(|s| s.format.clone())
                    .unwrap_or_else(|| "qcow2".into());
                format!("{base}/{newid}/vm-{newid}-disk-{n}.{fmt}")
            } else {
                format!("{base}/vm-{newid}-disk-{n}")
            };
            let vol = Volume {
                storage: sid.clone(),
                volname,
                size,
                format: src_vol
                    .as_ref()
                    .map(|s| s.format.clone())
                    .unwrap_or_else(|| "raw".into()),
                content: "images".into(),
                vmid: Some(newid),
                ctime: unix_now(),
                parent: Some(volid.clone()),
            };
            let new = world.insert_volume(&node, vol);
            log.extend(lvm_note(world, &sid, &new));
            conf.insert(k.to_string(), set_drive_volume(v, &new));
        }
    }
    let name = name.unwrap_or_else(|| match &src_name {
        Some(n) => format!("Copy-of-VM-{n}"),
        None => format!("Copy-of-VM-{src}"),
    });
    conf.insert("name".into(), name);
    if let Some(d) = description {
        conf.insert("description".into(), d);
    }
    let final_node = target.unwrap_or_else(|| node.clone());
    match world.guests.get_mut(&newid) {
        Some(g) if g.node == node => {
            g.config = conf;
            g.node = final_node;
        }
        _ => {
            world
                .guests
                .insert(newid, Guest::new(newid, &final_node, Kind::Qemu, conf));
        }
    }
    if let Some(pool) = pool
        && let Some(p) = world.pools.get_mut(&pool)
    {
        p.vms.insert(newid);
    }
    Ok(log)
}

pub(crate) fn destroy(
    world: &mut World,
    node: &str,
    kind: Kind,
    vmid: u32,
    unreferenced: bool,
) -> Result<Vec<String>, String> {
    // Its emulated file system goes with it (a later guest on the VMID starts empty).
    let _ = std::fs::remove_dir_all(world.exec.root_of(vmid));
    let g = world
        .guest_on(node, kind, vmid)
        .ok_or_else(|| kind.missing_config(node, vmid))?;
    let mut referenced: Vec<String> = g
        .config
        .iter()
        .filter(|(k, v)| (propstr::is_disk_key(k) && (!is_cdrom(v) || is_cloudinit(v))) || k.starts_with("unused"))
        .filter_map(|(_, v)| drive_volume(v))
        .collect();
    if unreferenced {
        for volid in world.volumes_of(node, vmid) {
            if !referenced.contains(&volid) {
                referenced.push(volid);
            }
        }
    }
    let mut log = Vec::new();
    for volid in referenced {
        // Only volumes owned by this guest are freed (a linked clone's base stays with the template).
        if world.volume(node, &volid).is_some_and(|v| v.vmid == Some(vmid)) {
            let lvm = world
                .storage(volid.split(':').next().unwrap_or_default())
                .is_some_and(|s| !s.is_file_based());
            world.remove_volume(node, &volid);
            if lvm {
                let short = volid
                    .rsplit('/')
                    .next()
                    .unwrap_or(&volid)
                    .split(':')
                    .next_back()
                    .unwrap_or(&volid);
                log.push(format!("  Logical volume \"{short}\" successfully removed."));
            } else {
                log.push(format!("removed volume '{volid}'"));
            }
        }
    }
    world.remove_from_pools(vmid);
    world.guests.remove(&vmid);
    Ok(log)
}

fn create_ct(world: &mut World, job: CreateCtJob) -> Result<Vec<String>, String> {
    let CreateCtJob {
        node,
        vmid,
        mut config,
        rootfs_storage,
        rootfs_size,
        rootfs_opts,
        ostemplate,
        pool,
        start,
    } = job;
    if world.guest_on(&node, Kind::Lxc, vmid).is_none() {
        return Err(Kind::Lxc.missing_config(&node, vmid));
    }
    let volid = world.alloc_disk(&node, &rootfs_storage, vmid, rootfs_size, Some("raw"), "rootdir");
    let mut rootfs = format!("{volid},size={}", format_size(rootfs_size));
    for opt in rootfs_opts {
        rootfs.push(',');
        rootfs.push_str(&opt);
    }
    config.insert("rootfs".into(), rootfs);
    let mut log = Vec::new();
    if world.storage(&rootfs_storage).is_some_and(|s| !s.is_file_based()) {
        let short = volid.split(':').nth(1).unwrap_or(&volid).to_string();
        log.push(format!("  Logical volume \"{short}\" created."));
    }
    let file = ostemplate.split_once(":vztmpl/").map(|(_, f)| f).unwrap_or(&ostemplate);
    log.push(format!("extracting archive '/var/lib/vz/template/cache/{file}'"));
    log.push("Total bytes read: 514478080 (491MiB, 252MiB/s)".to_string());
    log.push("Detected container architecture: amd64".to_string());
    log.push("Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ...".to_string());
    let agent_ready = world.timings.agent_ready;
    if let Some(g) = world.guest_on_mut(&node, Kind::Lxc, vmid) {
        g.config = config;
        if start {
            let now = Instant::now();
            g.running = true;
            g.started_at = Some(now);
            g.agent_ready_at = Some(now + agent_ready);
        }
    }
    if let Some(pool) = pool
        && let Some(p) = world.pools.get_mut(&pool)
    {
        p.vms.insert(vmid);
    }
    Ok(log)
}

fn resize(world: &mut World, node: &str, kind: Kind, vmid: u32, disk: &str, size: &str) -> Result<Vec<String>, String> {
    let g = world
        .guest_on(node, kind, vmid)
        .ok_or_else(|| kind.missing_config(node, vmid))?;
    if let Some(lock) = g.lock() {
        return Err(format!("{} is locked ({lock})", kind.label()));
    }
    let Some(drive) = g.config.get(disk).cloned() else {
        return Err(format!("disk '{disk}' does not exist"));
    };
    if is_cdrom(&drive) {
        return Err("you can't resize a cdrom".to_string());
    }
    let volid = drive_volume(&drive).unwrap_or_default();
    let current = get_kv(&drive, "size")
        .and_then(|s| propstr::parse_size(&s).ok())
        .unwrap_or(0);
    let (relative, amount) = match size.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, size),
    };
    let amount = propstr::parse_size(amount).map_err(|_| format!("unable to parse size '{size}'"))?;
    let new = if relative { current + amount } else { amount };
    if new < current {
        return Err(match kind {
            Kind::Qemu => "shrinking disks is not supported".to_string(),
            Kind::Lxc => "unable to shrink disk size".to_string(),
        });
    }
    let node_owned = node.to_string();
    if let Some(v) = world.volume_mut(&node_owned, &volid) {
        v.size = new;
    }
    if let Some(g) = world.guest_on_mut(node, kind, vmid) {
        g.config
            .insert(disk.to_string(), set_kv(&drive, "size", &format_size(new)));
    }
    Ok(vec![format!(
        "  Size of logical volume changed from {} to {}.",
        format_size(current),
        format_size(new)
    )])
}
