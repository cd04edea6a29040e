//! Response types of the PVE calls Berth makes, with lenient parsing: Perl returns numbers as
//! strings in places (`"100"`), booleans as `0`/`1`/`"1"`, and omits fields freely.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A number given as a JSON number or a numeric string.
pub fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().map(|f| f as u64)),
        _ => None,
    }
}

fn lenient_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `true`, `1`, `"1"` (and `"true"`) are true; everything else false.
pub fn lenient_bool(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(s.trim(), "1" | "true" | "yes" | "on"),
        _ => false,
    }
}

/// A string, or a number rendered as one.
pub fn lenient_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        _ => None,
    }
}

pub(crate) fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(lenient_u64))
}

/// A signed number given as a JSON number or a numeric string.
pub fn lenient_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

pub(crate) fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(lenient_i64))
}

pub(crate) fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(de_u64(d)?.and_then(|n| u32::try_from(n).ok()))
}

pub(crate) fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(lenient_f64))
}

pub(crate) fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.as_ref().is_some_and(lenient_bool))
}

pub(crate) fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(lenient_string))
}

fn default_true() -> bool {
    true
}

pub(crate) fn de_bool_default_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.as_ref().is_none_or(lenient_bool))
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    #[serde(default, deserialize_with = "de_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub release: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub repoid: Option<String>,
}

/// One key of `GET …/pending`: its value now, the value waiting for a restart, or its deletion.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PendingEntry {
    pub key: String,
    #[serde(default, deserialize_with = "de_string")]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub pending: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    pub delete: bool,
}

impl VersionInfo {
    /// The major release (`9` of `9.1.2`).
    pub fn major(&self) -> Option<u32> {
        self.version.as_deref()?.split('.').next()?.parse().ok()
    }
}

/// One entry of `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterResource {
    #[serde(default, deserialize_with = "de_string")]
    pub id: Option<String>,
    /// `qemu`, `lxc`, `node`, `storage`, …
    #[serde(rename = "type", default, deserialize_with = "de_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_u32")]
    pub vmid: Option<u32>,
    #[serde(default, deserialize_with = "de_string")]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    pub template: bool,
    #[serde(default, deserialize_with = "de_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub pool: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de_f64")]
    pub maxcpu: Option<f64>,
}

/// Splits a PVE tag list (`a;b`, `a,b` or `a b`).
pub fn split_tags(tags: &str) -> Vec<String> {
    tags.split([';', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

impl ClusterResource {
    pub fn tag_list(&self) -> Vec<String> {
        self.tags.as_deref().map(split_tags).unwrap_or_default()
    }
    pub fn is_guest(&self) -> bool {
        matches!(self.kind.as_deref(), Some("qemu" | "lxc")) && self.vmid.is_some()
    }
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    #[serde(default, deserialize_with = "de_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de_f64")]
    pub maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de_string")]
    pub ssl_fingerprint: Option<String>,
}

/// `GET /nodes/{node}/status` (the parts Berth reads).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct NodeStatus {
    #[serde(default)]
    pub cpuinfo: CpuInfo,
    #[serde(default)]
    pub memory: MemoryInfo,
    #[serde(default, deserialize_with = "de_string")]
    pub pveversion: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct CpuInfo {
    #[serde(default, deserialize_with = "de_u32")]
    pub cpus: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct MemoryInfo {
    #[serde(default, deserialize_with = "de_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub free: Option<u64>,
}

/// One entry of `GET /nodes/{node}/storage`, also the shape of `.../storage/{id}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct StorageInfo {
    #[serde(default, deserialize_with = "de_string")]
    pub storage: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "de_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub content: Option<String>,
    #[serde(default = "default_true", deserialize_with = "de_bool_default_true")]
    pub active: bool,
    #[serde(default = "default_true", deserialize_with = "de_bool_default_true")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "de_bool")]
    pub shared: bool,
    #[serde(default, deserialize_with = "de_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub avail: Option<u64>,
}

impl StorageInfo {
    pub fn has_content(&self, kind: &str) -> bool {
        self.content
            .as_deref()
            .is_some_and(|c| c.split(',').any(|p| p.trim() == kind))
    }
}

/// One volume of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageVolume {
    pub volid: String,
    #[serde(default, deserialize_with = "de_string")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub size: Option<u64>,
    /// The guest the volume belongs to (a disk's, a backup's).
    #[serde(default, deserialize_with = "de_u32")]
    pub vmid: Option<u32>,
    /// Made at (unix seconds).
    #[serde(default, deserialize_with = "de_u64")]
    pub ctime: Option<u64>,
}

/// One entry of `GET /pools`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PoolInfo {
    pub poolid: String,
    #[serde(default, deserialize_with = "de_string")]
    pub comment: Option<String>,
    /// Only when one pool is asked for (`poolid=`): its guests and storage.
    #[serde(default)]
    pub members: Vec<PoolMember>,
}

/// A pool's member: a guest (`qemu`, `lxc`) or a storage on a node.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PoolMember {
    #[serde(rename = "type", default, deserialize_with = "de_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_u32")]
    pub vmid: Option<u32>,
    #[serde(default, deserialize_with = "de_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub storage: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub node: Option<String>,
}

