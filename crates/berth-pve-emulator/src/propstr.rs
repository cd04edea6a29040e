//! PVE value formats: property strings (`a,b=c`), sizes, MACs, tags, SSH keys, passwords.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Splits a property string into (key, value) parts; a part without `=` has key `None`.
pub(crate) fn parse(s: &str) -> Vec<(Option<String>, String)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (Some(k.to_string()), v.to_string()),
            None => (None, p.to_string()),
        })
        .collect()
}

pub(crate) fn get_kv(s: &str, key: &str) -> Option<String> {
    parse(s)
        .into_iter()
        .find(|(k, _)| k.as_deref() == Some(key))
        .map(|(_, v)| v)
}

/// Sets (or appends) `key=value` in a property string.
pub(crate) fn set_kv(s: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut parts: Vec<String> = parse(s)
        .into_iter()
        .map(|(k, v)| match k {
            Some(k) if k == key => {
                found = true;
                format!("{k}={value}")
            }
            Some(k) => format!("{k}={v}"),
            None => v,
        })
        .collect();
    if !found {
        parts.push(format!("{key}={value}"));
    }
    parts.join(",")
}

/// The volume of a drive string: the leading part without a key, or `file=`/`volume=`.
pub(crate) fn drive_volume(s: &str) -> Option<String> {
    parse(s).into_iter().find_map(|(k, v)| match k.as_deref() {
        None | Some("file") | Some("volume") => Some(v),
        _ => None,
    })
}

/// Replaces the volume part of a drive string.
pub(crate) fn set_drive_volume(s: &str, volid: &str) -> String {
    let mut replaced = false;
    let mut parts: Vec<String> = parse(s)
        .into_iter()
        .map(|(k, v)| match k.as_deref() {
            None | Some("file") | Some("volume") if !replaced => {
                replaced = true;
                volid.to_string()
            }
            Some(k) => format!("{k}={v}"),
            None => v,
        })
        .collect();
    if !replaced {
        parts.insert(0, volid.to_string());
    }
    parts.join(",")
}

pub(crate) fn memory_current(s: &str) -> Option<u64> {
    parse(s).into_iter().find_map(|(k, v)| match k.as_deref() {
        None | Some("current") => v.parse().ok(),
        _ => None,
    })
}

pub(crate) fn agent_enabled(s: &str) -> bool {
    parse(s)
        .into_iter()
        .any(|(k, v)| matches!(k.as_deref(), None | Some("enabled")) && v == "1")
}

/// `123`, `2G`, `1.5T`, `512M`, `4K` → bytes (no unit = bytes).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K') | Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') | Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('G') | Some('g') => (&s[..s.len() - 1], 1 << 30),
        Some('T') | Some('t') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let value: f64 = num.parse().map_err(|_| format!("unable to parse size '{s}'"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("unable to parse size '{s}'"));
    }
    Ok((value * mult as f64).round() as u64)
}

/// Bytes → PVE's `size=` notation (largest exact unit).
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (mult, unit) in UNITS {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    bytes.to_string()
}

pub(crate) fn is_disk_key(k: &str) -> bool {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^((scsi|virtio|sata|ide|mp)\d+|efidisk0|tpmstate0|rootfs)$").expect("static regex")
    });
    RE.is_match(k)
}

pub(crate) fn is_cdrom(drive: &str) -> bool {
    get_kv(drive, "media").is_some_and(|m| m == "cdrom")
        || matches!(drive_volume(drive).as_deref(), Some("none") | Some("cdrom"))
}

pub(crate) fn is_cloudinit(drive: &str) -> bool {
    drive_volume(drive).is_some_and(|v| v.contains("cloudinit"))
}

/// A fresh MAC in the Proxmox OUI (BC:24:11), uppercase like PVE writes it.
pub(crate) fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
}

pub(crate) fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// MAC of a qemu `netN` (`virtio=MAC,...`) or lxc `netN` (`hwaddr=MAC`).
pub(crate) fn net_mac(s: &str) -> Option<String> {
    parse(s).into_iter().find_map(|(k, v)| match k.as_deref() {
        Some("hwaddr") | Some("macaddr") => Some(v),
        Some(model) if is_mac(&v) && matches!(model, "virtio" | "e1000" | "e1000e" | "rtl8139" | "vmxnet3") => Some(v),
        _ => None,
    })
}

