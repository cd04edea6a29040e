//! Multipass's `--format json` outputs (`info`, `list`, `find`, `version`), in the shapes its
//! JSON formatter writes them, and their translation into Berth's `Instance` and `Template`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use berth_core::{GuestKind, Instance, PowerState, Template};
use serde::Deserialize;

use crate::naming::{Owner, owner_of};

/// Output that is not what Multipass writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("output is not JSON ({reason}); output starts with {snippet}")]
    NotJson { reason: String, snippet: String },
    #[error("output is JSON but not the expected shape ({reason}); output starts with {snippet}")]
    Shape { reason: String, snippet: String },
    #[error("the answer has no entry for instance {name:?}")]
    Missing { name: String },
}

/// An instance's state as Multipass prints it (`mp::format::status_string_for`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpState {
    Running,
    Stopped,
    Starting,
    Restarting,
    DelayedShutdown,
    Suspending,
    Suspended,
    /// Deleted but not purged: in Multipass's trash, recoverable with `multipass recover`.
    Deleted,
    Other(String),
}

impl MpState {
    fn parse(s: &str) -> MpState {
        match s {
            "Running" => MpState::Running,
            "Stopped" => MpState::Stopped,
            "Starting" => MpState::Starting,
            "Restarting" => MpState::Restarting,
            "Delayed Shutdown" => MpState::DelayedShutdown,
            "Suspending" => MpState::Suspending,
            "Suspended" => MpState::Suspended,
            "Deleted" => MpState::Deleted,
            other => MpState::Other(other.to_owned()),
        }
    }

    pub fn power(&self) -> PowerState {
        match self {
            MpState::Running | MpState::DelayedShutdown => PowerState::Running,
            MpState::Stopped => PowerState::Stopped,
            MpState::Starting | MpState::Restarting => PowerState::Provisioning,
            MpState::Suspending | MpState::Suspended => PowerState::Paused,
            MpState::Deleted | MpState::Other(_) => PowerState::Unknown,
        }
    }
}

/// A number Multipass writes either as a JSON number or as a decimal string (`"cpu_count": "2"`,
/// `"total": "5116440064"`); empty strings mean "not known".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Num(Option<u64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        Ok(Num(match Raw::deserialize(d)? {
            Raw::N(n) => Some(n),
            Raw::S(s) if s.trim().is_empty() => None,
            Raw::S(s) => {
                Some(s.trim().parse().map_err(|_| {
                    serde::de::Error::custom(format!("expected a number or a decimal string, got {s:?}"))
                })?)
            }
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
struct Amount {
    #[serde(default)]
    total: Num,
}

#[derive(Debug, Deserialize)]
struct RawInfoItem {
    state: Option<String>,
    #[serde(default)]
    ipv4: Vec<String>,
    #[serde(default)]
    cpu_count: Num,
    #[serde(default)]
    memory: Amount,
    #[serde(default)]
    disks: BTreeMap<String, Amount>,
}

#[derive(Debug, Deserialize)]
struct RawInfo {
    info: BTreeMap<String, RawInfoItem>,
}

/// One instance from `multipass info --format json NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoItem {
    pub name: String,
    pub state: MpState,
    pub ipv4: Option<Ipv4Addr>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
}

/// One instance from `multipass list --format json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    pub name: String,
    pub state: MpState,
    pub ipv4: Option<Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
struct RawListItem {
    name: String,
    state: String,
    #[serde(default)]
    ipv4: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawList {
    list: Vec<RawListItem>,
}

#[derive(Debug, Deserialize)]
struct RawImage {
    #[serde(default)]
    os: String,
    #[serde(default)]
    release: String,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawFind {
    #[serde(default)]
    images: BTreeMap<String, RawImage>,
}

/// `multipass version --format json`: the client's version, and the daemon's when it answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    pub multipass: String,
    #[serde(default)]
    pub multipassd: Option<String>,
}

const SNIPPET: usize = 200;

fn snippet(text: &str) -> String {
    berth_exec::redacted_snippet(text, SNIPPET)
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ParseError::NotJson {
        reason: e.to_string(),
        snippet: snippet(text),
    })?;
    serde_json::from_value(value).map_err(|e| ParseError::Shape {
        reason: e.to_string(),
        snippet: snippet(text),
    })
}