/// `GET /access/permissions`: path → privilege → propagate flag.
pub type Permissions = BTreeMap<String, BTreeMap<String, Value>>;

/// `GET .../status/current` of a VM or container.
#[derive(Debug, Clone, Deserialize)]
pub struct GuestStatus {
    #[serde(default, deserialize_with = "de_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub qmpstatus: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de_f64")]
    pub cpus: Option<f64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de_bool")]
    pub template: bool,
}

/// `GET .../config`: a flat key → value map (values are strings or numbers).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct GuestConfig(pub BTreeMap<String, Value>);

impl GuestConfig {
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(lenient_string)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(lenient_u64)
    }
    pub fn lock(&self) -> Option<String> {
        self.get("lock")
    }
    pub fn is_template(&self) -> bool {
        self.0.get("template").is_some_and(lenient_bool)
    }
    pub fn tags(&self) -> Vec<String> {
        self.get("tags").as_deref().map(split_tags).unwrap_or_default()
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    #[serde(default, deserialize_with = "de_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub exitstatus: Option<String>,
}

/// One task of `GET /nodes/{node}/tasks` (times in whole seconds).
#[derive(Debug, Clone, Deserialize)]
pub struct TaskListEntry {
    pub upid: String,
    #[serde(default, deserialize_with = "de_i64")]
    pub starttime: Option<i64>,
    #[serde(default, deserialize_with = "de_i64")]
    pub endtime: Option<i64>,
    #[serde(default, deserialize_with = "de_string")]
    pub status: Option<String>,
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskLogLine {
    #[serde(default, deserialize_with = "de_u64")]
    pub n: Option<u64>,
    #[serde(default, deserialize_with = "de_string")]
    pub t: Option<String>,
}

/// A guest network interface, from the QEMU agent or `GET .../lxc/{id}/interfaces`.
#[derive(Debug, Clone, Deserialize)]
pub struct NetInterface {
    #[serde(default, deserialize_with = "de_string")]
    pub name: Option<String>,
    #[serde(rename = "hardware-address", default, deserialize_with = "de_string")]
    pub hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Option<Vec<IpEntry>>,
    /// LXC only: `10.0.0.5/24`.
    #[serde(default, deserialize_with = "de_string")]
    pub inet: Option<String>,
    /// LXC only.
    #[serde(default, deserialize_with = "de_string")]
    pub inet6: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpEntry {
    #[serde(rename = "ip-address", default, deserialize_with = "de_string")]
    pub ip_address: Option<String>,
    #[serde(rename = "ip-address-type", default, deserialize_with = "de_string")]
    pub ip_address_type: Option<String>,
    #[serde(default, deserialize_with = "de_u32")]
    pub prefix: Option<u32>,
}

/// `GET .../agent/network-get-interfaces`: `{"result": [...]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentInterfaces {
    #[serde(default)]
    pub result: Option<Vec<NetInterface>>,
}

/// `POST .../agent/exec`: the guest's PID of the started command.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentExecStarted {
    #[serde(default, deserialize_with = "de_u64")]
    pub pid: Option<u64>,
}

