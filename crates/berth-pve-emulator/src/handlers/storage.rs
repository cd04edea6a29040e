//! `/nodes/{node}/storage`, `.../{storage}/status`, `.../{storage}/content`.

use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::{StorageDef, World};

const AUDIT: &[&str] = &["Datastore.Audit", "Datastore.AllocateSpace"];

fn status_json(world: &World, s: &StorageDef, node: &str) -> Value {
    let used = world.storage_used(s, node);
    json!({
        "storage": s.id, "type": s.kind, "content": s.content_string(),
        "active": u8::from(!s.disabled()), "enabled": u8::from(!s.disabled()),
        "shared": u8::from(s.shared), "total": s.total, "used": used, "avail": s.total.saturating_sub(used),
        "used_fraction": used as f64 / s.total as f64,
    })
}

pub(super) fn list(ctx: &mut Ctx, node: &str) -> ApiResult {
    let content: Vec<String> = ctx
        .params
        .get("content")
        .map(|c| c.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let only = ctx.params.get("storage").map(str::to_string);
    let enabled = ctx.params.bool("enabled")?;
    let target = ctx.params.get("target").map(str::to_string);
    let world = ctx.world();
    let list: Vec<Value> = world
        .storages
        .iter()
        .filter(|s| s.nodes.iter().any(|n| n == node))
        .filter(|s| target.as_ref().is_none_or(|t| s.nodes.contains(t)))
        .filter(|s| only.as_ref().is_none_or(|o| *o == s.id))
        .filter(|s| content.is_empty() || content.iter().any(|c| s.supports(c)))
        .filter(|s| enabled != Some(true) || !s.disabled())
        .filter(|s| ctx.token.allowed(&format!("/storage/{}", s.id), AUDIT, true))
        .map(|s| status_json(&world, s, node))
        .collect();
    Reply::data(Value::Array(list))
}

fn lookup<'a>(world: &'a World, node: &str, storage: &str) -> Result<&'a StorageDef, ApiError> {
    let s = world
        .storage(storage)
        .ok_or_else(|| ApiError::fail(format!("storage '{storage}' does not exist")))?;
    if !s.nodes.iter().any(|n| n == node) {
        return Err(ApiError::fail(format!(
            "storage '{storage}' is not available on node '{node}'"
        )));
    }
    Ok(s)
}

pub(super) fn status(ctx: &mut Ctx, node: &str, storage: &str) -> ApiResult {
    ctx.token.check(&format!("/storage/{storage}"), AUDIT, true)?;
    let world = ctx.world();
    let s = lookup(&world, node, storage)?;
    let mut v = status_json(&world, s, node);
    if let Value::Object(m) = &mut v {
        m.remove("storage");
        m.remove("used_fraction");
    }
    Reply::data(v)
}

pub(super) fn content(ctx: &mut Ctx, node: &str, storage: &str) -> ApiResult {
    ctx.token.check(&format!("/storage/{storage}"), AUDIT, true)?;
    let content = ctx.params.get("content").map(str::to_string);
    let vmid = ctx.params.vmid("vmid")?;
    let world = ctx.world();
    let s = lookup(&world, node, storage)?;
    let scope = s.scope(node);
    let list: Vec<Value> = world
        .volumes
        .iter()
        .filter(|((sc, _), v)| *sc == scope && v.storage == storage)
        .filter(|(_, v)| content.as_ref().is_none_or(|c| *c == v.content))
        .filter(|(_, v)| vmid.is_none_or(|id| v.vmid == Some(id)))
        .map(|(_, v)| {
            let mut item = json!({
                "volid": v.volid(), "format": v.format, "size": v.size, "content": v.content, "ctime": v.ctime,
            });
            if let Some(id) = v.vmid {
                item["vmid"] = json!(id);
            }
            if let Some(p) = &v.parent {
                item["parent"] = json!(p.split_once(':').map(|(_, n)| n).unwrap_or(p));
            }
            if v.content == "images" || v.content == "rootdir" {
                item["used"] = json!(v.size / 4);
            }
            item
        })
        .collect();
    Reply::data(Value::Array(list))
}
