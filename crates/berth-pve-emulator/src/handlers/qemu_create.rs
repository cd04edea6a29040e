//! `POST /nodes/{node}/qemu`: a VM from scratch (no template). Disks given as `STORAGE:SIZE`
//! are allocated and a `STORAGE:cloudinit` drive is made by the `qmcreate` worker; the VM exists
//! locked (`create`) while it runs. Defaults and texts as qemu-server's `create_vm`.

use std::collections::BTreeMap;

use super::guest::{check_allocate, spawn};
use crate::actions::TaskAction;
use crate::api::{ApiError, ApiResult, Ctx, parse_vmid};
use crate::guestcfg;
use crate::propstr;
use crate::state::{Guest, Kind, World};

/// Parameters of the call itself, not config keys.
const CALL_ONLY: &[&str] = &[
    "node",
    "vmid",
    "pool",
    "start",
    "storage",
    "unique",
    "force",
    "live-restore",
    "bwlimit",
];

/// A VM being created (`qmcreate`).
#[derive(Clone)]
pub(crate) struct CreateVmJob {
    pub node: String,
    pub vmid: u32,
    pub config: Vec<(String, String)>,
    pub pool: Option<String>,
    pub start: bool,
}

pub(super) fn create(ctx: &mut Ctx, node: &str) -> ApiResult {
    let p = ctx.params.clone();
    let vmid = parse_vmid("vmid", p.required("vmid")?)?;
    if let Some(archive) = p.get("archive") {
        return super::restore::start(ctx, node, Kind::Qemu, archive);
    }
    let start = p.flag("start")?;
    let pool = p.get("pool").map(str::to_string);
    let mut config = p.without(CALL_ONLY);
    for (k, v) in config.iter_mut() {
        guestcfg::qemu_value(k, v)?;
    }
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    check_allocate(&world, &ctx.token, pool.as_deref(), vmid)?;
    if start {
        ctx.token.check_vm(&world, vmid, &["VM.PowerMgmt"], false)?;
    }
    let keys = config.iter().map(|(k, v)| (k.as_str(), Some(v.as_str())));
    guestcfg::check_key_perms(&world, &ctx.token, Kind::Qemu, vmid, keys)?;
    if let Some(existing) = world.guests.get(&vmid) {
        return Err(ApiError::fail(format!(
            "unable to create VM {vmid} - VM {vmid} already exists on node '{}'",
            existing.node
        )));
    }
    // New disks must be possible here before the worker starts.
    for (k, v) in &config {
        let vol = propstr::drive_volume(v).unwrap_or_default();
        if let Some((sid, size)) = vol.split_once(':')
            && propstr::is_disk_key(k)
            && (size == "cloudinit" || size.parse::<f64>().is_ok())
        {
            let st = world.storage_for_alloc(sid, node).map_err(ApiError::fail)?;
            if !st.supports("images") {
                return Err(ApiError::param(
                    k,
                    format!("storage '{sid}' does not support vm images"),
                ));
            }
        }
    }
    let temp = BTreeMap::from([("lock".to_string(), "create".to_string())]);
    world.guests.insert(vmid, Guest::new(vmid, node, Kind::Qemu, temp));
    let job = CreateVmJob {
        node: node.to_string(),
        vmid,
        config,
        pool,
        start,
    };
    let duration = world.timings.clone;
    spawn(
        ctx,
        &mut world,
        node,
        "qmcreate",
        vmid,
        duration,
        TaskAction::CreateVm(Box::new(job)),
    )
}

/// `get_default_bootdevices`: the first disk (not cloud-init), the first CD drive, the first NIC.
fn default_boot(config: &BTreeMap<String, String>) -> Option<String> {
    let mut disks = Vec::new();
    let mut cds = Vec::new();
    let mut nets = Vec::new();
    for (k, v) in config {
        if propstr::is_disk_key(k) && !propstr::is_cloudinit(v) {
            if propstr::is_cdrom(v) {
                cds.push(k.clone())
            } else {
                disks.push(k.clone())
            }
        } else if k.starts_with("net") && k[3..].chars().all(|c| c.is_ascii_digit()) {
            nets.push(k.clone());
        }
    }
    let order: Vec<String> = disks
        .into_iter()
        .take(1)
        .chain(cds.into_iter().take(1))
        .chain(nets.into_iter().take(1))
        .collect();
    (!order.is_empty()).then(|| format!("order={}", order.join(";")))
}

/// The worker: disks allocated, the config written with PVE's defaults, pool and start.
pub(crate) fn finish_create(world: &mut World, job: CreateVmJob) -> Result<Vec<String>, String> {
    let CreateVmJob {
        node,
        vmid,
        mut config,
        pool,
        start,
    } = job;
    if world.guest_on(&node, Kind::Qemu, vmid).is_none() {
        return Err(Kind::Qemu.missing_config(&node, vmid));
    }
    guestcfg::qemu_alloc(world, &node, vmid, &mut config).map_err(|e| e.to_string())?;
    let mut log: Vec<String> = config
        .iter()
        .filter(|(k, _)| propstr::is_disk_key(k))
        .filter_map(|(k, v)| {
            Some(format!(
                "{k}: successfully created disk '{}'",
                propstr::drive_volume(v)?
            ))
        })
        .collect();
    let mut conf: BTreeMap<String, String> = config.into_iter().collect();
    let uuid = hex::encode(rand::random::<[u8; 16]>());
    conf.entry("smbios1".into())
        .or_insert_with(|| format!("uuid={}", dashed(&uuid)));
    // `vmgenid: 1` (or none) asks PVE to generate one.
    if conf.get("vmgenid").is_none_or(|v| v == "1") {
        conf.insert("vmgenid".into(), dashed(&hex::encode(rand::random::<[u8; 16]>())));
    }
    conf.entry("meta".into())
        .or_insert_with(|| format!("creation-qemu=9.2.0,ctime={}", crate::state::unix_now()));
    if !conf.contains_key("boot")
        && let Some(b) = default_boot(&conf)
    {
        conf.insert("boot".into(), b);
    }
    if let Some(g) = world.guest_on_mut(&node, Kind::Qemu, vmid) {
        g.config = conf;
    }
    if let Some(pool) = pool
        && let Some(p) = world.pools.get_mut(&pool)
    {
        p.vms.insert(vmid);
    }
    // The VM exists either way: a failed start is only a warning (`warn $@ if $@`).
    if start {
        match crate::actions::start(world, &node, Kind::Qemu, vmid) {
            Ok(lines) => log.extend(lines),
            Err(e) => log.push(format!("WARN: start failed: {e}")),
        }
    }
    Ok(log)
}

fn dashed(h: &str) -> String {
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