/// `GET .../agent/exec-status?pid=N`: `exited` 0 while the command runs; afterwards `exitcode` (or
/// `signal`), and the captured output (PVE decodes QEMU's base64). QEMU reports a finished PID
/// once and then forgets it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentExecStatus {
    #[serde(default, deserialize_with = "de_bool")]
    pub exited: bool,
    #[serde(default, deserialize_with = "de_i64")]
    pub exitcode: Option<i64>,
    #[serde(default, deserialize_with = "de_i64")]
    pub signal: Option<i64>,
    #[serde(rename = "out-data", default, deserialize_with = "de_string")]
    pub out_data: Option<String>,
    #[serde(rename = "err-data", default, deserialize_with = "de_string")]
    pub err_data: Option<String>,
    #[serde(rename = "out-truncated", default, deserialize_with = "de_bool")]
    pub out_truncated: bool,
    #[serde(rename = "err-truncated", default, deserialize_with = "de_bool")]
    pub err_truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_bools_as_strings() {
        let r: ClusterResource = serde_json::from_value(
            json!({"vmid": "100", "template": "1", "maxmem": 2147483648u64, "maxcpu": "2", "type": "qemu"}),
        )
        .unwrap();
        assert_eq!(r.vmid, Some(100));
        assert!(r.template);
        assert_eq!(r.maxmem, Some(2_147_483_648));
        assert_eq!(r.maxcpu, Some(2.0));
        let r: ClusterResource =
            serde_json::from_value(json!({"vmid": 101, "template": 0, "tags": "berth;Berth-web1"})).unwrap();
        assert!(!r.template);
        assert_eq!(r.tag_list(), vec!["berth", "berth-web1"]);
    }

    #[test]
    fn config_values_are_read_leniently() {
        let c: GuestConfig = serde_json::from_value(json!({"memory": "2048", "cores": 2, "template": 1})).unwrap();
        assert_eq!(c.get_u64("memory"), Some(2048));
        assert_eq!(c.get("cores").as_deref(), Some("2"));
        assert!(c.is_template());
    }

    #[test]
    fn exec_status_is_read_leniently() {
        let running: AgentExecStatus = serde_json::from_value(json!({"exited": 0})).unwrap();
        assert!(!running.exited && running.exitcode.is_none() && running.out_data.is_none());
        let done: AgentExecStatus = serde_json::from_value(json!({
            "exited": 1, "exitcode": "3", "err-data": "boom\n", "out-truncated": 1
        }))
        .unwrap();
        assert!(done.exited && done.out_truncated && !done.err_truncated);
        assert_eq!(done.exitcode, Some(3));
        assert_eq!(done.err_data.as_deref(), Some("boom\n"));
        let killed: AgentExecStatus = serde_json::from_value(json!({"exited": true, "signal": 9})).unwrap();
        assert_eq!((killed.exitcode, killed.signal), (None, Some(9)));
        assert_eq!(lenient_i64(&json!(-5)), Some(-5));
    }

    #[test]
    fn storage_defaults() {
        let s: StorageInfo =
            serde_json::from_value(json!({"storage": "local", "content": "iso,vztmpl", "shared": "0"})).unwrap();
        assert!(s.enabled && s.active && !s.shared);
        assert!(s.has_content("vztmpl") && !s.has_content("images"));
    }
}

/// One entry of `GET …/snapshot` (the pseudo-entry `current` included).
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    #[serde(default, deserialize_with = "de_string")]
    pub parent: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub snaptime: Option<u64>,
    #[serde(default, deserialize_with = "de_string")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    pub vmstate: bool,
}
