//! Guest config updates (qemu `update_vm` and lxc `update_ct`): permissions per key, locks, digest,
//! pending changes on running guests, disk allocation syntax, and the JSON views of a config.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, Params};
use crate::perms::Token;
use crate::propstr::{self, drive_volume, is_cdrom, is_cloudinit};
use crate::state::{Guest, Kind, World};

pub(crate) fn is_cloudinit_key(k: &str) -> bool {
    matches!(
        k,
        "ciuser" | "cipassword" | "sshkeys" | "nameserver" | "searchdomain" | "citype" | "cicustom" | "ciupgrade"
    ) || indexed(k, "ipconfig")
}

fn indexed(k: &str, prefix: &str) -> bool {
    k.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Keys whose values PVE returns as JSON numbers.
fn is_int_key(k: &str) -> bool {
    matches!(
        k,
        "cores"
            | "sockets"
            | "vcpus"
            | "balloon"
            | "template"
            | "onboot"
            | "cpuunits"
            | "shares"
            | "protection"
            | "numa"
            | "acpi"
            | "kvm"
            | "tablet"
            | "localtime"
            | "ciupgrade"
            | "swap"
            | "unprivileged"
            | "console"
            | "tty"
    )
}

/// `digest`: SHA of the config as written (PVE uses SHA-1; we expose 40 hex chars of SHA-256).
pub(crate) fn digest(g: &Guest) -> String {
    let mut h = Sha256::new();
    for (k, v) in &g.config {
        h.update(format!("{k}: {v}\n"));
    }
    h.update("[PENDING]\n");
    for (k, v) in &g.pending {
        h.update(format!("{k}: {v}\n"));
    }
    for k in &g.pending_delete {
        h.update(format!("delete: {k}\n"));
    }
    hex::encode(h.finalize())[..40].to_string()
}

fn render_value(k: &str, v: &str) -> Value {
    if k == "cipassword" {
        return json!("**********");
    }
    if is_int_key(k)
        && let Ok(n) = v.parse::<i64>()
    {
        return json!(n);
    }
    json!(v)
}

/// `GET .../config`: pending values applied unless `current`.
pub(crate) fn config_json(g: &Guest, current: bool) -> Value {
    let mut map = serde_json::Map::new();
    let mut merged = g.config.clone();
    if !current {
        for (k, v) in &g.pending {
            merged.insert(k.clone(), v.clone());
        }
        for k in &g.pending_delete {
            merged.remove(k);
        }
    }
    for (k, v) in &merged {
        map.insert(k.clone(), render_value(k, v));
    }
    map.insert("digest".into(), json!(digest(g)));
    Value::Object(map)
}

/// PVE's pending-style list: per key (sorted, once) `{key, value?, pending?, delete?}`, where `entry` gives the
/// value in effect, the value waiting to take effect and whether the key is waiting to be removed.
fn pending_list<'a>(
    keys: impl Iterator<Item = &'a String>,
    entry: impl Fn(&str) -> (Option<&'a String>, Option<&'a String>, bool),
) -> Value {
    let mut keys: Vec<&String> = keys.collect();
    keys.sort();
    keys.dedup();
    let items: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            let (value, pending, delete) = entry(k);
            let mut item = json!({ "key": k });
            if let Some(v) = value {
                item["value"] = render_value(k, v);
            }
            if let Some(v) = pending {
                item["pending"] = render_value(k, v);
            }
            if delete {
                item["delete"] = json!(1);
            }
            item
        })
        .collect();
    Value::Array(items)
}

/// `GET .../pending`: every key with its current value, pending value and delete flag.
pub(crate) fn pending_json(g: &Guest) -> Value {
    let keys = g.config.keys().chain(g.pending.keys()).chain(g.pending_delete.iter());
    pending_list(keys, |k| {
        (g.config.get(k), g.pending.get(k), g.pending_delete.contains(k))
    })
}

/// `GET .../cloudinit`: cloud-init keys, with `pending` where the drive is out of date.
pub(crate) fn cloudinit_json(g: &Guest) -> Value {
    let keys = g
        .config
        .keys()
        .chain(g.cloudinit_applied.keys())
        .filter(|k| is_cloudinit_key(k));
    // The drive's value is in effect; a config value that differs (or is gone) is pending.
    pending_list(keys, |k| match (g.cloudinit_applied.get(k), g.config.get(k)) {
        (Some(applied), Some(cur)) if applied == cur => (Some(cur), None, false),
        (applied, cur) => (applied, cur, applied.is_some() && cur.is_none()),
    })
}

