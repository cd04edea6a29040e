//! `/storage` and `/storage/{storage}`: the cluster's storage definitions, as pve-storage's
//! `API2::Storage::Config` keeps them: one file with one digest, create-only (fixed) options,
//! `delete=` of optional ones, secrets that are written but never read back. Texts are PVE's.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::World;
use crate::storagecfg::{Plugin, StorageDef, file_digest};

const AUDIT: &[&str] = &["Datastore.Audit", "Datastore.AllocateSpace"];

/// `GET /storage[?type=]`: every definition the token may audit, each with the file's digest.
pub(super) fn list(ctx: &mut Ctx) -> ApiResult {
    let kind = ctx.params.get("type").map(str::to_string);
    let world = ctx.world();
    let digest = file_digest(&world.storages);
    let list: Vec<Value> = world
        .storages
        .iter()
        .filter(|s| kind.as_ref().is_none_or(|k| *k == s.kind))
        .filter(|s| ctx.token.allowed(&format!("/storage/{}", s.id), AUDIT, true))
        .map(|s| s.config_json(&digest))
        .collect();
    Reply::data(Value::Array(list))
}

fn not_found(id: &str) -> String {
    format!("storage '{id}' does not exist")
}

pub(super) fn get(ctx: &mut Ctx, id: &str) -> ApiResult {
    ctx.token
        .check(&format!("/storage/{id}"), &["Datastore.Allocate"], false)?;
    let world = ctx.world();
    let s = world.storage(id).ok_or_else(|| ApiError::fail(not_found(id)))?;
    Reply::data(s.config_json(&file_digest(&world.storages)))
}

/// The options of this call the plugin stores (everything but the call's own parameters),
/// checked as `SectionConfig::check_config` checks them.
/// `create` names the new storage (NFS and CIFS mount under `/mnt/pve/<id>` unless told otherwise).
fn options(ctx: &Ctx, plugin: &Plugin, create: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut opts = BTreeMap::new();
    for (k, v) in ctx.params.without(Plugin::CALL_ONLY) {
        if !plugin.knows(&k) {
            return Err(ApiError::fail(format!("unexpected property '{k}'")));
        }
        if create.is_none() && plugin.fixed.contains(&k.as_str()) {
            return Err(ApiError::fail(format!("can't change value of fixed parameter '{k}'")));
        }
        if k == "content" {
            plugin.check_content(&v).map_err(ApiError::fail)?;
        }
        opts.insert(k, v);
    }
    if let Some(id) = create {
        if matches!(plugin.kind, "nfs" | "cifs") && !opts.contains_key("path") {
            opts.insert("path".into(), format!("/mnt/pve/{id}"));
        }
        for k in plugin.fixed.iter().chain(plugin.required) {
            if !opts.contains_key(*k) {
                return Err(ApiError::fail(format!("missing value for required option '{k}'")));
            }
        }
    }
    Ok(opts)
}

/// Writes checked options into the definition, keeping secrets apart and the derived fields
/// (content, shared, nodes) in step with the file.
fn apply(world_nodes: &[String], def: &mut StorageDef, opts: BTreeMap<String, String>) {
    let plugin = Plugin::of(&def.kind).expect("known type");
    for (k, v) in opts {
        if k == "content" {
            def.content = plugin.check_content(&v).unwrap_or_default();
        } else if Plugin::SENSITIVE.contains(&k.as_str()) {
            def.secrets.insert(k, v);
        } else {
            def.cfg.insert(k, v);
        }
    }
    refresh(world_nodes, def);
}

fn refresh(world_nodes: &[String], def: &mut StorageDef) {
    let plugin = Plugin::of(&def.kind).expect("known type");
    def.shared = plugin.shared || def.cfg.get("shared").is_some_and(|v| v == "1");
    def.nodes = match def.cfg.get("nodes") {
        Some(list) => world_nodes
            .iter()
            .filter(|n| list.split([',', ';', ' ']).any(|l| l == n.as_str()))
            .cloned()
            .collect(),
        None => world_nodes.to_vec(),
    };
}

