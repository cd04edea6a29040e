//! `/version`, `/nodes`, `/nodes/{node}/status`, `/cluster/resources`, `/cluster/nextid`.

use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::{Guest, Node, World};

const GIB: u64 = 1 << 30;

pub(super) fn version(ctx: &mut Ctx) -> ApiResult {
    if ctx.world().pve_major < 9 {
        return Reply::data(
            json!({ "version": "8.4.14", "release": "8.4", "repoid": "b502d23c55afcba1", "console": "html5" }),
        );
    }
    Reply::data(json!({ "version": "9.1.2", "release": "9.1", "repoid": "d48c6bbd8a6f1e5a", "console": "html5" }))
}

fn node_mem_used(world: &World, node: &str) -> u64 {
    2 * GIB
        + world
            .guests
            .values()
            .filter(|g| g.node == node && g.running)
            .map(|g| g.memory_mib() << 20)
            .sum::<u64>()
}

fn node_uptime(world: &World) -> u64 {
    3600 + world.boot.elapsed().as_secs()
}

fn node_entry(world: &World, n: &Node, audit: bool) -> Value {
    let mut v = json!({
        "node": n.name, "id": format!("node/{}", n.name), "type": "node",
        "status": if n.online { "online" } else { "offline" }, "level": "",
        "ssl_fingerprint": world.node_fingerprint,
    });
    if audit {
        v["cpu"] = json!(0.0123);
        v["maxcpu"] = json!(n.cpus);
        v["mem"] = json!(node_mem_used(world, &n.name));
        v["maxmem"] = json!(n.memory);
        v["uptime"] = json!(node_uptime(world));
        v["disk"] = json!(6 * GIB);
        v["maxdisk"] = json!(100 * GIB);
    }
    v
}

pub(super) fn nodes(ctx: &mut Ctx) -> ApiResult {
    let world = ctx.world();
    let list: Vec<Value> = world
        .nodes
        .iter()
        .map(|n| {
            node_entry(
                &world,
                n,
                ctx.token.allowed(&format!("/nodes/{}", n.name), &["Sys.Audit"], false),
            )
        })
        .collect();
    Reply::data(Value::Array(list))
}

pub(super) fn node_index() -> ApiResult {
    let dirs = [
        "apt",
        "capabilities",
        "ceph",
        "certificates",
        "config",
        "disks",
        "dns",
        "firewall",
        "hosts",
        "lxc",
        "network",
        "qemu",
        "replication",
        "report",
        "rrd",
        "rrddata",
        "scan",
        "sdn",
        "services",
        "status",
        "storage",
        "subscription",
        "syslog",
        "tasks",
        "time",
        "version",
        "vzdump",
    ];
    Reply::data(Value::Array(dirs.iter().map(|d| json!({ "name": d })).collect()))
}

pub(super) fn node_status(ctx: &mut Ctx, node: &str) -> ApiResult {
    ctx.token.check(&format!("/nodes/{node}"), &["Sys.Audit"], false)?;
    let world = ctx.world();
    let n = world
        .node(node)
        .ok_or_else(|| ApiError::fail(format!("no such cluster node '{node}'")))?;
    let used = node_mem_used(&world, node);
    Reply::data(json!({
        "memory": { "total": n.memory, "used": used, "free": n.memory - used.min(n.memory), "available": n.memory - used.min(n.memory) },
        "swap": { "total": 8 * GIB, "used": 0, "free": 8 * GIB },
        "cpuinfo": {
            "cpus": n.cpus, "cores": n.cpus / 2, "sockets": 1, "model": "AMD EPYC 7302P 16-Core Processor",
            "mhz": "2999.998", "hvm": "1", "user_hz": 100, "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep svm"
        },
        "cpu": 0.0123, "wait": 0.0004, "idle": 0,
        "uptime": node_uptime(&world),
        "loadavg": ["0.25", "0.30", "0.28"],
        "kversion": "Linux 6.14.11-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)",
        "pveversion": "pve-manager/9.1.2/d48c6bbd8a6f1e5a",
        "rootfs": { "total": 100 * GIB, "used": 6 * GIB, "free": 94 * GIB, "avail": 89 * GIB },
        "ksm": { "shared": 0 },
        "current-kernel": { "sysname": "Linux", "release": "6.14.11-4-pve", "machine": "x86_64",
            "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.11-4 (2025-10-10T08:04Z)" },
        "boot-info": { "mode": "efi", "secureboot": 0 },
    }))
}

/// A guest as `/cluster/resources` and pool member lists show it.
pub(super) fn guest_resource(world: &World, g: &Guest) -> Value {
    let kind = g.kind.as_str();
    let mut v = json!({
        "id": format!("{kind}/{}", g.vmid), "type": kind, "vmid": g.vmid, "node": g.node,
        "status": g.status_str(), "template": u8::from(g.is_template()),
        "maxmem": g.memory_mib() << 20, "maxdisk": g.maxdisk(), "maxcpu": g.cpus(),
        "mem": if g.running { (g.memory_mib() << 20) / 3 } else { 0 },
        "cpu": if g.running { 0.0071 } else { 0.0 }, "disk": 0, "uptime": g.uptime(),
        "diskread": 0, "diskwrite": 0, "netin": 0, "netout": 0,
    });
    let name_key = if g.kind == crate::state::Kind::Qemu {
        "name"
    } else {
        "hostname"
    };
    if let Some(name) = g.config.get(name_key) {
        v["name"] = json!(name);
    }
    if let Some(lock) = g.lock() {
        v["lock"] = json!(lock);
    }
    if let Some(pool) = world.pool_of(g.vmid) {
        v["pool"] = json!(pool);
    }
    if let Some(tags) = g.config.get("tags") {
        v["tags"] = json!(tags);
    }
    v
}