/// Which privileges (any of) a qemu config key needs; None = root only.
fn qemu_key_privs(k: &str, v: Option<&str>) -> Option<&'static [&'static str]> {
    const CLOUDINIT: &[&str] = &["VM.Config.Cloudinit", "VM.Config.Network"];
    if is_cloudinit_key(k) {
        return Some(CLOUDINIT);
    }
    if indexed(k, "net") {
        return Some(&["VM.Config.Network"]);
    }
    if propstr::is_disk_key(k) || indexed(k, "unused") {
        if v.is_some_and(|v| is_cdrom(v) && !is_cloudinit(v)) {
            return Some(&["VM.Config.CDROM"]);
        }
        return Some(&["VM.Config.Disk"]);
    }
    if indexed(k, "numa") {
        return Some(&["VM.Config.CPU"]);
    }
    if indexed(k, "serial") || indexed(k, "parallel") || indexed(k, "usb") {
        return Some(&["VM.Config.HWType"]);
    }
    match k {
        "cores" | "sockets" | "vcpus" | "cpu" | "cpulimit" | "cpuunits" | "numa" | "affinity" | "smp" => {
            Some(&["VM.Config.CPU"])
        }
        "memory" | "balloon" | "shares" | "hugepages" | "keephugepages" | "allow-ksm" => Some(&["VM.Config.Memory"]),
        "vga" | "scsihw" | "machine" | "bios" | "keyboard" | "audio0" | "rng0" | "watchdog" | "tdf" => {
            Some(&["VM.Config.HWType"])
        }
        "name" | "description" | "tags" | "onboot" | "agent" | "boot" | "bootdisk" | "ostype" | "protection"
        | "startup" | "hotplug" | "acpi" | "kvm" | "tablet" | "localtime" | "freeze" | "startdate" | "hookscript"
        | "vmstatestorage" | "reboot" | "template" | "smbios1" | "vmgenid" | "meta" | "spice_enhancements" => {
            Some(&["VM.Config.Options"])
        }
        _ => None,
    }
}

fn lxc_key_privs(k: &str) -> Option<&'static [&'static str]> {
    if indexed(k, "net") {
        return Some(&["VM.Config.Network"]);
    }
    if propstr::is_disk_key(k) || indexed(k, "unused") {
        return Some(&["VM.Config.Disk"]);
    }
    match k {
        "cores" | "cpulimit" | "cpuunits" => Some(&["VM.Config.CPU"]),
        "memory" | "swap" => Some(&["VM.Config.Memory"]),
        "hostname" | "description" | "tags" | "onboot" | "nameserver" | "searchdomain" | "startup" | "protection"
        | "features" | "ostype" | "console" | "tty" | "cmode" | "timezone" | "hookscript" | "template"
        | "entrypoint" | "env" => Some(&["VM.Config.Options"]),
        _ => None,
    }
}

fn hotplug_set(g: &Guest) -> Vec<String> {
    match g.config.get("hotplug").map(String::as_str) {
        None | Some("1") => vec!["network".into(), "disk".into(), "usb".into()],
        Some("0") => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    }
}

/// Can `k` change on a running qemu VM without a restart?
fn qemu_hotpluggable(g: &Guest, k: &str) -> bool {
    let hp = hotplug_set(g);
    let has = |x: &str| hp.iter().any(|h| h == x);
    if is_cloudinit_key(k) {
        // Written to the config; the drive itself is regenerated by PUT .../cloudinit or at start.
        return true;
    }
    if indexed(k, "net") {
        return has("network");
    }
    if propstr::is_disk_key(k) || indexed(k, "unused") {
        return has("disk") || g.config.get(k).is_some_and(|v| is_cdrom(v));
    }
    match k {
        "name" | "description" | "tags" | "onboot" | "protection" | "startup" | "hookscript" | "vmstatestorage"
        | "shares" | "balloon" => true,
        "memory" => has("memory"),
        "vcpus" => has("cpu"),
        _ => false,
    }
}

