//! Containers (LXC) as objects: a container's config flattened into fields the planner compares
//! one by one (`cores`, `rootfs.storage`, `rootfs.size`, `net0.bridge`, plus `node`, `state`,
//! `pool`), and which of them a running container takes at once (pve-container
//! `vmconfig_hotplug_pending`: CPU and memory limits through cgroups, NICs hot-plugged, volumes
//! grown live; the rest waits for its restart).

use std::collections::BTreeMap;

use berth_proxmox::client::propstring::PropertyString;

use crate::fields;
use crate::model::{Kind, Object};

/// `rootfs` and `mpN`: volumes.
pub(crate) fn is_volume(key: &str) -> bool {
    key == "rootfs"
        || key
            .strip_prefix("mp")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

pub(crate) use crate::vm::{is_net, key_of};

/// One config key's fields: volumes and NICs opened up, the rest as they are.
pub(crate) fn flatten(key: &str, value: &str, out: &mut BTreeMap<String, String>) {
    if is_volume(key) || is_net(key) {
        for (k, v) in PropertyString::parse(value).0 {
            match k.as_deref() {
                // A bind or device mount: the host path, as it is.
                None | Some("volume") if is_volume(key) && v.starts_with('/') => {
                    out.insert(format!("{key}.volume"), v);
                }
                // A volume (`STORAGE:NAME`): its storage.
                None | Some("volume") if is_volume(key) => {
                    let storage = v.split_once(':').map_or(v.as_str(), |(s, _)| s);
                    out.insert(format!("{key}.storage"), storage.to_owned());
                }
                Some(k) => {
                    let field = format!("{key}.{k}");
                    out.insert(field.clone(), fields::normalize(Kind::Ct, &field, &v));
                }
                None => {}
            }
        }
        return;
    }
    out.insert(key.to_owned(), fields::normalize(Kind::Ct, key, value));
}

/// A config key's value from the fields (a new volume as `STORAGE:SIZE_GiB`).
pub(crate) fn unflatten(fields: &BTreeMap<String, String>, key: &str) -> Option<String> {
    if !(is_volume(key) || is_net(key)) {
        return fields.get(key).cloned();
    }
    let prefix = format!("{key}.");
    let opts: Vec<(&str, &String)> = fields
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|o| (o, v)))
        .collect();
    if opts.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    let bind = fields.get(&format!("{key}.volume"));
    match bind {
        Some(path) => parts.push(path.clone()),
        None if is_volume(key) => {
            let storage = fields.get(&format!("{key}.storage")).cloned().unwrap_or_default();
            let gib = fields
                .get(&format!("{key}.size"))
                .and_then(|b| b.parse::<u64>().ok())
                .map_or(1, |b| b.div_ceil(1 << 30));
            parts.push(format!("{storage}:{gib}"));
        }
        None => {}
    }
    parts.extend(
        opts.iter()
            .filter(|(o, _)| !(is_volume(key) && matches!(*o, "storage" | "size" | "volume")))
            .map(|(o, v)| format!("{o}={v}")),
    );
    Some(parts.join(","))
}

/// An existing volume or NIC with the file's options over it (the volume, and a NIC's MAC
/// unless the file sets one, kept).
pub(crate) fn merge(current: &str, key: &str, desired: &BTreeMap<String, String>) -> String {
    let mut ps = PropertyString::parse(current);
    let prefix = format!("{key}.");
    for (field, v) in desired.iter().filter(|(f, _)| f.starts_with(&prefix)) {
        let opt = &field[prefix.len()..];
        if is_volume(key) && matches!(opt, "storage" | "size" | "volume") {
            continue;
        }
        match ps.0.iter_mut().find(|(k, _)| k.as_deref() == Some(opt)) {
            Some(slot) => slot.1 = v.clone(),
            None => ps.0.push((Some(opt.to_owned()), v.clone())),
        }
    }
    ps.to_string()
}