fn node_names(world: &World) -> Vec<String> {
    world.nodes.iter().map(|n| n.name.clone()).collect()
}

/// `POST /storage`: a new definition; `{storage, type[, config]}`.
pub(super) fn create(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/storage", &["Datastore.Allocate"], false)?;
    let id = ctx.params.required("storage")?.to_string();
    let kind = ctx.params.required("type")?.to_string();
    let plugin = Plugin::of(&kind)
        .ok_or_else(|| ApiError::Status(501, format!("storage type '{kind}' is not modelled by the emulator")))?;
    let mut opts = options(ctx, plugin, Some(&id))?;
    let mut returned = None;
    if opts.get("encryption-key").is_some_and(|k| k == "autogen") {
        let key = format!(
            "{{\"kdf\":null,\"key\":\"{}\"}}",
            hex::encode(rand::random::<[u8; 32]>())
        );
        opts.insert("encryption-key".into(), key.clone());
        returned = Some(json!({ "encryption-key": key }));
    }
    let mut world = ctx.world();
    if world.storage(&id).is_some() {
        return Err(ApiError::fail(format!(
            "create storage failed: storage ID '{id}' already defined"
        )));
    }
    let nodes = node_names(&world);
    let mut def = StorageDef::new(&id, &kind, plugin.capacity(), nodes.clone());
    apply(&nodes, &mut def, opts);
    world.storages.push(def);
    let mut out = json!({ "storage": id, "type": kind });
    if let Some(config) = returned {
        out["config"] = config;
    }
    Reply::data(out)
}

/// `PUT /storage/{storage}`: changes optional options, `delete=` removes them; `digest` must
/// match the file when given.
pub(super) fn update(ctx: &mut Ctx, id: &str) -> ApiResult {
    ctx.token.check("/storage", &["Datastore.Allocate"], false)?;
    let fail = |m: String| ApiError::fail(format!("update storage failed: {m}"));
    let digest = ctx.params.get("digest").map(str::to_string);
    let delete: Vec<String> = ctx.params.split_list("delete");
    let mut world = ctx.world();
    if let Some(d) = digest.filter(|d| !d.is_empty())
        && d != file_digest(&world.storages)
    {
        return Err(fail(
            "detected modified configuration - file changed by other user? Try again".into(),
        ));
    }
    let kind = world.storage(id).ok_or_else(|| fail(not_found(id)))?.kind.clone();
    let plugin = Plugin::of(&kind).expect("stored types are modelled");
    let opts = options(ctx, plugin, None).map_err(|e| fail(e.to_string()))?;
    for k in &delete {
        if !plugin.knows(k) {
            return Err(fail(format!("no such option '{k}'")));
        }
        if plugin.fixed.contains(&k.as_str()) {
            return Err(fail(format!("unable to delete fixed option '{k}'")));
        }
        if plugin.required.contains(&k.as_str()) {
            return Err(fail(format!("unable to delete required option '{k}'")));
        }
        if opts.contains_key(k) {
            return Err(fail(format!("cannot set and delete property '{k}' at the same time!")));
        }
    }
    let nodes = node_names(&world);
    let def = world.storages.iter_mut().find(|s| s.id == id).expect("checked");
    for k in &delete {
        if k == "content" {
            def.content = plugin.default_content.iter().map(|c| c.to_string()).collect();
        }
        def.cfg.remove(k);
        def.secrets.remove(k);
    }
    apply(&nodes, def, opts);
    Reply::data(json!({ "storage": id, "type": kind }))
}

/// `DELETE /storage/{storage}`: the definition goes (its data stays), and with it the storage's
/// pool memberships (`remove_storage_access`).
pub(super) fn delete(ctx: &mut Ctx, id: &str) -> ApiResult {
    ctx.token.check("/storage", &["Datastore.Allocate"], false)?;
    let mut world = ctx.world();
    let Some(pos) = world.storages.iter().position(|s| s.id == id) else {
        return Err(ApiError::fail(format!("delete storage failed: {}", not_found(id))));
    };
    world.storages.remove(pos);
    for pool in world.pools.values_mut() {
        pool.storage.remove(id);
    }
    Reply::null()
}