fn split_list(v: Option<&str>) -> Vec<String> {
    v.map(|s| {
        s.split([',', ';', ' ', '\t', '\n'])
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// `STORAGE:SIZE_GiB` (allocate a disk) or `STORAGE:cloudinit`.
enum Alloc {
    Disk { storage: String, gib: f64 },
    Cloudinit { storage: String },
}

fn alloc_request(v: &str) -> Option<Alloc> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^([a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]):(\d+(?:\.\d+)?|cloudinit)$").expect("static regex")
    });
    let vol = drive_volume(v)?;
    let c = RE.captures(&vol)?;
    let storage = c[1].to_string();
    if &c[2] == "cloudinit" {
        return Some(Alloc::Cloudinit { storage });
    }
    Some(Alloc::Disk {
        storage,
        gib: c[2].parse().ok()?,
    })
}

/// Common checks and the parsed update; shared by qemu and lxc.
struct Update {
    changes: Vec<(String, String)>,
    delete: Vec<String>,
    revert: Vec<String>,
    digest: Option<String>,
    skiplock: bool,
}

fn parse_update(params: &Params, token: &Token) -> Result<Update, ApiError> {
    let skiplock = params.flag("skiplock")?;
    if skiplock && !token.is_root() {
        return Err(ApiError::param("skiplock", "Only root may use this option."));
    }
    let changes = params.without(&[
        "node",
        "vmid",
        "delete",
        "revert",
        "digest",
        "skiplock",
        "background_delay",
    ]);
    let delete = split_list(params.get("delete"));
    let revert = split_list(params.get("revert"));
    if changes.is_empty() && delete.is_empty() && revert.is_empty() {
        return Err(ApiError::fail("no options specified"));
    }
    for k in &delete {
        if changes.iter().any(|(c, _)| c == k) {
            return Err(ApiError::fail(format!(
                "unable to delete parameter '{k}' - it is also set"
            )));
        }
    }
    Ok(Update {
        changes,
        delete,
        revert,
        digest: params.get("digest").map(str::to_string),
        skiplock,
    })
}

/// `PUT /nodes/{node}/{qemu|lxc}/{vmid}/config` (and the qemu `POST` that runs it as a worker).
pub(crate) fn update(
    world: &mut World,
    token: &Token,
    node: &str,
    kind: Kind,
    vmid: u32,
    params: &Params,
) -> Result<(), ApiError> {
    let mut up = parse_update(params, token)?;
    // Value checks that PVE does before taking the lock.
    for (k, v) in up.changes.iter_mut() {
        match kind {
            Kind::Qemu => qemu_value(k, v)?,
            Kind::Lxc => lxc_value(k, v)?,
        }
    }
    check_update_perms(world, token, kind, vmid, &up)?;
    let missing = || ApiError::fail(kind.missing_config(node, vmid));
    let g = world.guest_on(node, kind, vmid).ok_or_else(missing)?;
    check_digest_and_lock(g, &up.digest, up.skiplock)?;
    if kind == Kind::Qemu {
        qemu_alloc(world, node, vmid, &mut up.changes)?;
    }
    let g = world.guest_on_mut(node, kind, vmid).ok_or_else(missing)?;
    let freed = match kind {
        Kind::Qemu => qemu_apply(g, up.changes, up.delete),
        Kind::Lxc => {
            lxc_apply(g, up.changes, up.delete);
            Vec::new()
        }
    };
    for k in up.revert {
        g.pending.remove(&k);
        g.pending_delete.remove(&k);
    }
    for volid in freed {
        world.remove_volume(node, &volid);
    }
    Ok(())
}

/// Checks and normalizes one qemu value (ssh keys, password hash, memory, tags, a MAC for new NICs).
pub(crate) fn qemu_value(k: &str, v: &mut String) -> Result<(), ApiError> {
    match k {
        "sshkeys" => {
            if !propstr::is_urlencoded(v) {
                return Err(ApiError::param(
                    "sshkeys",
                    format!("invalid format - invalid urlencoded string: {v}"),
                ));
            }
            if !propstr::validate_ssh_keys(&propstr::uri_unescape(v)) {
                return Err(ApiError::fail("SSH public key validation error"));
            }
        }
        "cipassword" => *v = propstr::hash_password(v),
        "memory" => match propstr::memory_current(v) {
            Some(m) if m >= 16 => *v = m.to_string(),
            Some(_) => {
                return Err(ApiError::param(
                    "memory",
                    "invalid format - value must have a minimum value of 16",
                ));
            }
            None => {
                return Err(ApiError::param(
                    "memory",
                    format!("invalid format - value '{v}' does not look like a valid memory size"),
                ));
            }
        },
        "tags" => *v = propstr::normalize_tags(v).map_err(|e| ApiError::param("tags", e))?,
        _ if indexed(k, "net") && propstr::net_mac(v).is_none() => {
            *v = propstr::qemu_net_with_mac(v, &propstr::random_mac());
        }
        _ => {}
    }
    Ok(())
}

