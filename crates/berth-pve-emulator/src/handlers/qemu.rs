//! qemu-only endpoints: clone, async config, cloud-init, guest agent (interfaces, ping, exec).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::guest::{check_allocate, guest, spawn};
use crate::actions::{CloneJob, TaskAction};
use crate::api::{ApiError, ApiResult, Ctx, Reply, parse_vmid};
use crate::propstr::{drive_volume, get_kv, is_cdrom, is_cloudinit};
use crate::state::{Guest, Kind, World};

/// `POST /nodes/{node}/qemu/{vmid}/clone`: the synchronous checks of `clone_vm`, then a `qmclone` worker.
pub(super) fn clone(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let p = ctx.params.clone();
    let newid = parse_vmid("newid", p.required("newid")?)?;
    let full_param = p.bool("full")?;
    p.int("bwlimit")?;
    let opt = |k: &str| p.get(k).map(str::to_string);
    let (name, description, pool, snapname) = (opt("name"), opt("description"), opt("pool"), opt("snapname"));
    let (storage, format) = (opt("storage"), opt("format"));
    if let Some(f) = &format
        && !matches!(f.as_str(), "raw" | "qcow2" | "vmdk")
    {
        return Err(ApiError::param(
            "format",
            format!("value '{f}' does not have a value in the enumeration 'raw, qcow2, vmdk'"),
        ));
    }
    let target = opt("target").filter(|t| t != node && t != "localhost");

    let shared = ctx.shared.clone();
    let mut world = shared.world();
    let tok = &ctx.token;
    tok.check_vm(&world, vmid, &["VM.Clone"], false)?;
    check_allocate(&world, tok, pool.as_deref(), newid)?;

    // `$load_and_check`, in PVE's order.
    if let Some(t) = &target
        && world.node(t).is_none()
    {
        return Err(ApiError::fail(format!("no such cluster node '{t}'")));
    }
    if let Some(s) = &storage {
        let mut sdef = world.storage_for_alloc(s, node).map_err(ApiError::fail)?;
        if let Some(t) = &target {
            sdef = world.storage_for_alloc(s, t).map_err(ApiError::fail)?;
        }
        if target.is_some() && !sdef.shared {
            return Err(ApiError::fail(format!("can't clone to non-shared storage '{s}'")));
        }
    }
    let src = guest(&world, node, Kind::Qemu, vmid)?;
    if let Some(lock) = src.lock() {
        return Err(ApiError::fail(format!("VM is locked ({lock})")));
    }
    if let Some(snap) = &snapname
        && !src.snapshots.iter().any(|s| s.name == *snap)
    {
        return Err(ApiError::fail(format!("snapshot '{snap}' does not exist")));
    }
    let full = full_param.unwrap_or(!src.is_template());
    if storage.is_some() && !full {
        return Err(ApiError::fail("parameter 'storage' not allowed for linked clones"));
    }
    if format.is_some() && !full {
        return Err(ApiError::fail("parameter 'format' not allowed for linked clones"));
    }
    let mut shared_vm = true;
    for key in src.disk_keys() {
        let drive = &src.config[&key];
        let Some(vol) = drive_volume(drive) else { continue };
        if vol == "none" {
            continue;
        }
        let Some((sid, _)) = vol.split_once(':') else {
            shared_vm = false;
            continue;
        };
        if !world.storage(sid).is_some_and(|s| s.shared) {
            shared_vm = false;
        }
        if is_cdrom(drive) && !is_cloudinit(drive) {
            continue;
        }
        let dst = if full { storage.as_deref().unwrap_or(sid) } else { sid };
        tok.check(&format!("/storage/{dst}"), &["Datastore.AllocateSpace"], false)?;
        if full {
            if let Some(d) = world.storage(dst)
                && !d.supports("images")
            {
                return Err(ApiError::param(
                    "storage",
                    format!("storage '{dst}' does not support vm images"),
                ));
            }
        } else if !is_cloudinit(drive) && !vol.contains("base-") {
            return Err(ApiError::fail(format!(
                "Linked clone feature is not supported for '{vol}' ({key})"
            )));
        }
    }
    if let Some(t) = &target
        && !shared_vm
    {
        return Err(ApiError::fail(format!(
            "can't clone VM to node '{t}' (VM uses local storage)"
        )));
    }
    for (k, v) in &src.config {
        if k.starts_with("net")
            && let Some(bridge) = get_kv(v, "bridge")
        {
            tok.check(&format!("/sdn/zones/localnetwork/{bridge}"), &["SDN.Use"], false)?;
        }
    }
    let mut conflict_elsewhere = false;
    if let Some(existing) = world.guests.get(&newid) {
        if existing.node == node {
            return Err(ApiError::fail(format!(
                "unable to create VM {newid}: config file already exists"
            )));
        }
        conflict_elsewhere = true;
    }
    if !conflict_elsewhere {
        // `# qmclone temporary file` with `lock: clone` until the worker writes the real config.
        let temp = BTreeMap::from([("lock".to_string(), "clone".to_string())]);
        world.guests.insert(newid, Guest::new(newid, node, Kind::Qemu, temp));
    }
    let job = CloneJob {
        node: node.to_string(),
        src: vmid,
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
    };
    let duration = world.timings.clone;
    spawn(
        ctx,
        &mut world,
        node,
        "qmclone",
        vmid,
        duration,
        TaskAction::Clone(Box::new(job)),
    )
}

