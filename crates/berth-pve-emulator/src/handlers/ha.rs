//! HA (`/cluster/ha/...`): resources, groups (PVE 8) or node/resource-affinity rules (PVE 9;
//! groups refused with PVE's message), the manager's `status/current`, and the cluster resource
//! manager's effect: a resource's requested state is the guest's power state.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::{Kind, World};

pub(crate) type Section = BTreeMap<String, String>;

/// `resources.cfg`, `groups.cfg` (PVE 8) and `rules.cfg` (PVE 9).
#[derive(Default)]
pub(crate) struct HaConfig {
    pub resources: BTreeMap<String, Section>,
    pub groups: BTreeMap<String, Section>,
    pub rules: BTreeMap<String, Section>,
}

impl HaConfig {
    /// The resource of guest `vmid` when HA manages it (a resource in state `ignored` is not).
    pub fn managing(&self, kind: Kind, vmid: u32) -> Option<&Section> {
        self.resources
            .get(&sid(kind, vmid))
            .filter(|r| r.get("state").is_none_or(|s| s != "ignored"))
    }
}

pub(crate) fn sid(kind: Kind, vmid: u32) -> String {
    format!("{}:{vmid}", if kind == Kind::Qemu { "vm" } else { "ct" })
}

const GROUPS_MIGRATED: &str = "ha groups have been migrated to rules";
const INTEGER: &[&str] = &[
    "max_restart",
    "max_relocate",
    "failback",
    "restricted",
    "nofailback",
    "strict",
    "disable",
];

/// `parse_sid`: `vm:100`, `ct:100`, or a bare id whose type is looked up.
fn parse_sid(world: &World, raw: &str) -> Result<(Kind, u32, String), ApiError> {
    let (kind, id) = match raw.split_once(':') {
        Some(("vm", id)) => (Some(Kind::Qemu), id),
        Some(("ct", id)) => (Some(Kind::Lxc), id),
        Some(_) => return Err(ApiError::fail(format!("unable to parse service id '{raw}'"))),
        None => (None, raw),
    };
    let vmid: u32 = id
        .parse()
        .map_err(|_| ApiError::fail(format!("unable to parse service id '{raw}'")))?;
    let kind = match kind {
        Some(k) => k,
        None => world
            .guests
            .get(&vmid)
            .map(|g| g.kind)
            .ok_or_else(|| ApiError::fail(format!("unable to parse service id '{raw}'")))?,
    };
    Ok((kind, vmid, sid(kind, vmid)))
}

/// `digest` of a whole config file (resources.cfg, groups.cfg or rules.cfg), as PVE's section config.
fn digest(file: &BTreeMap<String, Section>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for (id, s) in file {
        h.update(format!("{id}\n"));
        for (k, v) in s {
            h.update(format!("\t{k} {v}\n"));
        }
    }
    hex::encode(h.finalize())[..40].to_string()
}

fn section_json(id_key: &str, id: &str, s: &Section, file_digest: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(id_key.into(), json!(id));
    for (k, v) in s {
        let value = match INTEGER.contains(&k.as_str()) {
            true => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(v)),
            false => json!(v),
        };
        m.insert(k.clone(), value);
    }
    m.insert("digest".into(), json!(file_digest));
    Value::Object(m)
}

fn settings(ctx: &Ctx, skip: &[&str]) -> Section {
    ctx.params.without(skip).into_iter().collect()
}

fn deletions(ctx: &Ctx) -> Vec<String> {
    ctx.params.split_list("delete")
}

/// The resource manager's effect: the guest runs exactly when its resource asks for `started`.
pub(crate) fn enforce(world: &mut World, kind: Kind, vmid: u32) {
    let Some(state) = world.ha.managing(kind, vmid).and_then(|r| r.get("state").cloned()) else {
        return;
    };
    let Some(g) = world.guests.get(&vmid) else { return };
    let node = g.node.clone();
    match (state.as_str(), g.running) {
        ("started", false) => {
            let _ = crate::actions::start(world, &node, kind, vmid);
        }
        ("stopped" | "disabled", true) => {
            if let Some(g) = world.guest_on_mut(&node, kind, vmid) {
                g.running = false;
                g.started_at = None;
                g.agent_ready_at = None;
            }
        }
        _ => {}
    }
}