/// The first address Multipass reports (the instance's default network); others (bridges the
/// guest made, extra `--network`s) are ignored. Unparseable entries are skipped.
fn first_ipv4(list: &[String]) -> Option<Ipv4Addr> {
    list.iter().find_map(|s| s.trim().parse().ok())
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Parses `info` output and returns the entry for `name`.
pub fn parse_info(text: &str, name: &str) -> Result<InfoItem, ParseError> {
    let raw: RawInfo = decode(text)?;
    let (key, item) = raw
        .info
        .into_iter()
        .find(|(k, _)| k == name)
        .ok_or_else(|| ParseError::Missing { name: name.to_owned() })?;
    let state = item.state.ok_or_else(|| ParseError::Shape {
        reason: format!("instance {name:?} has no \"state\""),
        snippet: snippet(text),
    })?;
    Ok(InfoItem {
        name: key,
        state: MpState::parse(&state),
        ipv4: first_ipv4(&item.ipv4),
        cpus: item.cpu_count.0.and_then(|c| u32::try_from(c).ok()),
        // Round to the nearest unit: a guest reports a little less than it was given.
        memory_mib: item.memory.total.0.map(|b| (b + MIB / 2) / MIB),
        disk_gib: item
            .disks
            .values()
            .filter_map(|d| d.total.0)
            .max()
            .map(|b| (b + GIB / 2) / GIB),
    })
}

/// Parses `list` output.
pub fn parse_list(text: &str) -> Result<Vec<ListItem>, ParseError> {
    let raw: RawList = decode(text)?;
    Ok(raw
        .list
        .into_iter()
        .map(|i| ListItem {
            state: MpState::parse(&i.state),
            ipv4: first_ipv4(&i.ipv4),
            name: i.name,
        })
        .collect())
}

/// Parses `find` output into templates (images only; blueprints are not plain images).
pub fn parse_find(text: &str) -> Result<Vec<Template>, ParseError> {
    let raw: RawFind = decode(text)?;
    Ok(raw
        .images
        .into_iter()
        .map(|(id, img)| {
            let mut name = format!("{} {}", img.os, img.release).trim().to_owned();
            if !img.aliases.is_empty() {
                name = format!("{name} ({})", img.aliases.join(", "));
            }
            Template {
                id,
                name,
                kind: GuestKind::Vm,
                node: None,
                disk_gib: None,
                format: None,
            }
        })
        .collect())
}

/// Parses `version` output.
pub fn parse_version(text: &str) -> Result<Version, ParseError> {
    decode(text)
}

fn base_instance(name: &str, state: PowerState, ipv4: Option<Ipv4Addr>) -> Instance {
    Instance {
        instance_id: match owner_of(name) {
            Owner::Id(id) => Some(id),
            Owner::Foreign | Owner::Hashed => None,
        },
        backend_id: name.to_owned(),
        kind: GuestKind::Vm,
        node: None,
        name: name.to_owned(),
        state,
        ipv4,
        ipv6: None,
        cores: None,
        memory_mib: None,
        disk_gib: None,
        ssh_port: None,
        root_password: None,
        login_user: None,
        pool: None,
    }
}

impl InfoItem {
    pub fn to_instance(&self) -> Instance {
        Instance {
            cores: self.cpus,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            ..base_instance(&self.name, self.state.power(), self.ipv4)
        }
    }
}

impl ListItem {
    pub fn to_instance(&self) -> Instance {
        base_instance(&self.name, self.state.power(), self.ipv4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As Multipass 1.14 prints it for a running instance.
    const INFO_RUNNING: &str = r#"{
    "errors": [],
    "info": {
        "berth-web1": {
            "cpu_count": "2",
            "disks": { "sda1": { "total": "10213466112", "used": "2012345344" } },
            "image_hash": "b4d4a4a0cf7a",
            "image_release": "24.04 LTS",
            "ipv4": [ "10.47.112.5", "172.17.0.1" ],
            "load": [ 0.08, 0.1, 0.05 ],
            "memory": { "total": 2062196736, "used": 230318080 },
            "mounts": {},
            "release": "Ubuntu 24.04.1 LTS",
            "snapshot_count": "0",
            "state": "Running"
        }
    }
}"#;

    #[test]
    fn running_instance_with_address() {
        let i = parse_info(INFO_RUNNING, "berth-web1").unwrap();
        assert_eq!(i.state, MpState::Running);
        assert_eq!(i.ipv4, Some(Ipv4Addr::new(10, 47, 112, 5)));
        assert_eq!(i.cpus, Some(2));
        assert_eq!(i.memory_mib, Some(1967));
        assert_eq!(i.disk_gib, Some(10));
        let inst = i.to_instance();
        assert_eq!(inst.instance_id.unwrap().as_str(), "web1");
        assert_eq!(inst.state, PowerState::Running);
        assert_eq!(inst.backend_id, "berth-web1");
    }

    #[test]
    fn starting_instance_without_an_address_yet() {
        let text = r#"{"errors": [], "info": {"berth-web2": {"cpu_count": "", "disks": {"sda1": {}},
            "image_hash": "", "image_release": "", "ipv4": [], "load": [], "memory": {}, "mounts": {},
            "release": "", "snapshot_count": "0", "state": "Starting"}}}"#;
        let i = parse_info(text, "berth-web2").unwrap();
        assert_eq!(i.state, MpState::Starting);
        assert_eq!((i.ipv4, i.cpus, i.memory_mib, i.disk_gib), (None, None, None, None));
        assert_eq!(i.to_instance().state, PowerState::Provisioning);
    }

    #[test]
    fn deleted_and_stopped_instances_in_a_list() {
        let text = r#"{"list": [
            {"ipv4": [], "name": "berth-old", "release": "Not Available", "state": "Deleted"},
            {"ipv4": [], "name": "primary", "release": "Ubuntu 24.04 LTS", "state": "Stopped"},
            {"ipv4": ["10.47.112.9"], "name": "berth--0123456789abcdef0123456789abcdef", "release": "Ubuntu 24.04 LTS", "state": "Running"}
        ]}"#;
        let l = parse_list(text).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].state, MpState::Deleted);
        assert_eq!(l[1].to_instance().instance_id, None);
        assert_eq!(l[1].to_instance().state, PowerState::Stopped);
        let hashed = l[2].to_instance();
        assert_eq!(
            (hashed.instance_id, hashed.ipv4),
            (None, Some(Ipv4Addr::new(10, 47, 112, 9)))
        );
    }

    #[test]
    fn info_of_a_deleted_instance() {
        let text = r#"{"errors": [], "info": {"berth-gone": {"cpu_count": "", "disks": {"sda1": {}}, "image_hash": "",
            "image_release": "", "ipv4": [], "load": [], "memory": {}, "mounts": {}, "release": "",
            "snapshot_count": "0", "state": "Deleted"}}}"#;
        assert_eq!(parse_info(text, "berth-gone").unwrap().state, MpState::Deleted);
    }

    #[test]
    fn bad_output_is_a_clear_error() {
        let e = parse_info("Starting berth-x...", "berth-x").unwrap_err();
        assert!(matches!(e, ParseError::NotJson { .. }), "{e}");
        assert!(e.to_string().contains("Starting berth-x"), "{e}");
        let e = parse_info(
            r#"{"info": {"berth-x": {"state": "Running", "cpu_count": "two"}}}"#,
            "berth-x",
        )
        .unwrap_err();
        assert!(matches!(e, ParseError::Shape { .. }), "{e}");
        let e = parse_info(r#"{"errors": [], "info": {}}"#, "berth-x").unwrap_err();
        assert_eq!(e, ParseError::Missing { name: "berth-x".into() });
        assert!(matches!(
            parse_list(r#"{"instances": []}"#),
            Err(ParseError::Shape { .. })
        ));
    }

    #[test]
    fn find_and_version() {
        let find = r#"{"blueprints": {}, "errors": [], "images": {
            "22.04": {"aliases": ["jammy"], "os": "Ubuntu", "release": "22.04 LTS", "remote": "", "version": "20240912"},
            "24.04": {"aliases": ["noble", "lts"], "os": "Ubuntu", "release": "24.04 LTS", "remote": "", "version": "20240911"}}}"#;
        let t = parse_find(find).unwrap();
        assert_eq!(t[1].id, "24.04");
        assert_eq!(t[1].name, "Ubuntu 24.04 LTS (noble, lts)");
        let v = parse_version(r#"{"multipass": "1.14.0", "multipassd": "1.14.0"}"#).unwrap();
        assert_eq!(v.multipassd.as_deref(), Some("1.14.0"));
        assert_eq!(parse_version(r#"{"multipass": "1.14.0"}"#).unwrap().multipassd, None);
    }
}
