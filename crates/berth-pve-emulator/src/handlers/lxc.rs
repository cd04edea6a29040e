//! lxc-only endpoints: create (`vzcreate`) and interfaces.

use std::collections::BTreeMap;

use super::guest::{check_allocate, guest, spawn};
use crate::actions::{CreateCtJob, TaskAction};
use crate::api::{ApiError, ApiResult, Ctx, Reply, parse_vmid};
use crate::propstr;
use crate::state::{Guest, Kind};

/// Keys copied verbatim from the create request into the config.
const PLAIN_KEYS: &[&str] = &[
    "cores",
    "cpulimit",
    "cpuunits",
    "memory",
    "swap",
    "nameserver",
    "searchdomain",
    "features",
    "onboot",
    "description",
    "unprivileged",
    "console",
    "tty",
    "cmode",
    "timezone",
    "startup",
    "protection",
];

/// `POST /nodes/{node}/lxc`.
pub(super) fn create(ctx: &mut Ctx, node: &str) -> ApiResult {
    let p = ctx.params.clone();
    let vmid = parse_vmid("vmid", p.required("vmid")?)?;
    let ostemplate = p.required("ostemplate")?.to_string();
    if p.flag("restore")? {
        return super::restore::start(ctx, node, Kind::Lxc, &ostemplate);
    }
    let start = p.flag("start")?;
    for b in ["unprivileged", "onboot", "force", "unique", "protection"] {
        p.bool(b)?;
    }
    for i in ["cores", "memory", "swap", "cpuunits"] {
        p.int(i)?;
    }
    if let Some(pw) = p.get("password")
        && pw.len() < 5
    {
        return Err(ApiError::param("password", "value must be at least 5 characters long"));
    }
    let pool = p.get("pool").map(str::to_string);
    let default_storage = p.get("storage").unwrap_or("local").to_string();

    let shared = ctx.shared.clone();
    let mut world = shared.world();
    let tok = &ctx.token;
    check_allocate(&world, tok, pool.as_deref(), vmid)?;
    if let Some(existing) = world.guests.get(&vmid) {
        return Err(ApiError::fail(format!(
            "{} {vmid} already exists on node '{}'",
            existing.kind.label(),
            existing.node
        )));
    }
    // The template archive must be readable and present on this node.
    let tmpl_sid = ostemplate
        .split_once(':')
        .map(|(s, _)| s.to_string())
        .unwrap_or_default();
    tok.check(
        &format!("/storage/{tmpl_sid}"),
        &[
            "Datastore.AllocateTemplate",
            "Datastore.Audit",
            "Datastore.AllocateSpace",
        ],
        true,
    )?;
    if world.volume(node, &ostemplate).is_none_or(|v| v.content != "vztmpl") {
        return Err(ApiError::fail(format!("volume '{ostemplate}' does not exist")));
    }
    // rootfs: `[volume=]STORAGE:SIZE_GiB[,opts]`.
    let rootfs = p
        .get("rootfs")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{default_storage}:4"));
    let vol = propstr::drive_volume(&rootfs).unwrap_or_default();
    let Some((rsid, rsize)) = vol.split_once(':') else {
        return Err(ApiError::param(
            "rootfs",
            format!("invalid format - unable to parse volume '{vol}'"),
        ));
    };
    let Ok(gib) = rsize.parse::<f64>() else {
        return Err(ApiError::fail(format!(
            "rootfs: only new volumes (STORAGE:SIZE) are emulated, got '{vol}'"
        )));
    };
    let sdef = world.storage_for_alloc(rsid, node).map_err(ApiError::fail)?;
    if !sdef.supports("rootdir") {
        return Err(ApiError::fail(format!(
            "storage '{rsid}' does not support container directories"
        )));
    }
    tok.check(&format!("/storage/{rsid}"), &["Datastore.AllocateSpace"], false)?;
    let rootfs_opts: Vec<String> = propstr::parse(&rootfs)
        .into_iter()
        .filter_map(|(k, v)| match k.as_deref() {
            None | Some("volume") | Some("size") => None,
            Some(k) => Some(format!("{k}={v}")),
        })
        .collect();
    let size = match propstr::get_kv(&rootfs, "size") {
        Some(s) => propstr::parse_size(&s).map_err(|e| ApiError::param("rootfs", e))?,
        None => (gib * (1u64 << 30) as f64) as u64,
    };
    if let Some(keys) = p.get("ssh-public-keys")
        && !propstr::validate_ssh_keys(keys)
    {
        return Err(ApiError::fail("SSH public key validation error"));
    }

    let mut config = BTreeMap::new();
    config.insert("arch".to_string(), p.get("arch").unwrap_or("amd64").to_string());
    let file = ostemplate.rsplit('/').next().unwrap_or_default();
    let ostype = p
        .get("ostype")
        .map(str::to_string)
        .unwrap_or_else(|| file.split('-').next().unwrap_or("unmanaged").to_string());
    config.insert("ostype".to_string(), ostype);
    config.insert(
        "hostname".to_string(),
        p.get("hostname")
            .map(str::to_string)
            .unwrap_or_else(|| format!("CT{vmid}")),
    );
    config.insert("memory".to_string(), p.get("memory").unwrap_or("512").to_string());
    config.insert("swap".to_string(), p.get("swap").unwrap_or("512").to_string());
    for k in PLAIN_KEYS {
        if let Some(v) = p.get(k) {
            config.insert(k.to_string(), v.to_string());
        }
    }
    if let Some(t) = p.get("tags") {
        config.insert(
            "tags".into(),
            propstr::normalize_tags(t).map_err(|e| ApiError::param("tags", e))?,
        );
    }
    for (k, v) in p.pairs.iter() {
        if let Some(n) = k.strip_prefix("net")
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit())
        {
            let mut net = v.clone();
            if propstr::get_kv(&net, "name").is_none() {
                return Err(ApiError::param(
                    k,
                    "invalid format - format error: name: property is missing and it is not optional",
                ));
            }
            if let Some(bridge) = propstr::get_kv(&net, "bridge") {
                tok.check(&format!("/sdn/zones/localnetwork/{bridge}"), &["SDN.Use"], false)?;
            }
            if propstr::get_kv(&net, "hwaddr").is_none() {
                net = format!("{net},hwaddr={}", propstr::random_mac());
            }
            if propstr::get_kv(&net, "type").is_none() {
                net.push_str(",type=veth");
            }
            config.insert(k.clone(), net);
        }
    }
    // Like `create_and_lock_config`: the CT exists (locked) while the worker runs.
    let temp = BTreeMap::from([("lock".to_string(), "create".to_string())]);
    world.guests.insert(vmid, Guest::new(vmid, node, Kind::Lxc, temp));
    let job = CreateCtJob {
        node: node.to_string(),
        vmid,
        config,
        rootfs_storage: rsid.to_string(),
        rootfs_size: size,
        rootfs_opts,
        ostemplate,
        pool,
        start,
    };
    let duration = world.timings.create_ct;
    spawn(
        ctx,
        &mut world,
        node,
        "vzcreate",
        vmid,
        duration,
        TaskAction::CreateCt(Box::new(job)),
    )
}

/// `GET /nodes/{node}/lxc/{vmid}/interfaces`.
pub(super) fn interfaces(ctx: &mut Ctx, node: &str, vmid: u32) -> ApiResult {
    let world = ctx.world();
    ctx.token.check_vm(&world, vmid, &["VM.Audit"], false)?;
    let g = guest(&world, node, Kind::Lxc, vmid)?;
    if !g.running {
        return Err(ApiError::fail(format!("CT {vmid} not running")));
    }
    Reply::data(crate::agent::lxc_interfaces(&world, g))
}
