//! Snapshots of VMs and containers: list, take, delete, roll back, and a snapshot's config.
//! Taking, deleting and rolling back are workers (UPIDs), as on PVE.

use serde_json::{Value, json};

use super::guest::{guest, spawn};
use crate::actions::TaskAction;
use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::Kind;

/// What is asked of a guest's snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotOp {
    List,
    Create,
    Index,
    Delete,
    Rollback,
    ConfigGet,
    ConfigPut,
}

pub(crate) fn dispatch(
    ctx: &mut Ctx,
    op: SnapshotOp,
    node: &str,
    kind: Kind,
    vmid: u32,
    name: Option<&str>,
) -> ApiResult {
    let name = name.unwrap_or_default();
    match op {
        SnapshotOp::List => list(ctx, node, kind, vmid),
        SnapshotOp::Create => create(ctx, node, kind, vmid),
        SnapshotOp::Index => index(ctx, node, kind, vmid, name),
        SnapshotOp::Delete => worker(ctx, node, kind, vmid, name, Worker::Delete),
        SnapshotOp::Rollback => worker(ctx, node, kind, vmid, name, Worker::Rollback),
        SnapshotOp::ConfigGet => config_get(ctx, node, kind, vmid, name),
        SnapshotOp::ConfigPut => config_put(ctx, node, kind, vmid, name),
    }
}

fn task_type(kind: Kind, what: &str) -> &'static str {
    match (kind, what) {
        (Kind::Qemu, "snapshot") => "qmsnapshot",
        (Kind::Lxc, "snapshot") => "vzsnapshot",
        (Kind::Qemu, "delete") => "qmdelsnapshot",
        (Kind::Lxc, "delete") => "vzdelsnapshot",
        (Kind::Qemu, _) => "qmrollback",
        (Kind::Lxc, _) => "vzrollback",
    }
}

/// Every snapshot, then the pseudo-entry `current` ("You are here!") on top of its parent.
fn list(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    let mut out: Vec<Value> = g
        .snapshots
        .iter()
        .map(|s| {
            let mut v = json!({ "name": s.name, "snaptime": s.snaptime, "description": s.description });
            if let Some(p) = &s.parent {
                v["parent"] = json!(p);
            }
            if kind == Kind::Qemu && s.vmstate {
                v["vmstate"] = json!(1);
            }
            v
        })
        .collect();
    let mut current =
        json!({ "name": "current", "description": "You are here!", "digest": crate::guestcfg::digest(g) });
    if let Some(p) = g.config.get("parent") {
        current["parent"] = json!(p);
    }
    if kind == Kind::Qemu {
        current["running"] = json!(u8::from(g.running));
    }
    out.push(current);
    Reply::data(Value::Array(out))
}

fn create(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    let name = ctx.params.required("snapname")?.to_string();
    let description = ctx.params.get("description").unwrap_or_default().to_string();
    let vmstate = ctx.params.flag("vmstate")?;
    // Checked before the worker starts, as PVE's API does.
    for reserved in ["current", "pending"] {
        if name.eq_ignore_ascii_case(reserved) {
            return Err(ApiError::fail(format!(
                "unable to use snapshot name '{reserved}' (reserved name)"
            )));
        }
    }
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.Snapshot"], false)?;
    if guest(&world, node, kind, vmid)?.is_template() {
        return Err(ApiError::fail("you can't take a snapshot if it's a template"));
    }
    let action = locked(&mut world, node, kind, vmid, "snapshot").unwrap_or(TaskAction::Snapshot {
        node: node.into(),
        kind,
        vmid,
        name,
        description,
        vmstate,
    });
    let duration = world.timings.resize;
    spawn(
        ctx,
        &mut world,
        node,
        task_type(kind, "snapshot"),
        vmid,
        duration,
        action,
    )
}

/// A guest already locked fails the task with PVE's words; otherwise the worker's lock is
/// taken now and held until the worker ends.
fn locked(world: &mut crate::state::World, node: &str, kind: Kind, vmid: u32, what: &str) -> Option<TaskAction> {
    let g = world.guest_on_mut(node, kind, vmid)?;
    if let Some(lock) = g.lock() {
        return Some(TaskAction::Fail(format!("{} is locked ({lock})", kind.label())));
    }
    g.config.insert("lock".into(), crate::snapshots::lock_name(what).into());
    None
}

fn index(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32, name: &str) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    if !g.snapshots.iter().any(|s| s.name == name) {
        return Err(ApiError::fail(format!("snapshot '{name}' does not exist")));
    }
    Reply::data(json!([{ "rel": "child", "href": "config" }, { "rel": "child", "href": "rollback" }]))
}

enum Worker {
    Delete,
    Rollback,
}

fn worker(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32, name: &str, what: Worker) -> ApiResult {
    let start = match what {
        Worker::Rollback => ctx.params.flag("start")?,
        Worker::Delete => false,
    };
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    let privs: &[&str] = match what {
        Worker::Rollback => &["VM.Snapshot", "VM.Snapshot.Rollback"],
        Worker::Delete => &["VM.Snapshot"],
    };
    ctx.token.check_vm(&world, vmid, privs, true)?;
    guest(&world, node, kind, vmid)?;
    let (kind_name, action) = match what {
        Worker::Delete => (
            "delete",
            TaskAction::DeleteSnapshot {
                node: node.into(),
                kind,
                vmid,
                name: name.into(),
            },
        ),
        Worker::Rollback => (
            "rollback",
            TaskAction::Rollback {
                node: node.into(),
                kind,
                vmid,
                name: name.into(),
                start,
            },
        ),
    };
    let action = locked(&mut world, node, kind, vmid, kind_name).unwrap_or(action);
    let duration = world.timings.resize;
    spawn(
        ctx,
        &mut world,
        node,
        task_type(kind, kind_name),
        vmid,
        duration,
        action,
    )
}

fn config_get(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32, name: &str) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    let g = guest(&world, node, kind, vmid)?;
    let s = g
        .snapshots
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))?;
    let mut v = json!(s.config);
    v["snaptime"] = json!(s.snaptime);
    if !s.description.is_empty() {
        v["description"] = json!(s.description);
    }
    if let Some(p) = &s.parent {
        v["parent"] = json!(p);
    }
    Reply::data(v)
}

fn config_put(ctx: &mut Ctx, node: &str, kind: Kind, vmid: u32, name: &str) -> ApiResult {
    // Without `description` PVE changes nothing.
    let description = ctx.params.get("description").map(str::to_string);
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    ctx.token.check_vm(&world, vmid, &["VM.Snapshot"], false)?;
    guest(&world, node, kind, vmid)?;
    let g = world.guest_on_mut(node, kind, vmid).expect("checked above");
    let s = g
        .snapshots
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::fail(format!("snapshot '{name}' does not exist")))?;
    if let Some(d) = description {
        s.description = d;
    }
    Reply::data(Value::Null)
}
