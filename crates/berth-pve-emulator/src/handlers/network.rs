//! `/nodes/{node}/network[/{iface}]`: interfaces edited in a staged file (`interfaces.new`),
//! applied by a reload task, dropped by a revert, as pve-manager's `API2::Network` does it,
//! including its quirk that an update recomputes `method` from the call's own parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::actions::TaskAction;
use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::netcfg::{Iface, NodeNetwork, ports};
use crate::state::World;
use crate::tasks::TaskSpec;

const BOOLEAN: &[&str] = &["autostart", "bridge_vlan_aware"];

fn net<'a>(world: &'a mut World, node: &str) -> &'a mut NodeNetwork {
    world.networks.entry(node.to_string()).or_default()
}

/// `GET /nodes/{node}/network[?type=]`: the staged view, with `changes` when edits wait.
pub(super) fn list(ctx: &mut Ctx, node: &str) -> ApiResult {
    let filter = ctx.params.get("type").map(str::to_string);
    let mut world = ctx.world();
    let n = net(&mut world, node);
    let list: Vec<Value> = n
        .view()
        .iter()
        .filter(|(_, rec)| {
            let t = rec.get("type").map_or("", String::as_str);
            match filter.as_deref() {
                None | Some("include_sdn") => true,
                Some("any_bridge" | "any_local_bridge") => matches!(t, "bridge" | "OVSBridge"),
                Some(f) => f == t,
            }
        })
        .map(|(name, rec)| n.json(name, rec))
        .collect();
    let mut reply = Reply::data(Value::Array(list))?;
    reply.changes = n.changes();
    Ok(reply)
}

fn missing() -> ApiError {
    ApiError::param("iface", "interface does not exist")
}

pub(super) fn get(ctx: &mut Ctx, node: &str, iface: &str) -> ApiResult {
    ctx.token.check(&format!("/nodes/{node}"), &["Sys.Audit"], false)?;
    let mut world = ctx.world();
    let n = net(&mut world, node);
    let rec = n.view().get(iface).ok_or_else(missing)?;
    let mut v = n.json(iface, rec);
    if let Value::Object(m) = &mut v {
        m.remove("iface");
    }
    Reply::data(v)
}

/// The call's interface settings, booleans as 1/0, `cidr` split into address and netmask.
fn settings(ctx: &Ctx) -> Result<Iface, ApiError> {
    let mut p: Iface = BTreeMap::new();
    for (k, v) in ctx.params.without(&["node", "iface", "delete"]) {
        let v = match BOOLEAN.contains(&k.as_str()) {
            true => if matches!(v.as_str(), "1" | "true" | "yes" | "on") {
                "1"
            } else {
                "0"
            }
            .to_string(),
            false => v,
        };
        p.insert(k, v);
    }
    if let Some(cidr) = p.remove("cidr") {
        if p.contains_key("address") {
            return Err(ApiError::param("address", "address conflicts with cidr"));
        }
        if p.contains_key("netmask") {
            return Err(ApiError::param("netmask", "netmask conflicts with cidr"));
        }
        let (a, m) = cidr.split_once('/').unwrap_or((&cidr, "32"));
        p.insert("address".into(), a.to_string());
        p.insert("netmask".into(), m.to_string());
    }
    if let Some(cidr) = p.remove("cidr6") {
        if p.contains_key("address6") {
            return Err(ApiError::param("address6", "address6 conflicts with cidr6"));
        }
        if p.contains_key("netmask6") {
            return Err(ApiError::param("netmask6", "netmask6 conflicts with cidr6"));
        }
        let (a, m) = cidr.split_once('/').unwrap_or((&cidr, "128"));
        p.insert("address6".into(), a.to_string());
        p.insert("netmask6".into(), m.to_string());
    }
    if let Some(mask) = p.get("netmask").filter(|m| m.contains('.')) {
        let bits: u32 = mask
            .split('.')
            .filter_map(|o| o.parse::<u8>().ok())
            .map(|o| o.count_ones())
            .sum();
        p.insert("netmask".into(), bits.to_string());
    }
    if let Some(vids) = p.get("bridge_vids") {
        let list: Vec<&str> = vids.split([' ', ',', ';']).filter(|v| !v.is_empty()).collect();
        if list.is_empty() {
            return Err(ApiError::param("bridge_vids", "VLAN list items are empty"));
        }
        p.insert("bridge_vids".into(), list.join(" "));
    }
    Ok(p)
}

/// `check_duplicate_gateway` and `check_duplicate_ports` against the other interfaces.
fn check_duplicates(ifaces: &BTreeMap<String, Iface>, me: &str, p: &Iface) -> Result<(), ApiError> {
    for key in ["gateway", "gateway6"] {
        if p.contains_key(key)
            && let Some((other, _)) = ifaces.iter().find(|(n, r)| *n != me && r.contains_key(key))
        {
            let what = if key == "gateway" {
                "Default gateway"
            } else {
                "Default ipv6 gateway"
            };
            return Err(ApiError::param(
                key,
                format!("{what} already exists on interface '{other}'."),
            ));
        }
    }
    let Some(param) = ["bridge_ports", "slaves"].into_iter().find(|k| p.contains_key(*k)) else {
        return Ok(());
    };
    let new: Vec<&str> = ports(p).collect();
    for (other, rec) in ifaces.iter().filter(|(n, _)| *n != me) {
        if let Some(port) = ports(rec).find(|port| new.contains(port)) {
            return Err(ApiError::param(
                param,
                format!("{port} is already used on interface '{other}'."),
            ));
        }
    }
    Ok(())
}

