//! Translating a `VmSpec` into PVE parameter values (cloud-init `ipconfig0`, LXC `net0`, DNS,
//! SSH keys) and reading disks back out of a guest config (boot disk, sizes, storages).

use std::sync::LazyLock;

use berth_core::{Ipv4Config, Ipv6Config, NetworkSpec, VmSpec};
use regex::Regex;

use crate::client::types::GuestConfig;
use crate::config::{ProxmoxConfig, parse_nameservers};

/// The `ip=…,gw=…,ip6=…,gw6=…` part shared by QEMU `ipconfig0` and LXC `net0`.
fn ip_settings(net: &NetworkSpec) -> Vec<String> {
    let mut parts = Vec::new();
    match net.ipv4 {
        Ipv4Config::Dhcp => parts.push("ip=dhcp".to_owned()),
        Ipv4Config::Static {
            address,
            prefix_len,
            gateway,
        } => {
            parts.push(format!("ip={address}/{prefix_len}"));
            if let Some(gw) = gateway {
                parts.push(format!("gw={gw}"));
            }
        }
    }
    match net.ipv6 {
        None => {}
        Some(Ipv6Config::Dhcp) => parts.push("ip6=dhcp".to_owned()),
        Some(Ipv6Config::Auto) => parts.push("ip6=auto".to_owned()),
        Some(Ipv6Config::Static {
            address,
            prefix_len,
            gateway,
        }) => {
            parts.push(format!("ip6={address}/{prefix_len}"));
            if let Some(gw) = gateway {
                parts.push(format!("gw6={gw}"));
            }
        }
    }
    parts
}

/// QEMU cloud-init `ipconfig0`: `ip=dhcp` or `ip=CIDR,gw=…` (+ `ip6=`).
pub(crate) fn ipconfig0(net: &NetworkSpec) -> String {
    ip_settings(net).join(",")
}

/// LXC `net0`: `name=eth0,bridge=vmbr0,ip=…`.
pub(crate) fn lxc_net0(bridge: &str, net: &NetworkSpec) -> String {
    let mut parts = vec!["name=eth0".to_owned(), format!("bridge={bridge}")];
    parts.extend(ip_settings(net));
    parts.join(",")
}

/// DNS servers: the spec's, else the configured default, space-separated.
pub(crate) fn nameserver(spec: &VmSpec, config: &ProxmoxConfig) -> Option<String> {
    if !spec.network.nameservers.is_empty() {
        let list: Vec<String> = spec.network.nameservers.iter().map(ToString::to_string).collect();
        return Some(list.join(" "));
    }
    let configured = config.nameserver.as_deref().and_then(|s| parse_nameservers(s).ok())?;
    Some(configured.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
}

/// The SSH keys, one per line.
pub(crate) fn ssh_keys(spec: &VmSpec) -> Option<String> {
    if spec.ssh_keys.is_empty() {
        return None;
    }
    Some(spec.ssh_keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join("\n"))
}

/// A PVE size (`32G`, `512M`, `2T`, `1024K`, or bytes) in bytes.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult as f64) as u64)
}

/// The value of one option of a property string (`size` of `local-lvm:vm-1-disk-0,size=32G`).
pub(crate) fn prop(value: &str, key: &str) -> Option<String> {
    value
        .split(',')
        .find_map(|p| p.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_owned()))
}

/// The volume (first, key-less element) of a drive property string.
pub(crate) fn volume(value: &str) -> &str {
    let first = value.split(',').next().unwrap_or_default();
    first.strip_prefix("file=").unwrap_or(first)
}

/// The storage of a volume ID (`local-lvm` of `local-lvm:vm-100-disk-0`).
pub(crate) fn volume_storage(value: &str) -> Option<&str> {
    volume(value).split_once(':').map(|(s, _)| s)
}

static DRIVE_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(scsi|virtio|sata|ide|efidisk|tpmstate)\d+$").expect("drive key regex"));

fn is_cdrom(value: &str) -> bool {
    prop(value, "media").as_deref() == Some("cdrom") || volume(value) == "none" || volume(value) == "cdrom"
}

/// Every drive whose contents a clone copies: disks, EFI/TPM state and the cloud-init drive;
/// not ISO media.
pub(crate) fn cloned_volumes(cfg: &GuestConfig) -> Vec<(String, String)> {
    cfg.keys()
        .filter(|k| DRIVE_KEY.is_match(k))
        .filter_map(|k| cfg.get(k).map(|v| (k.to_owned(), v)))
        .filter(|(_, v)| !is_cdrom(v) || v.contains("cloudinit"))
        .collect()
}