/// Checks and normalizes one lxc value (tags, read-only keys, a MAC for new NICs).
fn lxc_value(k: &str, v: &mut String) -> Result<(), ApiError> {
    match k {
        "tags" => *v = propstr::normalize_tags(v).map_err(|e| ApiError::param("tags", e))?,
        "unprivileged" | "arch" => {
            return Err(ApiError::fail(format!("unable to modify read-only option: '{k}'")));
        }
        _ if indexed(k, "net") && propstr::get_kv(v, "hwaddr").is_none() => {
            *v = format!("{v},hwaddr={}", propstr::random_mac());
        }
        _ => {}
    }
    Ok(())
}

/// Permissions: one VM.Config.* privilege to enter, then per changed or deleted key (qemu also checks the
/// bridge of a NIC and the storage of a new disk).
fn check_update_perms(world: &World, token: &Token, kind: Kind, vmid: u32, up: &Update) -> Result<(), ApiError> {
    let entry: &[&str] = match kind {
        Kind::Qemu => &[
            "VM.Config.Disk",
            "VM.Config.CDROM",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.HWType",
            "VM.Config.Options",
            "VM.Config.Cloudinit",
        ],
        Kind::Lxc => &[
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.Options",
        ],
    };
    token.check_vm(world, vmid, entry, true)?;
    let keys = up
        .changes
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())))
        .chain(up.delete.iter().map(|k| (k.as_str(), None)));
    check_key_perms(world, token, kind, vmid, keys)
}

/// The privileges each changed (`Some` value) or deleted (`None`) key needs, as PVE checks
/// them on update and on create.
pub(crate) fn check_key_perms<'a>(
    world: &World,
    token: &Token,
    kind: Kind,
    vmid: u32,
    keys: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<(), ApiError> {
    for (k, v) in keys {
        let privs = match kind {
            Kind::Qemu => qemu_key_privs(k, v),
            Kind::Lxc => lxc_key_privs(k),
        };
        match privs {
            Some(privs) => token.check_vm(world, vmid, privs, true)?,
            None if token.is_root() => {}
            None => return Err(ApiError::fail(format!("only root can set '{k}' config"))),
        }
        if kind == Kind::Qemu
            && let Some(v) = v
        {
            if indexed(k, "net")
                && let Some(bridge) = propstr::get_kv(v, "bridge")
            {
                token.check(&format!("/sdn/zones/localnetwork/{bridge}"), &["SDN.Use"], false)?;
            }
            if let Some(a) = alloc_request(v) {
                let (Alloc::Disk { storage, .. } | Alloc::Cloudinit { storage }) = &a;
                token.check(&format!("/storage/{storage}"), &["Datastore.AllocateSpace"], false)?;
            }
        }
    }
    Ok(())
}

/// Disk allocations (`STORAGE:N` / `STORAGE:cloudinit`): each is replaced by the new volume.
pub(crate) fn qemu_alloc(
    world: &mut World,
    node: &str,
    vmid: u32,
    changes: &mut [(String, String)],
) -> Result<(), ApiError> {
    for (_, v) in changes.iter_mut() {
        let Some(a) = alloc_request(v) else { continue };
        let (Alloc::Disk { storage, .. } | Alloc::Cloudinit { storage }) = &a;
        let sdef = world
            .storage(storage)
            .ok_or_else(|| ApiError::fail(format!("storage '{storage}' does not exist")))?;
        if !sdef.supports("images") {
            return Err(ApiError::fail(format!(
                "storage '{storage}' does not support vm images"
            )));
        }
        let new = match a {
            Alloc::Disk { storage, gib } => {
                let size = (gib * (1u64 << 30) as f64) as u64;
                let volid = world.alloc_disk(
                    node,
                    &storage,
                    vmid,
                    size,
                    propstr::get_kv(v, "format").as_deref(),
                    "images",
                );
                let mut s = propstr::set_drive_volume(v, &volid);
                s = propstr::set_kv(&s, "size", &propstr::format_size(size));
                s
            }
            Alloc::Cloudinit { storage } => {
                let volid = world.alloc_cloudinit(node, &storage, vmid);
                let s = propstr::set_drive_volume(v, &volid);
                if propstr::get_kv(&s, "media").is_none() {
                    format!("{s},media=cdrom")
                } else {
                    s
                }
            }
        };
        *v = new;
    }
    Ok(())
}

