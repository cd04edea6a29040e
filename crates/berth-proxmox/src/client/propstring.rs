//! PVE property strings (`local-lvm:vm-100-disk-0,size=32G`, `keep-last=3,keep-daily=7`): parsed
//! into ordered parts that render back exactly, and typed views of the ones Berth manages.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A property string as ordered parts; `None` keys are the default key's value (`volume` of a drive).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertyString(pub Vec<(Option<String>, String)>);

impl PropertyString {
    /// Splits on `,` and the first `=` of each part, as PVE's `parse_property_string` does.
    pub fn parse(s: &str) -> PropertyString {
        PropertyString(
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                    None => (None, p.to_owned()),
                })
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.as_deref() == Some(key))
            .map(|(_, v)| v.as_str())
    }
    /// The key-less part (a drive's volume, a NIC's `model=MAC` is keyed).
    pub fn default_value(&self) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.is_none()).map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for PropertyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match k {
                Some(k) => write!(f, "{k}={v}")?,
                None => f.write_str(v)?,
            }
        }
        Ok(())
    }
}

/// A drive (`scsi0`, `virtio1`, `ide2`, an LXC `rootfs`/`mpN`): its volume and options, rendered
/// back exactly as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive(pub PropertyString);

impl Drive {
    pub fn parse(s: &str) -> Drive {
        Drive(PropertyString::parse(s))
    }
    /// `local-lvm:vm-100-disk-0` (or `file=`/`volume=` when written with the key).
    pub fn volume(&self) -> Option<&str> {
        self.0
            .default_value()
            .or_else(|| self.0.get("file"))
            .or_else(|| self.0.get("volume"))
    }
    /// The storage part of the volume.
    pub fn storage(&self) -> Option<&str> {
        self.volume()?.split_once(':').map(|(s, _)| s)
    }
    /// `size=32G` in bytes.
    pub fn size_bytes(&self) -> Option<u64> {
        parse_size(self.0.get("size")?)
    }
    pub fn is_cdrom(&self) -> bool {
        self.0.get("media") == Some("cdrom")
    }
    pub fn is_cloudinit(&self) -> bool {
        self.volume().is_some_and(|v| v.contains("cloudinit"))
    }
}

impl fmt::Display for Drive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Bytes of a PVE size (`32G`, `512M`, `1.5T`, or plain bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

/// A VM NIC (`net0`: `virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20`), rendered back exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice(pub PropertyString);

const NIC_MODELS: &[&str] = &[
    "virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet",
];

impl NetDevice {
    pub fn parse(s: &str) -> NetDevice {
        NetDevice(PropertyString::parse(s))
    }
    /// The model and its MAC (`virtio=BC:…`), or a bare model (`virtio`) before PVE gave it one.
    pub fn model(&self) -> Option<(&str, Option<&str>)> {
        self.0.0.iter().find_map(|(k, v)| match k.as_deref() {
            Some(m) if NIC_MODELS.contains(&m) => Some((m, Some(v.as_str()))),
            Some("model") => Some((v.as_str(), self.0.get("macaddr"))),
            None if NIC_MODELS.contains(&v.as_str()) => Some((v.as_str(), None)),
            _ => None,
        })
    }
    pub fn bridge(&self) -> Option<&str> {
        self.0.get("bridge")
    }
    pub fn vlan_tag(&self) -> Option<u16> {
        self.0.get("tag")?.parse().ok()
    }
}

impl fmt::Display for NetDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `prune-backups`: how many backups of each period a storage or job keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneBackups {
    pub keep_all: bool,
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

impl PruneBackups {
    fn slots(&mut self) -> [(&'static str, &mut Option<u32>); 6] {
        [
            ("keep-daily", &mut self.keep_daily),
            ("keep-hourly", &mut self.keep_hourly),
            ("keep-last", &mut self.keep_last),
            ("keep-monthly", &mut self.keep_monthly),
            ("keep-weekly", &mut self.keep_weekly),
            ("keep-yearly", &mut self.keep_yearly),
        ]
    }

    /// Parses `keep-last=3,keep-daily=7` (or `keep-all=1`); the error names the part.
    pub fn parse(s: &str) -> Result<PruneBackups, String> {
        let mut out = PruneBackups::default();
        for (k, v) in PropertyString::parse(s).0 {
            let Some(k) = k else {
                return Err(format!("prune-backups: '{v}' is not KEY=N"));
            };
            if k == "keep-all" {
                out.keep_all = matches!(v.as_str(), "1" | "true" | "yes" | "on");
                continue;
            }
            let n: u32 = v
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("prune-backups: {k} must be a whole number of 1 or more, got '{v}'"))?;
            let mut slots = out.slots();
            let slot = slots
                .iter_mut()
                .find(|(name, _)| *name == k)
                .ok_or_else(|| format!("prune-backups: unknown option '{k}'"))?;
            *slot.1 = Some(n);
        }
        if out.keep_all && out.slots().iter().any(|(_, v)| v.is_some()) {
            return Err("prune-backups: keep-all cannot be set together with other options".into());
        }
        Ok(out)
    }
}

/// PVE's `print_property_string` order (keys sorted).
impl fmt::Display for PruneBackups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut copy = *self;
        let mut parts: Vec<String> = Vec::new();
        if self.keep_all {
            parts.push("keep-all=1".into());
        }
        for (k, v) in copy.slots() {
            if let Some(n) = v {
                parts.push(format!("{k}={n}"));
            }
        }
        f.write_str(&parts.join(","))
    }
}