/// Fields a running container takes at once (pve-container's hotplug and `$LXC_FASTPLUG_OPTIONS`);
/// the rest stay pending until it restarts.
pub(crate) fn live(field: &str) -> bool {
    let key = key_of(field);
    is_net(key)
        || (is_volume(key) && field.ends_with(".size"))
        || matches!(
            key,
            "cores"
                | "hostname"
                | "cpulimit"
                | "cpuunits"
                | "memory"
                | "swap"
                | "description"
                | "onboot"
                | "startup"
                | "protection"
                | "tags"
                | "hookscript"
                | "state"
                | "pool"
                | "node"
        )
}

/// What a container is made from, never read back: compared only when it is created.
pub(crate) fn is_creation_input(field: &str) -> bool {
    matches!(field, "ostemplate" | "ssh-public-keys")
}

/// A container object from its config, its node, whether it runs, and its pool.
pub(crate) fn observed(
    vmid: u32,
    node: &str,
    running: bool,
    pool: Option<&str>,
    config: &BTreeMap<String, String>,
) -> Object {
    let mut o = Object::new(Kind::Ct, format!("ct.{vmid}"));
    crate::vm::observed_into(&mut o, config, |k| !is_creation_input(k), flatten);
    // Left out when off; said explicitly, since PVE creates containers unprivileged by default, so
    // a file written from this one makes a privileged container again.
    o.fields.entry("unprivileged".into()).or_insert_with(|| "0".into());
    crate::vm::guest_meta(&mut o, node, running, pool);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_nics_flatten_and_come_back() {
        let mut f = BTreeMap::new();
        flatten("rootfs", "local-lvm:vm-200-disk-0,size=8G", &mut f);
        flatten("mp0", "local-lvm:vm-200-disk-1,mp=/srv,size=4G,backup=1", &mut f);
        flatten(
            "net0",
            "name=eth0,bridge=vmbr0,hwaddr=bc:24:11:00:00:02,ip=dhcp,type=veth",
            &mut f,
        );
        flatten("memory", "512", &mut f);
        assert_eq!(
            (f["rootfs.storage"].as_str(), f["rootfs.size"].as_str()),
            ("local-lvm", "8589934592")
        );
        assert_eq!((f["mp0.mp"].as_str(), f["mp0.backup"].as_str()), ("/srv", "1"));
        assert_eq!(f["net0.hwaddr"], "BC:24:11:00:00:02");
        assert_eq!(unflatten(&f, "rootfs").unwrap(), "local-lvm:8");
        assert_eq!(unflatten(&f, "mp0").unwrap(), "local-lvm:4,backup=1,mp=/srv");
        assert_eq!(
            unflatten(&f, "net0").unwrap(),
            "bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp,name=eth0,type=veth"
        );
        assert_eq!(unflatten(&f, "memory").unwrap(), "512");
        let mut want = f.clone();
        want.insert("net0.tag".into(), "20".into());
        want.insert("rootfs.size".into(), (16u64 << 30).to_string());
        assert_eq!(
            merge(
                "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp,type=veth",
                "net0",
                &want
            ),
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=dhcp,type=veth,tag=20"
        );
        assert_eq!(
            merge("local-lvm:vm-200-disk-0,size=8G", "rootfs", &want),
            "local-lvm:vm-200-disk-0,size=8G"
        );
        assert!(live("memory") && live("hostname") && live("net0.bridge") && live("rootfs.size"));
        assert!(!live("nameserver") && !live("features") && !live("rootfs.acl"));
        // A bind mount keeps its host path.
        let mut b = BTreeMap::new();
        flatten("mp1", "/mnt/data,mp=/data,ro=1", &mut b);
        assert_eq!((b["mp1.volume"].as_str(), b.get("mp1.storage")), ("/mnt/data", None));
        assert_eq!(unflatten(&b, "mp1").unwrap(), "/mnt/data,mp=/data,ro=1");
    }
}