/// Whether a running container takes a change of `k` at once (pve-container
/// `vmconfig_hotplug_pending`: `$LXC_FASTPLUG_OPTIONS`, cgroup limits, NICs, and mount points or
/// devices that are new; `exists` says whether the config has `k` now).
fn lxc_hotpluggable(k: &str, exists: bool) -> bool {
    matches!(
        k,
        "description"
            | "onboot"
            | "startup"
            | "protection"
            | "hostname"
            | "hookscript"
            | "cores"
            | "tags"
            | "lock"
            | "cpulimit"
            | "cpuunits"
            | "memory"
            | "swap"
    ) || indexed(k, "net")
        || ((indexed(k, "mp") || indexed(k, "dev")) && !exists)
}

/// Writes lxc changes and deletions: pending where a running container cannot take them at once,
/// else into the config.
fn lxc_apply(g: &mut Guest, changes: Vec<(String, String)>, delete: Vec<String>) {
    for (k, v) in changes {
        if g.running && !lxc_hotpluggable(&k, g.config.contains_key(&k)) {
            g.pending_delete.remove(&k);
            g.pending.insert(k, v);
        } else {
            g.pending.remove(&k);
            g.config.insert(k, v);
        }
    }
    for k in delete {
        g.pending.remove(&k);
        let live =
            matches!(k.as_str(), "swap" | "cpulimit" | "cpuunits") || indexed(&k, "net") || indexed(&k, "unused");
        if g.running && !live && !lxc_hotpluggable(&k, true) {
            if g.config.contains_key(&k) {
                g.pending_delete.insert(k);
            }
            continue;
        }
        g.config.remove(&k);
    }
}

/// Writes qemu changes and deletions: pending where a running VM cannot take them live, else into the
/// config, retiring replaced or deleted drives. Returns the volumes to free.
fn qemu_apply(g: &mut Guest, changes: Vec<(String, String)>, delete: Vec<String>) -> Vec<String> {
    let running = g.running;
    let mut freed: Vec<String> = Vec::new();
    for (k, v) in changes {
        if running && !qemu_hotpluggable(g, &k) {
            g.pending_delete.remove(&k);
            g.pending.insert(k, v);
        } else {
            if propstr::is_disk_key(&k)
                && let Some(old) = g.config.get(&k).cloned()
                && drive_volume(&old) != drive_volume(&v)
            {
                retire_drive(g, &old, &mut freed);
            }
            g.pending.remove(&k);
            g.config.insert(k, v);
        }
    }
    for k in delete {
        if running && !qemu_hotpluggable(g, &k) {
            g.pending.remove(&k);
            if g.config.contains_key(&k) {
                g.pending_delete.insert(k);
            }
            continue;
        }
        g.pending.remove(&k);
        if let Some(old) = g.config.remove(&k) {
            if propstr::is_disk_key(&k) {
                retire_drive(g, &old, &mut freed);
            } else if indexed(&k, "unused") {
                freed.extend(drive_volume(&old));
            }
        }
    }
    freed
}

/// A replaced or deleted drive: cloud-init volumes are freed, other disks become `unusedN`.
fn retire_drive(g: &mut Guest, old: &str, freed: &mut Vec<String>) {
    let Some(volid) = drive_volume(old) else { return };
    if is_cloudinit(old) {
        freed.push(volid);
        return;
    }
    if is_cdrom(old) {
        return;
    }
    let n = (0..)
        .find(|n| !g.config.contains_key(&format!("unused{n}")))
        .unwrap_or(0);
    g.config.insert(format!("unused{n}"), volid);
}

fn check_digest_and_lock(g: &Guest, digest_param: &Option<String>, skiplock: bool) -> Result<(), ApiError> {
    if let Some(d) = digest_param
        && !d.is_empty()
        && *d != digest(g)
    {
        return Err(ApiError::fail(
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    if !skiplock && let Some(lock) = g.lock() {
        return Err(ApiError::fail(format!("{} is locked ({lock})", g.kind.label())));
    }
    Ok(())
}
