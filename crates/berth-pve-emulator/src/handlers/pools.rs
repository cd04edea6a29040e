//! `/pools`: list (members only with `poolid`), create, and the deprecated `GET /pools/{poolid}`.

use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::World;

fn members(world: &World, poolid: &str, type_filter: Option<&str>) -> Vec<Value> {
    let Some(pool) = world.pools.get(poolid) else {
        return Vec::new();
    };
    pool.vms
        .iter()
        .filter_map(|id| world.guests.get(id))
        .filter(|g| type_filter.is_none_or(|t| t == g.kind.as_str()))
        .map(|g| super::cluster::guest_resource(world, g))
        .collect()
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