impl Serialize for PruneBackups {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PruneBackups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PruneBackups::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_strings_render_back_exactly() {
        for s in [
            "local-lvm:vm-100-disk-0,size=32G",
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1",
            "keep-last=3,keep-daily=7",
            "order=scsi0;net0",
        ] {
            assert_eq!(PropertyString::parse(s).to_string(), s);
        }
        let p = PropertyString::parse("local-lvm:vm-100-disk-0,size=32G");
        assert_eq!(p.default_value(), Some("local-lvm:vm-100-disk-0"));
        assert_eq!(p.get("size"), Some("32G"));
    }

    #[test]
    fn drives_and_nics_are_typed_and_render_back_exactly() {
        let d = Drive::parse("local-lvm:vm-100-disk-0,iothread=1,size=32G");
        assert_eq!(
            (d.volume(), d.storage(), d.size_bytes()),
            (Some("local-lvm:vm-100-disk-0"), Some("local-lvm"), Some(32 << 30))
        );
        assert_eq!(d.to_string(), "local-lvm:vm-100-disk-0,iothread=1,size=32G");
        let ci = Drive::parse("local-lvm:vm-100-cloudinit,media=cdrom");
        assert!(ci.is_cdrom() && ci.is_cloudinit());
        let n = NetDevice::parse("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20");
        assert_eq!(n.model(), Some(("virtio", Some("BC:24:11:00:00:01"))));
        assert_eq!((n.bridge(), n.vlan_tag()), (Some("vmbr0"), Some(20)));
        assert_eq!(n.to_string(), "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20");
        assert_eq!(
            NetDevice::parse("model=e1000,bridge=vmbr1").model(),
            Some(("e1000", None))
        );
    }

    #[test]
    fn prune_backups_parse_and_render_in_pve_order() {
        let p = PruneBackups::parse("keep-last=3,keep-daily=7").unwrap();
        assert_eq!((p.keep_last, p.keep_daily), (Some(3), Some(7)));
        assert_eq!(p.to_string(), "keep-daily=7,keep-last=3");
        assert_eq!(PruneBackups::parse("keep-all=1").unwrap().to_string(), "keep-all=1");
        for (bad, says) in [
            ("keep-last=0", "keep-last must be a whole number of 1 or more, got '0'"),
            ("keep-forever=1", "unknown option 'keep-forever'"),
            ("keep-all=1,keep-last=2", "keep-all cannot be set together"),
            ("seven", "'seven' is not KEY=N"),
        ] {
            let e = PruneBackups::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
