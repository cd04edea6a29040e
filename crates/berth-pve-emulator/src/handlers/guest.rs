//! Endpoints qemu and lxc share: list, status, power, config, pending, resize, destroy.

use std::time::Duration;

use serde_json::{Value, json};

use super::Power;
use crate::actions::TaskAction;
use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::guestcfg;
use crate::perms::Token;
use crate::state::{Guest, Kind, World};
use crate::tasks::TaskSpec;

/// Starts a `task_type` worker for `vmid` (carrying any injected task fault) and answers with its UPID.
pub(super) fn spawn(
    ctx: &mut Ctx,
    world: &mut World,
    node: &str,
    task_type: &'static str,
    vmid: u32,
    duration: Duration,
    action: TaskAction,
) -> ApiResult {
    let spec = TaskSpec {
        node: node.to_string(),
        kind: task_type,
        id: vmid.to_string(),
        user: ctx.token.tokenid.clone(),
        duration,
        action,
        fault: ctx.task_fault.take(),
        log: Vec::new(),
    };
    let upid = crate::tasks::start(&ctx.shared, world, spec);
    Reply::data(json!(upid))
}

/// A new guest `vmid`, optionally joining `pool`: the pool must exist, and `VM.Allocate` is needed on the
/// pool or else on `/vms/{vmid}`.
pub(super) fn check_allocate(world: &World, token: &Token, pool: Option<&str>, vmid: u32) -> Result<(), ApiError> {
    if let Some(pool) = pool
        && !world.pools.contains_key(pool)
    {
        return Err(ApiError::param("pool", format!("pool '{pool}' does not exist")));
    }
    if !pool.is_some_and(|pl| token.allowed(&format!("/pool/{pl}"), &["VM.Allocate"], false)) {
        token.check(&format!("/vms/{vmid}"), &["VM.Allocate"], false)?;
    }
    Ok(())
}

/// The guest whose config is on `node`, else PVE's "Configuration file ... does not exist".
pub(super) fn guest<'a>(world: &'a World, node: &str, kind: Kind, vmid: u32) -> Result<&'a Guest, ApiError> {
    world
        .guest_on(node, kind, vmid)
        .ok_or_else(|| ApiError::fail(kind.missing_config(node, vmid)))
}

pub(super) fn check_skiplock(ctx: &Ctx) -> Result<bool, ApiError> {
    let skiplock = ctx.params.flag("skiplock")?;
    if skiplock && !ctx.token.is_root() {
        return Err(ApiError::param("skiplock", "Only root may use this option."));
    }
    Ok(skiplock)
}

fn list_entry(g: &Guest) -> Value {
    let mem_bytes = g.memory_mib() << 20;
    let mut v = json!({
        "vmid": g.vmid, "status": g.status_str(), "maxmem": mem_bytes, "maxdisk": g.maxdisk(),
        "cpus": g.cpus(), "mem": if g.running { mem_bytes / 3 } else { 0 }, "cpu": if g.running { 0.0071 } else { 0.0 },
        "uptime": g.uptime(), "disk": 0, "diskread": 0, "diskwrite": 0, "netin": 0, "netout": 0,
    });
    let name_key = if g.kind == Kind::Qemu { "name" } else { "hostname" };
    if let Some(n) = g.config.get(name_key) {
        v["name"] = json!(n);
    }
    if g.kind == Kind::Lxc {
        v["type"] = json!("lxc");
        let swap: u64 = g.config.get("swap").and_then(|s| s.parse().ok()).unwrap_or(512);
        v["maxswap"] = json!(swap << 20);
        v["swap"] = json!(0);
    }
    if g.is_template() {
        v["template"] = json!(1);
    }
    if let Some(l) = g.lock() {
        v["lock"] = json!(l);
    }
    if let Some(t) = g.config.get("tags") {
        v["tags"] = json!(t);
    }
    if g.running {
        v["pid"] = json!(10_000 + g.vmid % 50_000);
    }
    v
}

pub(super) fn list(ctx: &mut Ctx, node: &str, kind: Kind) -> ApiResult {
    let world = ctx.world();
    let items: Vec<Value> = world
        .guests
        .values()
        .filter(|g| g.node == node && g.kind == kind)
        .filter(|g| ctx.token.vm_allowed(&world, g.vmid, &["VM.Audit"], false))
        .map(list_entry)
        .collect();
    Reply::data(Value::Array(items))
}