pub(super) fn storage_resource(world: &World, sdef: &crate::state::StorageDef, node: &str) -> Value {
    let used = world.storage_used(sdef, node);
    json!({
        "id": format!("storage/{node}/{}", sdef.id), "type": "storage", "storage": sdef.id, "node": node,
        "status": "available", "plugintype": sdef.kind, "content": sdef.content_string(),
        "shared": u8::from(sdef.shared), "disk": used, "maxdisk": sdef.total,
    })
}

pub(super) fn resources(ctx: &mut Ctx) -> ApiResult {
    let filter = ctx.params.get("type").map(str::to_string);
    if let Some(t) = &filter
        && !matches!(t.as_str(), "vm" | "storage" | "node" | "sdn" | "pool")
    {
        return Err(ApiError::param(
            "type",
            format!("value '{t}' does not have a value in the enumeration 'vm, storage, node, sdn, pool'"),
        ));
    }
    let want = |t: &str| filter.as_deref().is_none_or(|f| f == t);
    let world = ctx.world();
    let tok = &ctx.token;
    let mut out = Vec::new();
    if want("vm") {
        for g in world.guests.values() {
            if tok.vm_allowed(&world, g.vmid, &["VM.Audit"], false) {
                out.push(guest_resource(&world, g));
            }
        }
    }
    if want("storage") {
        for n in &world.nodes {
            for s in &world.storages {
                if s.nodes.contains(&n.name)
                    && tok.allowed(
                        &format!("/storage/{}", s.id),
                        &["Datastore.Audit", "Datastore.AllocateSpace"],
                        true,
                    )
                {
                    out.push(storage_resource(&world, s, &n.name));
                }
            }
        }
    }
    if want("node") {
        for n in &world.nodes {
            if tok.allowed(&format!("/nodes/{}", n.name), &["Sys.Audit"], false) {
                out.push(node_entry(&world, n, true));
            }
        }
    }
    if want("pool") {
        for id in world.pools.keys() {
            if tok.allowed(&format!("/pool/{id}"), &["Pool.Audit"], false) {
                out.push(json!({ "id": format!("/pool/{id}"), "type": "pool", "pool": id }));
            }
        }
    }
    Reply::data(Value::Array(out))
}

pub(super) fn nextid(ctx: &mut Ctx) -> ApiResult {
    let world = ctx.world();
    if let Some(raw) = ctx.params.get("vmid") {
        let vmid = crate::api::parse_vmid("vmid", raw)?;
        if world.guests.contains_key(&vmid) {
            return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
        }
        // Perl echoes the request string back.
        return Reply::data(json!(raw));
    }
    let (lower, upper) = (100u32, 1_000_000u32);
    match (lower..upper).find(|id| !world.guests.contains_key(id)) {
        Some(id) => Reply::data(json!(id.to_string())),
        None => Err(ApiError::fail(format!(
            "unable to get any free VMID in range [{lower}, {upper}]"
        ))),
    }
}

fn node_ip(n: &crate::state::Node) -> String {
    format!("10.0.0.{}", 10 + n.index)
}

/// `GET /cluster/status`: the cluster and each node's membership.
pub(super) fn status(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let world = ctx.world();
    let online = world.nodes.iter().filter(|n| n.online).count();
    let mut list = vec![json!({
        "type": "cluster", "id": "cluster", "name": "berth-lab", "nodes": world.nodes.len(),
        "quorate": u8::from(online * 2 > world.nodes.len()), "version": world.nodes.len() + 2,
    })];
    for n in &world.nodes {
        list.push(json!({
            "type": "node", "id": format!("node/{}", n.name), "name": n.name, "nodeid": n.index,
            "ip": node_ip(n), "online": u8::from(n.online), "local": u8::from(n.index == 1), "level": "",
        }));
    }
    Reply::data(Value::Array(list))
}

/// `GET /cluster/config/nodes`: corosync's node list.
pub(super) fn config_nodes(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let world = ctx.world();
    let list: Vec<Value> = world
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.name, "name": n.name, "nodeid": n.index.to_string(), "quorum_votes": "1",
                "ring0_addr": node_ip(n),
            })
        })
        .collect();
    Reply::data(Value::Array(list))
}

/// `GET /cluster/options` (`datacenter.cfg`): the MAC prefix and the range new VMIDs come from.
pub(super) fn options(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    Reply::data(json!({
        "keyboard": "en-us", "mac_prefix": "BC:24:11", "console": "html5",
        "next-id": { "lower": "100", "upper": "1000000" },
    }))
}