/// Sets the requested state of an HA-managed guest (the start/stop API's redirection).
pub(crate) fn request_state(world: &mut World, kind: Kind, vmid: u32, state: &str) {
    if let Some(r) = world.ha.resources.get_mut(&sid(kind, vmid)) {
        r.insert("state".into(), state.into());
    }
}

pub(super) fn resources(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let only = ctx.params.get("type").map(str::to_string);
    let world = ctx.world();
    let d = digest(&world.ha.resources);
    let list: Vec<Value> = world
        .ha
        .resources
        .iter()
        .filter(|(sid, _)| only.as_ref().is_none_or(|t| sid.starts_with(&format!("{t}:"))))
        .map(|(sid, r)| {
            let mut v = section_json("sid", sid, r, &d);
            v["type"] = json!(sid.split(':').next().unwrap_or_default());
            v
        })
        .collect();
    Reply::data(Value::Array(list))
}

pub(super) fn resource(ctx: &mut Ctx, raw: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let world = ctx.world();
    let (_, _, sid) = parse_sid(&world, raw)?;
    let r = world
        .ha
        .resources
        .get(&sid)
        .ok_or_else(|| ApiError::fail(format!("no such resource '{raw}'")))?;
    let mut v = section_json("sid", &sid, r, &digest(&world.ha.resources));
    v["type"] = json!(sid.split(':').next().unwrap_or_default());
    Reply::data(v)
}

fn check_group(world: &World, r: &Section) -> Result<(), String> {
    match r.get("group") {
        Some(_) if world.pve_major >= 9 => Err(format!("invalid parameter 'group': {GROUPS_MIGRATED}")),
        Some(g) if !world.ha.groups.contains_key(g) => Err(format!("group '{g}' does not exist")),
        _ => Ok(()),
    }
}

pub(super) fn create_resource(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Console"], false)?;
    let raw = ctx.params.required("sid")?.to_string();
    let mut r = settings(ctx, &["sid", "type"]);
    let mut world = ctx.world();
    let (kind, vmid, sid) = parse_sid(&world, &raw)?;
    let fail = |m: String| ApiError::fail(format!("create resource failed: {m}"));
    if world.guests.get(&vmid).is_none_or(|g| g.kind != kind) {
        return Err(fail(format!("{} {vmid} does not exist", kind.label())));
    }
    if world.ha.resources.contains_key(&sid) {
        return Err(fail(format!("resource ID '{sid}' already defined")));
    }
    check_group(&world, &r).map_err(fail)?;
    r.entry("state".into()).or_insert_with(|| "started".into());
    world.ha.resources.insert(sid, r);
    enforce(&mut world, kind, vmid);
    Reply::null()
}

pub(super) fn update_resource(ctx: &mut Ctx, raw: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Console"], false)?;
    let mut set = settings(ctx, &["sid", "delete", "digest"]);
    let delete = deletions(ctx);
    let digest_param = ctx.params.get("digest").map(str::to_string);
    let mut world = ctx.world();
    let fail = |m: String| ApiError::fail(format!("update resources config failed: {m}"));
    let (kind, vmid, sid) = parse_sid(&world, raw)?;
    let mut r = world
        .ha
        .resources
        .get(&sid)
        .cloned()
        .ok_or_else(|| fail(format!("no such resource '{sid}'")))?;
    if let Some(d) = digest_param.filter(|d| !d.is_empty())
        && d != digest(&world.ha.resources)
    {
        return Err(fail(
            "detected modified configuration - file changed by other user? Try again".into(),
        ));
    }
    for k in &delete {
        r.remove(k);
    }
    r.append(&mut set);
    check_group(&world, &r).map_err(fail)?;
    world.ha.resources.insert(sid, r);
    enforce(&mut world, kind, vmid);
    Reply::null()
}