pub(super) fn index(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    guest(&world, node, kind, vmid)?;
    let dirs: &[&str] = match kind {
        Kind::Qemu => &[
            "config",
            "pending",
            "status",
            "agent",
            "cloudinit",
            "resize",
            "clone",
            "rrd",
            "firewall",
        ],
        Kind::Lxc => &[
            "config",
            "pending",
            "status",
            "interfaces",
            "resize",
            "clone",
            "rrd",
            "firewall",
        ],
    };
    Reply::data(Value::Array(dirs.iter().map(|d| json!({ "subdir": d })).collect()))
}

pub(super) fn status_current(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    let mut v = list_entry(g);
    v["ha"] = match world.ha.managing(kind, vmid) {
        Some(r) => json!({ "managed": 1, "state": r.get("state").map_or("started", String::as_str) }),
        None => json!({ "managed": 0 }),
    };
    match kind {
        Kind::Qemu => {
            v["qmpstatus"] = json!(g.status_str());
            if g.agent_enabled() {
                v["agent"] = json!(1);
            }
            if g.running {
                v["running-machine"] = json!("pc-i440fx-9.2+pve1");
                v["running-qemu"] = json!("9.2.0");
            }
        }
        Kind::Lxc => {}
    }
    Reply::data(v)
}

pub(super) fn power(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32, p: Power) -> ApiResult {
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.PowerMgmt"], false)?;
    let skiplock = check_skiplock(ctx)?;
    for b in ["forceStop", "keepActive", "overrule-shutdown"] {
        ctx.params.bool(b)?;
    }
    ctx.params.int("timeout")?;
    let running = guest(&world, node, kind, vmid)?.running;
    // An HA-managed guest's start and stop become requests to the HA manager.
    if p != Power::Reboot && world.ha.managing(kind, vmid).is_some() {
        let (state, task_type, verb) = match p {
            Power::Start => ("started", "hastart", "start"),
            _ => ("stopped", "hastop", "stop"),
        };
        super::ha::request_state(&mut world, kind, vmid, state);
        let spec = TaskSpec {
            node: node.to_string(),
            kind: task_type,
            id: vmid.to_string(),
            user: ctx.token.tokenid.clone(),
            duration: world.timings.start,
            action: TaskAction::HaEnforce { kind, vmid },
            fault: ctx.task_fault.take(),
            log: vec![format!("Requesting HA {verb} for {} {vmid}", kind.label())],
        };
        let upid = crate::tasks::start(&ctx.shared, &mut world, spec);
        return Reply::data(json!(upid));
    }
    // The state each kind checks before it starts a worker.
    if kind == Kind::Lxc && p == Power::Start && running {
        return Err(ApiError::fail(format!("CT {vmid} already running")));
    }
    let needs_running = match kind {
        Kind::Qemu => p == Power::Reboot,
        Kind::Lxc => p != Power::Start,
    };
    if needs_running && !running {
        return Err(ApiError::fail(format!("{} {vmid} not running", kind.label())));
    }
    let t = &world.timings;
    let (duration, qm_type, vz_type) = match p {
        Power::Start => (t.start, "qmstart", "vzstart"),
        Power::Stop => (t.stop, "qmstop", "vzstop"),
        Power::Shutdown => (t.shutdown, "qmshutdown", "vzshutdown"),
        Power::Reboot => (t.reboot, "qmreboot", "vzreboot"),
    };
    let task_type = if kind == Kind::Qemu { qm_type } else { vz_type };
    let action = match p {
        Power::Start => TaskAction::Start {
            node: node.into(),
            kind,
            vmid,
        },
        Power::Stop | Power::Shutdown => TaskAction::Stop {
            node: node.into(),
            kind,
            vmid,
            skiplock,
        },
        Power::Reboot => TaskAction::Reboot {
            node: node.into(),
            kind,
            vmid,
        },
    };
    spawn(ctx, &mut world, node, task_type, vmid, duration, action)
}