/// Adds a MAC to a qemu net string that names only a model (`virtio,bridge=vmbr0`).
pub(crate) fn qemu_net_with_mac(s: &str, mac: &str) -> String {
    let parts = parse(s);
    let mut out = Vec::new();
    for (k, v) in parts {
        match k {
            None if matches!(v.as_str(), "virtio" | "e1000" | "e1000e" | "rtl8139" | "vmxnet3") => {
                out.push(format!("{v}={mac}"))
            }
            Some(k) if matches!(k.as_str(), "virtio" | "e1000" | "e1000e" | "rtl8139" | "vmxnet3") => {
                out.push(format!("{k}={mac}"))
            }
            Some(k) if k == "model" => out.push(format!("{v}={mac}")),
            Some(k) if k == "macaddr" => {}
            Some(k) => out.push(format!("{k}={v}")),
            None => out.push(v),
        }
    }
    out.join(",")
}

/// `a;b,c d` → `a;b;c` (PVE stores tags `;`-separated); errors name the bad tag.
pub(crate) fn normalize_tags(s: &str) -> Result<String, String> {
    static RE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^(?i)[a-z0-9_][a-z0-9_\-+.]*$").expect("static regex"));
    let mut out: Vec<String> = Vec::new();
    for tag in s.split([';', ',', ' ']).filter(|t| !t.is_empty()) {
        if !RE.is_match(tag) {
            return Err(format!("invalid format - invalid tag '{tag}'"));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
    Ok(out.join(";"))
}

/// The `urlencoded` format of pve-common.
pub(crate) fn is_urlencoded(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || "-%_.!~*'()".contains(c))
}

/// Perl's `uri_unescape`: `%XX` → byte, everything else (including `+`) unchanged.
pub(crate) fn uri_unescape(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `PVE::Tools::validate_ssh_public_keys`: every non-empty, non-comment line must be a public key.
pub(crate) fn validate_ssh_keys(keys: &str) -> bool {
    const TYPES: [&str; 8] = [
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut any = false;
    for line in keys
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(pos) = words.iter().position(|w| TYPES.contains(w)) else {
            return false;
        };
        let Some(blob) = words.get(pos + 1) else { return false };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(blob) else {
            return false;
        };
        // The blob starts with a length-prefixed copy of the key type.
        if raw.len() < 4 {
            return false;
        }
        let len = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        if raw.get(4..4 + len) != Some(words[pos].as_bytes()) {
            return false;
        }
        any = true;
    }
    any || keys.trim().is_empty()
}

/// Stands in for PVE's crypt(3) SHA-256 password hash (`$5$salt$hash`).
pub(crate) fn hash_password(pw: &str) -> String {
    if pw.starts_with("$5$") || pw.starts_with("$6$") {
        return pw.to_string();
    }
    let salt: [u8; 8] = rand::random();
    let salt = hex::encode(salt);
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(pw.as_bytes());
    format!("$5${salt}${}", hex::encode(h.finalize()))
}

pub(crate) fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(format_size(2 << 30), "2G");
        assert_eq!(format_size(2252 << 20), "2252M");
        assert!(parse_size("abc").is_err());
    }

    #[test]
    fn property_strings() {
        assert_eq!(memory_current("current=2048"), Some(2048));
        assert_eq!(memory_current("4096"), Some(4096));
        assert!(agent_enabled("enabled=1,fstrim_cloned_disks=1"));
        assert!(!agent_enabled("0"));
        assert_eq!(
            set_kv("local-lvm:vm-1-disk-0,size=2G", "size", "4G"),
            "local-lvm:vm-1-disk-0,size=4G"
        );
        assert_eq!(
            qemu_net_with_mac("virtio,bridge=vmbr0", "BC:24:11:00:00:01"),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0"
        );
        assert_eq!(
            net_mac("name=eth0,hwaddr=BC:24:11:00:00:02,ip=dhcp").as_deref(),
            Some("BC:24:11:00:00:02")
        );
    }

    #[test]
    fn tags_and_keys() {
        assert_eq!(normalize_tags("a,b;c a").unwrap(), "a;b;c");
        assert!(normalize_tags("bad/tag").is_err());
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZpeGVkLWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3 me@x";
        assert!(validate_ssh_keys(key));
        assert!(!validate_ssh_keys("ssh-ed25519 notbase64!! me"));
        assert!(!validate_ssh_keys("hello world"));
    }
}