/// `POST .../config`: the same update as PUT, run as a `qmconfig` worker (null with `background_delay`).
pub(super) fn config_post(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let background = ctx.params.int("background_delay")?;
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    let action = match crate::guestcfg::update(&mut world, &ctx.token, node, Kind::Qemu, vmid, &ctx.params) {
        Ok(()) if background.is_some() => return Reply::null(),
        Ok(()) => TaskAction::Noop,
        Err(e @ (ApiError::Param(_) | ApiError::Perm(_))) => return Err(e),
        Err(e) => TaskAction::Fail(e.to_string()),
    };
    spawn(
        ctx,
        &mut world,
        node,
        "qmconfig",
        vmid,
        Duration::from_millis(5),
        action,
    )
}

pub(super) fn cloudinit_get(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    Reply::data(crate::guestcfg::cloudinit_json(guest(&world, node, Kind::Qemu, vmid)?))
}

/// `PUT .../cloudinit`: regenerate the cloud-init drive from the current config.
pub(super) fn cloudinit_put(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.Config.Cloudinit"], false)?;
    guest(&world, node, Kind::Qemu, vmid)?;
    let g = world
        .guest_on_mut(node, Kind::Qemu, vmid)
        .ok_or_else(|| ApiError::fail(Kind::Qemu.missing_config(node, vmid)))?;
    if let Some(lock) = g.lock() {
        return Err(ApiError::fail(format!("VM is locked ({lock})")));
    }
    let ci_pending: Vec<String> = g
        .pending
        .keys()
        .filter(|k| crate::guestcfg::is_cloudinit_key(k))
        .cloned()
        .collect();
    for k in ci_pending {
        if let Some(v) = g.pending.remove(&k) {
            g.config.insert(k, v);
        }
    }
    crate::actions::regenerate_cloudinit(g);
    Reply::null()
}

/// `PVE::QemuServer::Agent::assert_agent_available`.
fn assert_agent(world: &World, node: &str, vmid: u32) -> Result<(), ApiError> {
    let g = guest(world, node, Kind::Qemu, vmid)?;
    if !g.agent_enabled() {
        return Err(ApiError::fail("No QEMU guest agent configured"));
    }
    if !g.running {
        return Err(ApiError::fail(format!("VM {vmid} is not running")));
    }
    if g.agent_ready_at.is_none_or(|t| t > Instant::now()) {
        return Err(ApiError::fail("QEMU guest agent is not running"));
    }
    Ok(())
}

const AGENT_PRIVS: &[&str] = &["VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted"];

pub(super) fn agent_interfaces(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, AGENT_PRIVS, true)?;
    assert_agent(&world, node, vmid)?;
    let g = guest(&world, node, Kind::Qemu, vmid)?;
    Reply::data(crate::agent::qemu_interfaces(&world, g))
}

pub(super) fn agent_ping(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, AGENT_PRIVS, true)?;
    assert_agent(&world, node, vmid)?;
    Reply::data(json!({ "result": {} }))
}

/// `agent/exec` and `exec-status` need this since PVE 9 (`VM.Monitor` before).
const EXEC_PRIVS: &[&str] = &["VM.GuestAgent.Unrestricted"];

/// `POST .../agent/exec`: `qemu_exec`, the command run for real on the host (see `exec`). A form
/// value for `command` is one element (a repeated key NUL-joined into it, as PVE does); a JSON
/// array is the program and its arguments.
pub(super) fn agent_exec(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let argv = ctx
        .params
        .list("command")
        .ok_or_else(|| ApiError::param("command", "property is missing and it is not optional"))?;
    let input = ctx.params.get("input-data").map(|s| s.as_bytes().to_vec());
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, EXEC_PRIVS, false)?;
    guest(&world, node, Kind::Qemu, vmid)?;
    if argv.is_empty() && input.is_none() {
        return Err(ApiError::fail("command or input-data (or both) required"));
    }
    assert_agent(&world, node, vmid)?;
    let settings = world.exec.clone();
    if !settings.enabled {
        return Err(ApiError::fail(
            "Agent error: The command guest-exec has been disabled for this instance",
        ));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ApiError::fail("Agent error: no runtime to run guest-exec in"));
    }
    let g = world
        .guest_on_mut(node, Kind::Qemu, vmid)
        .ok_or_else(|| ApiError::fail(Kind::Qemu.missing_config(node, vmid)))?;
    let boot = g.started_at;
    let pid = g
        .execs
        .spawn(&argv, input, boot, settings.output_limit, &settings.root_of(vmid))
        .map_err(|e| ApiError::fail(format!("Agent error: {e}")))?;
    Reply::data(json!({ "pid": pid }))
}

/// `GET .../agent/exec-status?pid=N`: `exited: 0` while it runs, then (once) the result.
pub(super) fn agent_exec_status(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let pid = ctx
        .params
        .int("pid")?
        .ok_or_else(|| ApiError::param("pid", "property is missing and it is not optional"))?;
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, EXEC_PRIVS, false)?;
    assert_agent(&world, node, vmid)?;
    let g = world
        .guest_on_mut(node, Kind::Qemu, vmid)
        .ok_or_else(|| ApiError::fail(Kind::Qemu.missing_config(node, vmid)))?;
    let boot = g.started_at;
    let status = u32::try_from(pid).ok().and_then(|p| g.execs.status(p, boot));
    status
        .map(|st| Reply {
            data: st,
            total: None,
            changes: None,
        })
        .ok_or_else(|| ApiError::fail("Agent error: Invalid parameter 'pid'"))
}