/// Where to add a cloud-init drive, or `None` when the guest already has one (without it PVE
/// silently ignores `ciuser`, `sshkeys` and `ipconfig0`).
pub(crate) fn cloudinit_slot(cfg: &GuestConfig) -> Option<&'static str> {
    let has = cfg
        .keys()
        .any(|k| DRIVE_KEY.is_match(k) && cfg.get(k).is_some_and(|v| volume(&v).contains("cloudinit")));
    if has {
        return None;
    }
    ["ide2", "ide0", "ide1", "ide3", "sata5", "sata4"]
        .into_iter()
        .find(|k| cfg.get(k).is_none())
}

/// The disk a QEMU guest boots from: the first disk of `boot: order=…`, else `bootdisk`, else
/// the first of scsi0/virtio0/sata0/ide0 that is not a CD-ROM.
pub(crate) fn boot_disk(cfg: &GuestConfig) -> Option<(String, String)> {
    let is_disk = |k: &str| cfg.get(k).filter(|v| DRIVE_KEY.is_match(k) && !is_cdrom(v));
    if let Some(order) = cfg.get("boot").as_deref().and_then(|b| prop(b, "order"))
        && let Some(found) = order.split(';').find_map(|k| is_disk(k).map(|v| (k.to_owned(), v)))
    {
        return Some(found);
    }
    if let Some(k) = cfg.get("bootdisk")
        && let Some(v) = is_disk(&k)
    {
        return Some((k, v));
    }
    ["scsi0", "virtio0", "sata0", "ide0"]
        .iter()
        .find_map(|k| is_disk(k).map(|v| ((*k).to_owned(), v)))
}

/// The size in bytes of a drive property string (`size=32G`).
pub(crate) fn drive_size(value: &str) -> Option<u64> {
    prop(value, "size").as_deref().and_then(parse_size)
}

/// Whether the QEMU guest agent is enabled in a config (`agent: 1` or `enabled=1,…`).
pub(crate) fn agent_enabled(cfg: &GuestConfig) -> bool {
    cfg.get("agent").is_some_and(|a| {
        let first = a.split(',').next().unwrap_or_default();
        first == "1" || prop(&a, "enabled").as_deref() == Some("1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ip_strings() {
        let mut net = NetworkSpec::default();
        assert_eq!(ipconfig0(&net), "ip=dhcp");
        net.ipv4 = Ipv4Config::parse("10.0.0.5/24,gw=10.0.0.1").unwrap();
        net.ipv6 = Some(Ipv6Config::Static {
            address: "2001:db8::5".parse().unwrap(),
            prefix_len: 64,
            gateway: None,
        });
        assert_eq!(ipconfig0(&net), "ip=10.0.0.5/24,gw=10.0.0.1,ip6=2001:db8::5/64");
        net.ipv6 = Some(Ipv6Config::Auto);
        assert_eq!(
            lxc_net0("vmbr1", &net),
            "name=eth0,bridge=vmbr1,ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5T"), Some(3 << 39));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(drive_size("local-lvm:vm-100-disk-0,iothread=1,size=2G"), Some(2 << 30));
    }

    #[test]
    fn boot_disk_detection() {
        let cfg: GuestConfig = serde_json::from_value(json!({
            "boot": "order=ide2;scsi0;net0",
            "ide2": "local-lvm:vm-9000-cloudinit,media=cdrom",
            "scsi0": "local-lvm:base-9000-disk-0,size=2G",
            "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
            "agent": "enabled=1,fstrim_cloned_disks=1"
        }))
        .unwrap();
        assert_eq!(boot_disk(&cfg).unwrap().0, "scsi0");
        assert!(agent_enabled(&cfg));
        assert_eq!(cloudinit_slot(&cfg), None);
        let vols = cloned_volumes(&cfg);
        assert_eq!(vols.len(), 2, "{vols:?}");
        assert_eq!(volume_storage(&vols[0].1), Some("local-lvm"));
        let legacy: GuestConfig =
            serde_json::from_value(json!({"bootdisk": "virtio0", "virtio0": "nfs:1/x.qcow2,size=10G", "agent": "0"}))
                .unwrap();
        assert_eq!(boot_disk(&legacy).unwrap().0, "virtio0");
        assert!(!agent_enabled(&legacy));
        assert_eq!(cloudinit_slot(&legacy), Some("ide2"));
    }
}
