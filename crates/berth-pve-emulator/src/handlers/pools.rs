//! `/pools`: list (members only with `poolid`), create, update (members added or removed),
//! delete (empty pools only), and the deprecated `/pools/{poolid}` forms. Texts as PVE's
//! `PVE::API2::Pool` words them.

use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::World;

fn members(world: &World, poolid: &str, type_filter: Option<&str>) -> Vec<Value> {
    let Some(pool) = world.pools.get(poolid) else {
        return Vec::new();
    };
    let mut out: Vec<Value> = pool
        .vms
        .iter()
        .filter_map(|id| world.guests.get(id))
        .filter(|g| type_filter.is_none_or(|t| t == g.kind.as_str()))
        .map(|g| super::cluster::guest_resource(world, g))
        .collect();
    if type_filter.is_none_or(|t| t == "storage") {
        for sid in &pool.storage {
            let Some(st) = world.storage(sid) else { continue };
            for node in &st.nodes {
                out.push(json!({
                    "id": format!("storage/{node}/{sid}"), "type": "storage", "storage": sid,
                    "node": node, "plugintype": st.kind, "content": st.content_string(),
                    "shared": u8::from(st.shared), "status": "available",
                }));
            }
        }
    }
    out
}

/// `PUT /pools` (and `/pools/{poolid}`): add or, with `delete`, remove guests and storage; a
/// guest in another pool moves only with `allow-move`.
pub(super) fn update(ctx: &mut Ctx, path_pool: Option<&str>) -> ApiResult {
    let poolid = match path_pool {
        Some(p) => p.to_string(),
        None => ctx.params.required("poolid")?.to_string(),
    };
    ctx.token.check(&format!("/pool/{poolid}"), &["Pool.Allocate"], false)?;
    let delete = ctx.params.flag("delete")?;
    let allow_move = ctx.params.flag("allow-move")?;
    let comment = ctx.params.get("comment").map(str::to_string);
    let list = |key: &str| -> Vec<String> {
        ctx.params
            .get(key)
            .map(|v| {
                v.split([',', ';', ' ', '\0'])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (vms, storages) = (list("vms"), list("storage"));
    let mut world = ctx.world();
    if !world.pools.contains_key(&poolid) {
        return Err(ApiError::fail(format!(
            "update pools failed: pool '{poolid}' does not exist"
        )));
    }
    // Checked whole before anything changes, as PVE's single config write does.
    let mut moves = Vec::new();
    for v in &vms {
        let vmid: u32 = v
            .parse()
            .map_err(|_| ApiError::fail(format!("update pools failed: no such VM '{v}'")))?;
        if !world.guests.contains_key(&vmid) {
            return Err(ApiError::fail(format!("update pools failed: no such VM '{vmid}'")));
        }
        // `check_perm_modify` on the guest.
        ctx.token
            .check_vm(&world, vmid, &["Permissions.Modify", "VM.Allocate"], true)?;
        let member = world.pools[&poolid].vms.contains(&vmid);
        match (delete, member, world.pool_of(vmid)) {
            (true, false, _) => {
                return Err(ApiError::fail(format!(
                    "update pools failed: VM {vmid} is not a pool member"
                )));
            }
            (false, true, _) => {
                return Err(ApiError::fail(format!(
                    "update pools failed: VM {vmid} is already a pool member"
                )));
            }
            (false, false, Some(other)) if !allow_move => {
                return Err(ApiError::fail(format!(
                    "update pools failed: VM {vmid} belongs already to pool '{other}' and 'allow-move' is not set"
                )));
            }
            _ => moves.push(vmid),
        }
    }
    for sid in &storages {
        if world.storage(sid).is_none() {
            return Err(ApiError::fail(format!("update pools failed: no such storage '{sid}'")));
        }
        ctx.token.check(
            &format!("/storage/{sid}"),
            &["Permissions.Modify", "Datastore.Allocate"],
            true,
        )?;
        match (delete, world.pools[&poolid].storage.contains(sid)) {
            (true, false) => {
                return Err(ApiError::fail(format!(
                    "update pools failed: Storage '{sid}' is not a pool member"
                )));
            }
            (false, true) => {
                return Err(ApiError::fail(format!(
                    "update pools failed: Storage '{sid}' is already a pool member"
                )));
            }
            _ => {}
        }
    }
    for vmid in moves {
        world.remove_from_pools(vmid);
        if !delete {
            world.pools.get_mut(&poolid).expect("checked").vms.insert(vmid);
        }
    }
    let pool = world.pools.get_mut(&poolid).expect("checked");
    for sid in storages {
        if delete {
            pool.storage.remove(&sid);
        } else {
            pool.storage.insert(sid);
        }
    }
    if let Some(c) = comment {
        pool.comment = Some(c).filter(|c| !c.is_empty());
    }
    Reply::null()
}

/// `DELETE /pools?poolid=` (and `/pools/{poolid}`): empty pools only.
pub(super) fn delete(ctx: &mut Ctx, path_pool: Option<&str>) -> ApiResult {
    let poolid = match path_pool {
        Some(p) => p.to_string(),
        None => ctx.params.required("poolid")?.to_string(),
    };
    ctx.token.check(&format!("/pool/{poolid}"), &["Pool.Allocate"], false)?;
    let mut world = ctx.world();
    let pool = world
        .pools
        .get(&poolid)
        .ok_or_else(|| ApiError::fail(format!("delete pool failed: pool '{poolid}' does not exist")))?;
    if !pool.vms.is_empty() || !pool.storage.is_empty() {
        return Err(ApiError::fail(format!(
            "delete pool failed: pool '{poolid}' is not empty"
        )));
    }
    world.pools.remove(&poolid);
    Reply::null()
}

fn check_type(ctx: &Ctx) -> Result<Option<String>, ApiError> {
    match ctx.params.get("type") {
        None => Ok(None),
        Some(t @ ("qemu" | "lxc" | "storage")) => Ok(Some(t.to_string())),
        Some(t) => Err(ApiError::param(
            "type",
            format!("value '{t}' does not have a value in the enumeration 'qemu, lxc, storage'"),
        )),
    }
}

pub(super) fn list(ctx: &mut Ctx) -> ApiResult {
    let type_filter = check_type(ctx)?;
    let world = ctx.world();
    if let Some(poolid) = ctx.params.get("poolid") {
        ctx.token.check(&format!("/pool/{poolid}"), &["Pool.Audit"], false)?;
        let pool = world
            .pools
            .get(poolid)
            .ok_or_else(|| ApiError::fail(format!("pool '{poolid}' does not exist")))?;
        let mut v = json!({ "poolid": poolid, "members": members(&world, poolid, type_filter.as_deref()) });
        if let Some(c) = &pool.comment {
            v["comment"] = json!(c);
        }
        return Reply::data(json!([v]));
    }
    let list: Vec<Value> = world
        .pools
        .iter()
        .filter(|(id, _)| ctx.token.allowed(&format!("/pool/{id}"), &["Pool.Audit"], false))
        .map(|(id, p)| {
            let mut v = json!({ "poolid": id });
            if let Some(c) = &p.comment {
                v["comment"] = json!(c);
            }
            v
        })
        .collect();
    Reply::data(Value::Array(list))
}

pub(super) fn get(ctx: &mut Ctx, poolid: &str) -> ApiResult {
    let type_filter = check_type(ctx)?;
    ctx.token.check(&format!("/pool/{poolid}"), &["Pool.Audit"], false)?;
    let world = ctx.world();
    let pool = world
        .pools
        .get(poolid)
        .ok_or_else(|| ApiError::fail(format!("pool '{poolid}' does not exist")))?;
    let mut v = json!({ "members": members(&world, poolid, type_filter.as_deref()) });
    if let Some(c) = &pool.comment {
        v["comment"] = json!(c);
    }
    Reply::data(v)
}

pub(super) fn create(ctx: &mut Ctx) -> ApiResult {
    let poolid = ctx.params.required("poolid")?.to_string();
    ctx.token.check(&format!("/pool/{poolid}"), &["Pool.Allocate"], false)?;
    let comment = ctx.params.get("comment").map(str::to_string);
    let mut world = ctx.world();
    if world.pools.contains_key(&poolid) {
        return Err(ApiError::fail(format!(
            "create pool failed: pool '{poolid}' already exists"
        )));
    }
    world.pools.insert(
        poolid,
        crate::state::Pool {
            comment,
            ..Default::default()
        },
    );
    Reply::null()
}