/// `DELETE …/resources/{sid}`: with `purge` (the default) also out of every rule, rules left
/// empty going with it.
pub(super) fn delete_resource(ctx: &mut Ctx, raw: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Console"], false)?;
    let purge = ctx.params.bool("purge")?.unwrap_or(true);
    let mut world = ctx.world();
    let (_, _, sid) = parse_sid(&world, raw)?;
    if world.ha.resources.remove(&sid).is_none() {
        return Err(ApiError::fail(format!(
            "cannot delete service '{sid}', not HA managed!"
        )));
    }
    if purge {
        purge_from_rules(&mut world, &sid);
    }
    Reply::null()
}

pub(crate) fn purge_from_rules(world: &mut World, sid: &str) {
    world.ha.rules.retain(|_, rule| {
        let Some(list) = rule.get("resources") else { return true };
        let kept: Vec<&str> = list.split(',').filter(|r| *r != sid).collect();
        if kept.is_empty() {
            return false;
        }
        let kept = kept.join(",");
        rule.insert("resources".into(), kept);
        true
    });
}

/// Groups and rules share one shape: `kind` is "group" (PVE 8 only) or "rule" (PVE 9 only).
fn gate(world: &World, kind: &str) -> Result<(), ApiError> {
    match (kind, world.pve_major >= 9) {
        ("group", true) => Err(ApiError::fail(GROUPS_MIGRATED)),
        ("rule", false) => Err(ApiError::Status(501, "Method not implemented".into())),
        _ => Ok(()),
    }
}

fn table<'a>(world: &'a mut World, kind: &str) -> &'a mut BTreeMap<String, Section> {
    if kind == "group" {
        &mut world.ha.groups
    } else {
        &mut world.ha.rules
    }
}

pub(super) fn list_sections(ctx: &mut Ctx, kind: &'static str) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let only = ctx.params.get("type").map(str::to_string);
    let resource = ctx.params.get("resource").map(str::to_string);
    let mut world = ctx.world();
    gate(&world, kind)?;
    let d = digest(table(&mut world, kind));
    let list: Vec<Value> = table(&mut world, kind)
        .iter()
        .filter(|(_, s)| only.as_ref().is_none_or(|t| s.get("type") == Some(t)))
        .filter(|(_, s)| {
            resource
                .as_ref()
                .is_none_or(|r| s.get("resources").is_some_and(|l| l.split(',').any(|x| x == r)))
        })
        .map(|(id, s)| section_json(kind, id, s, &d))
        .collect();
    Reply::data(Value::Array(list))
}

pub(super) fn get_section(ctx: &mut Ctx, kind: &'static str, id: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let mut world = ctx.world();
    gate(&world, kind)?;
    let d = digest(table(&mut world, kind));
    let s = table(&mut world, kind)
        .get(id)
        .ok_or_else(|| ApiError::fail(format!("no such ha {kind} '{id}'")))?;
    Reply::data(section_json(kind, id, s, &d))
}

/// What a group or rule must hold: a node list for groups and node-affinity rules, an
/// `affinity` for resource-affinity rules, resources as `vm:N`/`ct:N` (bare ids resolved).
fn check_section(world: &World, kind: &str, s: &mut Section) -> Result<(), ApiError> {
    let node_list = kind == "group" || s.get("type").is_some_and(|t| t == "node-affinity");
    if node_list {
        let nodes = s
            .get("nodes")
            .ok_or_else(|| ApiError::param("nodes", "property is missing"))?;
        for n in nodes.split(',').map(|n| n.split(':').next().unwrap_or_default()) {
            if world.node(n).is_none() {
                return Err(ApiError::param("nodes", format!("no such cluster node '{n}'")));
            }
        }
    }
    if s.get("type").is_some_and(|t| t == "resource-affinity") && !s.contains_key("affinity") {
        return Err(ApiError::param("affinity", "property is missing"));
    }
    if let Some(list) = s.get("resources").cloned() {
        let mut sids = Vec::new();
        for raw in list.split(',').filter(|r| !r.is_empty()) {
            let sid = parse_sid(world, raw)
                .map_err(|e| ApiError::param("resources", e.to_string()))?
                .2;
            if kind == "rule" && !world.ha.resources.contains_key(&sid) {
                return Err(ApiError::param(
                    "resources",
                    format!("cannot use unmanaged resource(s) {sid}"),
                ));
            }
            sids.push(sid);
        }
        s.insert("resources".into(), sids.join(","));
    }
    Ok(())
}