/// `families`, `method` and `method6` from the call's own addresses (PVE's rule).
fn methods(p: &mut Iface, mut families: Vec<String>) {
    for (key, fam, method) in [("address", "inet", "method"), ("address6", "inet6", "method6")] {
        if p.contains_key(key) {
            if !families.iter().any(|f| f == fam) {
                families.push(fam.to_string());
            }
        } else {
            families.retain(|f| f != fam);
        }
        let m = if p.contains_key(key) { "static" } else { "manual" };
        p.insert(method.into(), m.into());
    }
    if families.is_empty() {
        families.push("inet".into());
    }
    p.insert("families".into(), families.join(","));
}

pub(super) fn create(ctx: &mut Ctx, node: &str) -> ApiResult {
    ctx.token.check(&format!("/nodes/{node}"), &["Sys.Modify"], false)?;
    let iface = ctx.params.required("iface")?.to_string();
    let mut p = settings(ctx)?;
    if p.get("type").is_some_and(|t| t.starts_with("OVS")) {
        return Err(ApiError::fail(
            "Open VSwitch is not installed (need package 'openvswitch-switch')",
        ));
    }
    let mut world = ctx.world();
    let n = net(&mut world, node);
    if n.view().contains_key(&iface) {
        return Err(ApiError::param("iface", "interface already exists"));
    }
    check_duplicates(n.view(), &iface, &p)?;
    methods(&mut p, Vec::new());
    n.staged().insert(iface, p);
    Reply::null()
}

/// `PUT …/{iface}`: `delete=` first, then the call's settings merged in; `method` follows the
/// call, so a PUT without an address turns the interface to `manual` (the address stays).
pub(super) fn update(ctx: &mut Ctx, node: &str, iface: &str) -> ApiResult {
    ctx.token.check(&format!("/nodes/{node}"), &["Sys.Modify"], false)?;
    let delete: Vec<String> = ctx.params.split_list("delete");
    let mut p = settings(ctx)?;
    let mut world = ctx.world();
    let n = net(&mut world, node);
    let mut rec = n.view().get(iface).cloned().ok_or_else(missing)?;
    let mut families: Vec<String> = rec
        .get("families")
        .map(|f| f.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    for k in &delete {
        rec.remove(k);
        match k.as_str() {
            "address" => families.retain(|f| f != "inet"),
            "address6" => families.retain(|f| f != "inet6"),
            "cidr" => {
                rec.remove("address");
                rec.remove("netmask");
            }
            "cidr6" => {
                rec.remove("address6");
                rec.remove("netmask6");
            }
            _ => {}
        }
    }
    check_duplicates(n.view(), iface, &p)?;
    methods(&mut p, families);
    rec.extend(p);
    n.staged().insert(iface.to_string(), rec);
    Reply::null()
}

pub(super) fn delete(ctx: &mut Ctx, node: &str, iface: &str) -> ApiResult {
    ctx.token.check(&format!("/nodes/{node}"), &["Sys.Modify"], false)?;
    let mut world = ctx.world();
    let n = net(&mut world, node);
    if !n.view().contains_key(iface) {
        return Err(missing());
    }
    n.staged().remove(iface);
    Reply::null()
}

/// `PUT /nodes/{node}/network`: a `srvreload` task that makes the staged file the running one.
pub(super) fn reload(ctx: &mut Ctx, node: &str) -> ApiResult {
    ctx.token.check(&format!("/nodes/{node}"), &["Sys.Modify"], false)?;
    let fault = ctx.task_fault.take();
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    let spec = TaskSpec {
        node: node.to_string(),
        kind: "srvreload",
        id: "networking".into(),
        user: ctx.token.tokenid.clone(),
        duration: world.timings.stop.max(Duration::from_millis(1)),
        action: TaskAction::NetworkReload { node: node.to_string() },
        fault,
        log: Vec::new(),
    };
    let upid = crate::tasks::start(&shared, &mut world, spec);
    Reply::data(json!(upid))
}

/// `DELETE /nodes/{node}/network`: the staged edits are dropped (everyone's).
pub(super) fn revert(ctx: &mut Ctx, node: &str) -> ApiResult {
    ctx.token.check(&format!("/nodes/{node}"), &["Sys.Modify"], false)?;
    let mut world = ctx.world();
    net(&mut world, node).pending = None;
    Reply::null()
}

/// The reload task's effect: the staged file becomes the running one. Like `ifreload -a`, a port
/// that does not exist is only reported in the log; the task still ends OK.
pub(crate) fn apply_reload(world: &mut World, node: &str) -> Result<Vec<String>, String> {
    let n = net(world, node);
    let Some(new) = n.pending.take() else {
        return Ok(Vec::new());
    };
    let mut log = Vec::new();
    for (name, rec) in &new {
        for port in ports(rec) {
            if !n.physical.contains(port) && !new.contains_key(port) {
                log.push(format!("{name} : warning: {name}: port {port}: does not exist"));
            }
        }
    }
    n.running = new;
    Ok(log)
}
