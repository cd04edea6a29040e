//! VMs as objects: a guest's config flattened into fields the planner can compare one by one
//! (`cores`, `scsi0.storage`, `scsi0.size`, `net0.bridge`, plus `node`, `state`, `pool`), and
//! which of them a running VM takes live (qemu-server `vmconfig_hotplug_pending`) and which wait
//! for a restart.

use std::collections::BTreeMap;

use berth_proxmox::client::propstring::PropertyString;

use crate::fields;
use crate::model::{Kind, Object};

pub(crate) use berth_proxmox::client::propstring::parse_size as size_bytes;

/// `21474836480` → `20G` (whole units only, else `M`, else bytes).
pub(crate) fn size_text(bytes: u64) -> String {
    for (unit, m) in [("T", 1u64 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

pub(crate) fn is_disk(key: &str) -> bool {
    let stem = key.trim_end_matches(|c: char| c.is_ascii_digit());
    stem.len() < key.len() && matches!(stem, "scsi" | "virtio" | "sata" | "ide")
}

pub(crate) fn is_net(key: &str) -> bool {
    key.strip_prefix("net")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// NIC models (the key of `virtio=MAC`).
const NIC_MODELS: &[&str] = &[
    "virtio",
    "e1000",
    "e1000e",
    "rtl8139",
    "vmxnet3",
    "pcnet",
    "ne2k_isa",
    "ne2k_pci",
    "i82551",
    "i82557b",
    "i82559er",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
];

/// One config key's fields: drives and NICs opened up, the rest as they are.
pub(crate) fn flatten(key: &str, value: &str, out: &mut BTreeMap<String, String>) {
    if is_disk(key) {
        let ps = PropertyString::parse(value);
        for (k, v) in &ps.0 {
            match k.as_deref() {
                None | Some("file" | "volume") => {
                    let (storage, vol) = v.split_once(':').unwrap_or((v, ""));
                    if vol == "cloudinit" || vol.ends_with("-cloudinit") {
                        out.insert(format!("{key}.cloudinit"), "1".into());
                    }
                    if storage != "none" {
                        out.insert(format!("{key}.storage"), storage.to_owned());
                    }
                }
                Some("size") => {
                    out.insert(format!("{key}.size"), fields::normalize(Kind::Vm, "x.size", v));
                }
                Some(k) => {
                    out.insert(
                        format!("{key}.{k}"),
                        fields::normalize(Kind::Vm, &format!("{key}.{k}"), v),
                    );
                }
            }
        }
        return;
    }
    if is_net(key) {
        for (k, v) in PropertyString::parse(value).0 {
            match k.as_deref() {
                Some(m) if NIC_MODELS.contains(&m) => {
                    out.insert(format!("{key}.model"), m.to_owned());
                    out.insert(format!("{key}.macaddr"), v.to_uppercase());
                }
                None if NIC_MODELS.contains(&v.as_str()) => {
                    out.insert(format!("{key}.model"), v);
                }
                Some(k) => {
                    out.insert(
                        format!("{key}.{k}"),
                        fields::normalize(Kind::Vm, &format!("{key}.{k}"), &v),
                    );
                }
                None => {}
            }
        }
        return;
    }
    out.insert(key.to_owned(), fields::normalize(Kind::Vm, key, value));
}

/// The config keys of flattened fields, put back together (`net0.model` + `net0.bridge` →
/// `net0 = virtio=MAC,bridge=vmbr0`; a new disk as `STORAGE:SIZE_GiB`).
pub(crate) fn unflatten(fields: &BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in keys {
        let sub = |name: &str| fields.get(&format!("{key}.{name}")).cloned();
        let rest = |skip: &[&str]| -> Vec<String> {
            let prefix = format!("{key}.");
            fields
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|o| (o, v)))
                .filter(|(o, _)| !skip.contains(o))
                .map(|(o, v)| format!("{o}={v}"))
                .collect()
        };
        if is_disk(key) {
            let storage = sub("storage").unwrap_or_default();
            let head = match (sub("cloudinit"), sub("size")) {
                (Some(_), _) => format!("{storage}:cloudinit"),
                (None, Some(b)) => {
                    let gib = b.parse::<u64>().unwrap_or(0) as f64 / (1u64 << 30) as f64;
                    format!("{storage}:{}", format_gib(gib))
                }
                (None, None) => format!("{storage}:1"),
            };
            let mut parts = vec![head];
            parts.extend(rest(&["storage", "size", "cloudinit"]));
            out.insert(key.to_string(), parts.join(","));
        } else if is_net(key) {
            let model = sub("model").unwrap_or_else(|| "virtio".into());
            let head = match sub("macaddr") {
                Some(mac) => format!("{model}={mac}"),
                None => model,
            };
            let mut parts = vec![head];
            parts.extend(rest(&["model", "macaddr"]));
            out.insert(key.to_string(), parts.join(","));
        } else if let Some(v) = fields.get(*key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    out
}

fn format_gib(g: f64) -> String {
    if g.fract() == 0.0 {
        format!("{}", g as u64)
    } else {
        format!("{g:.3}")
    }
}

/// The config key a flattened field belongs to (`scsi0.size` → `scsi0`).
pub(crate) fn key_of(field: &str) -> &str {
    field.split('.').next().unwrap_or(field)
}

/// Fields a running VM takes at once (given its `hotplug`); the rest stay pending until it
/// restarts.
pub(crate) fn live(field: &str, hotplug: Option<&str>) -> bool {
    let key = key_of(field);
    // qemu-server's default is network,disk,usb; 0 is none, 1 is all.
    let plug = |what: &str| match hotplug.unwrap_or("network,disk,usb") {
        "0" => false,
        "1" => true,
        list => list.split(',').any(|p| p == what),
    };
    if is_net(key) {
        return plug("network");
    }
    if is_disk(key) {
        return plug("disk");
    }
    matches!(
        key,
        "name"
            | "description"
            | "tags"
            | "onboot"
            | "startup"
            | "protection"
            | "shares"
            | "hookscript"
            | "ciuser"
            | "cipassword"
            | "citype"
            | "cicustom"
            | "ciupgrade"
            | "nameserver"
            | "searchdomain"
            | "sshkeys"
            | "state"
            | "pool"
            | "node"
    ) || key.starts_with("ipconfig")
        || key.starts_with("migrate_")
        || (key == "memory" && plug("memory"))
        || (key == "vcpus" && plug("cpu"))
}

/// Fields that are not part of the guest's config (`node`, `state`, `pool`, `clone`).
pub(crate) fn is_meta(field: &str) -> bool {
    matches!(field, "node" | "state" | "pool" | "clone")
}

/// A VM object from its config, its node, whether it runs, and its pool.
pub(crate) fn observed(
    vmid: u32,
    node: &str,
    running: bool,
    pool: Option<&str>,
    config: &BTreeMap<String, String>,
) -> Object {
    let mut o = Object::new(Kind::Vm, format!("vm.{vmid}"));
    observed_into(&mut o, config, |_| true, flatten);
    guest_meta(&mut o, node, running, pool);
    o
}

/// A guest's config keys its create call takes, flattened into `o` (secrets, `digest`, `lock`,
/// `template`, `unusedN` and what `keep` refuses left out).
pub(crate) fn observed_into(
    o: &mut Object,
    config: &BTreeMap<String, String>,
    keep: impl Fn(&str) -> bool,
    flatten: fn(&str, &str, &mut BTreeMap<String, String>),
) {
    for (k, v) in config {
        if fields::settable(o.kind, k)
            && !fields::is_secret(o.kind, k)
            && keep(k)
            && !matches!(k.as_str(), "digest" | "lock" | "template")
            && !k.starts_with("unused")
        {
            flatten(k, v, &mut o.fields);
        }
    }
}

/// The fields of a guest that are not its config: its node, power state and pool.
pub(crate) fn guest_meta(o: &mut Object, node: &str, running: bool, pool: Option<&str>) {
    o.fields.insert("node".into(), node.to_owned());
    o.fields
        .insert("state".into(), if running { "running" } else { "stopped" }.into());
    if let Some(p) = pool {
        o.fields.insert("pool".into(), p.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drives_and_nics_flatten_and_come_back() {
        let mut f = BTreeMap::new();
        flatten("scsi0", "local-lvm:vm-100-disk-0,iothread=1,size=20G", &mut f);
        flatten("ide2", "local-lvm:vm-100-cloudinit,media=cdrom", &mut f);
        flatten("net0", "virtio=bc:24:11:00:00:01,bridge=vmbr0,tag=20", &mut f);
        flatten("cores", "2", &mut f);
        assert_eq!(f["scsi0.size"], (20u64 << 30).to_string());
        assert_eq!(
            (f["scsi0.storage"].as_str(), f["scsi0.iothread"].as_str()),
            ("local-lvm", "1")
        );
        assert_eq!((f["ide2.cloudinit"].as_str(), f["ide2.media"].as_str()), ("1", "cdrom"));
        assert_eq!(
            (f["net0.model"].as_str(), f["net0.macaddr"].as_str()),
            ("virtio", "BC:24:11:00:00:01")
        );
        let back = unflatten(&f, &["scsi0", "ide2", "net0", "cores"]);
        assert_eq!(back["scsi0"], "local-lvm:20,iothread=1");
        assert_eq!(back["ide2"], "local-lvm:cloudinit,media=cdrom");
        assert_eq!(back["net0"], "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20");
        assert_eq!(back["cores"], "2");
        assert!(live("net0.bridge", None) && live("scsi0.size", None) && !live("cores", None) && !live("memory", None));
        assert!(!live("net0.bridge", Some("0")) && live("memory", Some("network,disk,memory")));
        assert_eq!(
            (size_text(20 << 30), size_bytes("512M")),
            ("20G".to_owned(), Some(512 << 20))
        );
    }
}
