//! Moving guests between nodes (`…/migrate`, with its GET precondition check) and disks between
//! storages (`qemu/…/move_disk`, `lxc/…/move_volume`); both are tasks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::GuestType;
use super::error::PveError;
use super::http::{Method, PveClient};
use super::params::{Params, path_segment};
use super::task::Upid;
use super::types::{de_bool, de_string, de_u64};

/// What `GET …/migrate` says a migration would meet.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct MigrateCheck {
    #[serde(default, deserialize_with = "de_bool")]
    pub running: bool,
    /// qemu says `allowed_nodes`, lxc `allowed-nodes`.
    #[serde(default, alias = "allowed-nodes")]
    pub allowed_nodes: Vec<String>,
    /// Per node, why not (`unavailable_storages`, …); lxc says `not-allowed-nodes`.
    #[serde(default, alias = "not-allowed-nodes")]
    pub not_allowed_nodes: BTreeMap<String, Value>,
    #[serde(default)]
    pub local_disks: Vec<LocalDisk>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LocalDisk {
    #[serde(default, deserialize_with = "de_string")]
    pub volid: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub drivename: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub size: Option<u64>,
}

/// How to migrate: `online` keeps a VM running, `restart` stops and starts a container,
/// `with_local_disks` copies disks on local storage along.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    pub online: bool,
    pub restart: bool,
    pub with_local_disks: bool,
}

fn upid(path: String, v: Value) -> Result<Upid, PveError> {
    match v {
        Value::String(s) => Upid::parse(&s),
        other => Err(PveError::Decode {
            method: "POST",
            path,
            message: format!("expected a task ID (UPID), got {other}"),
        }),
    }
}

impl PveClient {
    /// `GET …/migrate[?target=]`.
    pub async fn migrate_check(&self, node: &str, ty: GuestType, vmid: u32) -> Result<MigrateCheck, PveError> {
        let path = format!("/nodes/{}/{}/{vmid}/migrate", path_segment(node), ty.segment());
        self.get(&path, &Params::new()).await
    }

    /// `POST …/migrate`: the task that moves the guest to `target`.
    pub async fn migrate(
        &self,
        node: &str,
        ty: GuestType,
        vmid: u32,
        target: &str,
        o: MigrateOptions,
    ) -> Result<Upid, PveError> {
        let path = format!("/nodes/{}/{}/{vmid}/migrate", path_segment(node), ty.segment());
        let mut p = Params::new().str("target", target);
        if o.online {
            p = p.bool("online", true);
        }
        if o.restart && ty == GuestType::Lxc {
            p = p.bool("restart", true);
        }
        if o.with_local_disks && ty == GuestType::Qemu {
            p = p.bool("with-local-disks", true);
        }
        upid(path.clone(), self.write_once(Method::Post, &path, &p).await?)
    }

    /// `move_disk` (VM) / `move_volume` (CT): `disk` to `storage`; the source goes with `delete`,
    /// else it stays as `unusedN`.
    pub async fn move_disk(
        &self,
        node: &str,
        ty: GuestType,
        vmid: u32,
        disk: &str,
        storage: &str,
        delete: bool,
    ) -> Result<Upid, PveError> {
        let (verb, key) = match ty {
            GuestType::Qemu => ("move_disk", "disk"),
            GuestType::Lxc => ("move_volume", "volume"),
        };
        let path = format!("/nodes/{}/{}/{vmid}/{verb}", path_segment(node), ty.segment());
        let p = Params::new()
            .str(key, disk)
            .str("storage", storage)
            .bool("delete", delete);
        upid(path.clone(), self.write_once(Method::Post, &path, &p).await?)
    }
}