pub(super) fn destroy(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.Allocate"], false)?;
    let skiplock = check_skiplock(ctx)?;
    let purge = ctx.params.flag("purge")?;
    if !purge && world.ha.resources.contains_key(&super::ha::sid(kind, vmid)) {
        return Err(ApiError::fail(format!(
            "unable to remove {} {vmid} - used in HA resources and purge parameter not set.",
            kind.label()
        )));
    }
    let unreferenced = ctx.params.flag("destroy-unreferenced-disks")?;
    let force = ctx.params.flag("force")?;
    let g = guest(&world, node, kind, vmid)?;
    let label = kind.label();
    if g.config.get("protection").is_some_and(|p| p == "1") {
        return Err(ApiError::fail(format!(
            "can't remove {label} {vmid} - protection mode enabled"
        )));
    }
    if g.running {
        match kind {
            Kind::Qemu => return Err(ApiError::fail(format!("VM {vmid} is running - destroy failed"))),
            Kind::Lxc if !force => {
                return Err(ApiError::fail(format!(
                    "unable to destroy CT {vmid} - container is running"
                )));
            }
            Kind::Lxc => {}
        }
    }
    // The worker takes the config lock first: an existing lock fails the task, else `lock: destroyed`.
    let action = match g.lock() {
        Some(lock) if !skiplock => TaskAction::Fail(format!("{label} is locked ({lock})")),
        _ => {
            if let Some(g) = world.guest_on_mut(node, kind, vmid) {
                g.config.insert("lock".into(), "destroyed".into());
            }
            TaskAction::Destroy {
                node: node.into(),
                kind,
                vmid,
                unreferenced,
                purge,
            }
        }
    };
    let task_type = if kind == Kind::Qemu { "qmdestroy" } else { "vzdestroy" };
    let duration = world.timings.destroy;
    spawn(ctx, &mut world, node, task_type, vmid, duration, action)
}

pub(super) fn config_get(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let current = ctx.params.flag("current")?;
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    if let Some(snap) = ctx.params.get("snapshot") {
        let s = g
            .snapshots
            .iter()
            .find(|s| s.name == snap)
            .ok_or_else(|| ApiError::fail(format!("snapshot '{snap}' does not exist")))?;
        return Reply::data(json!(s.config));
    }
    Reply::data(guestcfg::config_json(g, current))
}

pub(super) fn config_put(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    guestcfg::update(&mut world, &ctx.token, node, kind, vmid, &ctx.params)?;
    Reply::null()
}

pub(super) fn pending(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    Reply::data(guestcfg::pending_json(guest(&world, node, kind, vmid)?))
}

pub(super) fn resize(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    static SIZE_RE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^\+?\d+(\.\d+)?[KMGT]?$").expect("static regex"));
    let disk = ctx.params.required("disk")?.to_string();
    let size = ctx.params.required("size")?.to_string();
    if !SIZE_RE.is_match(&size) {
        return Err(ApiError::param("size", "value does not match the regex pattern"));
    }
    let disk_ok = match kind {
        Kind::Qemu => crate::propstr::is_disk_key(&disk) && disk != "rootfs" && !disk.starts_with("mp"),
        Kind::Lxc => disk == "rootfs" || (disk.starts_with("mp") && crate::propstr::is_disk_key(&disk)),
    };
    if !disk_ok {
        return Err(ApiError::param(
            "disk",
            format!("value '{disk}' does not have a value in the enumeration"),
        ));
    }
    let skiplock = check_skiplock(ctx)?;
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.Config.Disk"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    if let Some(d) = ctx.params.get("digest")
        && d != guestcfg::digest(g)
    {
        return Err(ApiError::fail(
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    if let Some(sid) = g
        .config
        .get(&disk)
        .and_then(|v| crate::propstr::drive_volume(v))
        .and_then(|v| v.split_once(':').map(|(s, _)| s.to_string()))
    {
        ctx.token
            .check(&format!("/storage/{sid}"), &["Datastore.AllocateSpace"], false)?;
    }
    let action = match g.lock() {
        Some(lock) if !skiplock => TaskAction::Fail(format!("{} is locked ({lock})", kind.label())),
        _ => TaskAction::Resize {
            node: node.into(),
            kind,
            vmid,
            disk,
            size,
        },
    };
    let duration = world.timings.resize;
    spawn(ctx, &mut world, node, "resize", vmid, duration, action)
}