pub(super) fn create_section(ctx: &mut Ctx, kind: &'static str) -> ApiResult {
    ctx.token.check("/", &["Sys.Console"], false)?;
    let id = ctx.params.required(kind)?.to_string();
    let mut s = settings(ctx, &[kind]);
    let mut world = ctx.world();
    gate(&world, kind)?;
    let what = if kind == "group" { "ha group" } else { "HA rule" };
    if table(&mut world, kind).contains_key(&id) {
        return Err(ApiError::fail(format!(
            "create {what} failed: {what} '{id}' already defined"
        )));
    }
    check_section(&world, kind, &mut s)?;
    table(&mut world, kind).insert(id, s);
    Reply::null()
}

pub(super) fn update_section(ctx: &mut Ctx, kind: &'static str, id: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Console"], false)?;
    let mut set = settings(ctx, &[kind, "delete", "digest"]);
    let delete = deletions(ctx);
    let digest_param = ctx.params.get("digest").map(str::to_string);
    let mut world = ctx.world();
    gate(&world, kind)?;
    let what = if kind == "group" { "ha group" } else { "HA rule" };
    let fail = |m: String| ApiError::fail(format!("update {what} failed: {m}"));
    let mut s = table(&mut world, kind)
        .get(id)
        .cloned()
        .ok_or_else(|| fail(format!("no such {what} '{id}'")))?;
    if let Some(d) = digest_param.filter(|d| !d.is_empty())
        && d != digest(table(&mut world, kind))
    {
        return Err(fail(
            "detected modified configuration - file changed by other user? Try again".into(),
        ));
    }
    if kind == "rule" && set.get("type") != s.get("type") {
        return Err(ApiError::param("type", "the rule type cannot be changed"));
    }
    for k in &delete {
        s.remove(k);
    }
    s.append(&mut set);
    check_section(&world, kind, &mut s)?;
    table(&mut world, kind).insert(id.to_string(), s);
    Reply::null()
}

pub(super) fn delete_section(ctx: &mut Ctx, kind: &'static str, id: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Console"], false)?;
    let mut world = ctx.world();
    gate(&world, kind)?;
    if kind == "group"
        && let Some((sid, _)) = world
            .ha
            .resources
            .iter()
            .find(|(_, r)| r.get("group").is_some_and(|g| g == id))
    {
        return Err(ApiError::fail(format!(
            "delete ha group failed: ha group '{id}' is used by resource '{sid}'"
        )));
    }
    // PVE deletes a rule that is not there without complaint; a group must exist.
    if table(&mut world, kind).remove(id).is_none() && kind == "group" {
        return Err(ApiError::fail(format!(
            "delete ha group failed: no such ha group '{id}'"
        )));
    }
    Reply::null()
}

/// `GET /cluster/ha/status/current`: quorum, the manager, one LRM per node, one entry per resource.
pub(super) fn status(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let world = ctx.world();
    let first = world.nodes.first().map(|n| n.name.clone()).unwrap_or_default();
    let mut list = vec![json!({ "id": "quorum", "type": "quorum", "node": first, "status": "OK", "quorate": 1 })];
    if !world.ha.resources.is_empty() {
        list.push(json!({ "id": "master", "type": "master", "node": first, "status": format!("{first} (active)") }));
        for n in &world.nodes {
            list.push(json!({
                "id": format!("lrm:{}", n.name), "type": "lrm", "node": n.name,
                "status": format!("{} (active)", n.name),
            }));
        }
    }
    for (sid, r) in &world.ha.resources {
        let vmid: u32 = sid.split(':').nth(1).and_then(|v| v.parse().ok()).unwrap_or_default();
        let (node, running) = world
            .guests
            .get(&vmid)
            .map_or((String::new(), false), |g| (g.node.clone(), g.running));
        let request = r.get("state").cloned().unwrap_or_else(|| "started".into());
        let crm = if running { "started" } else { "stopped" };
        list.push(json!({
            "id": format!("service:{sid}"), "type": "service", "sid": sid, "node": node,
            "state": crm, "crm_state": crm, "request_state": request,
            "status": format!("{sid} ({node}, {crm})"),
        }));
    }
    Reply::data(Value::Array(list))
}
