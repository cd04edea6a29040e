//! Typed calls for every PVE endpoint Berth uses: cluster and node inventory, storage, pools,
//! permissions, and the VM/container lifecycle (clone, create, config, resize, power, delete,
//! guest interfaces, commands run by the guest agent).

use serde_json::{Value, json};

use super::error::PveError;
use super::http::{Method, PveClient};
use super::params::{Params, path_segment};
use super::task::Upid;
use super::types::{
    AgentExecStarted, AgentExecStatus, AgentInterfaces, ClusterResource, GuestConfig, GuestStatus, NetInterface,
    NodeInfo, NodeStatus, PendingEntry, Permissions, PoolInfo, SnapshotInfo, StorageInfo, StorageVolume, VersionInfo,
    lenient_u64,
};

/// The two guest types, and their path segment (`qemu`, `lxc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestType {
    Qemu,
    Lxc,
}

impl GuestType {
    pub fn segment(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Lxc => "lxc",
        }
    }
    /// From a `/cluster/resources` `type`.
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "qemu" => Some(GuestType::Qemu),
            "lxc" => Some(GuestType::Lxc),
            _ => None,
        }
    }
    /// "VM" or "CT", as PVE's messages say.
    pub fn label(self) -> &'static str {
        match self {
            GuestType::Qemu => "VM",
            GuestType::Lxc => "CT",
        }
    }
}

/// Power actions under `.../status/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    Stop,
    Shutdown,
    Reboot,
    /// Resume a paused VM.
    Resume,
}

impl PowerAction {
    fn segment(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Shutdown => "shutdown",
            PowerAction::Reboot => "reboot",
            PowerAction::Resume => "resume",
        }
    }
}

fn node_path(node: &str) -> String {
    format!("/nodes/{}", path_segment(node))
}

fn guest_path(node: &str, ty: GuestType, vmid: u32) -> String {
    format!("{}/{}/{vmid}", node_path(node), ty.segment())
}

fn upid_from(method: Method, path: &str, data: Value) -> Result<Upid, PveError> {
    match data {
        Value::String(s) => Upid::parse(&s),
        other => Err(PveError::Decode {
            method: method.as_str(),
            path: path.to_owned(),
            message: format!("expected a task ID (UPID), got {other}"),
        }),
    }
}

impl PveClient {
    pub async fn version(&self) -> Result<VersionInfo, PveError> {
        self.get("/version", &Params::new()).await
    }

    /// `GET /cluster/resources[?type=…]`.
    pub async fn cluster_resources(&self, kind: Option<&str>) -> Result<Vec<ClusterResource>, PveError> {
        self.get("/cluster/resources", &Params::new().opt_str("type", kind))
            .await
    }

    /// `GET /cluster/nextid?vmid=N`: `true` if N is free (at the time of asking; nothing is
    /// reserved), `false` on `400 … already exists`.
    pub async fn vmid_is_free(&self, vmid: u32) -> Result<bool, PveError> {
        match self
            .get::<Value>("/cluster/nextid", &Params::new().int("vmid", vmid))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(400) && e.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /cluster/nextid`: PVE's suggestion (returned as a string on the wire).
    pub async fn next_id(&self) -> Result<u32, PveError> {
        let v: Value = self.get("/cluster/nextid", &Params::new()).await?;
        lenient_u64(&v)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| PveError::Decode {
                method: "GET",
                path: "/cluster/nextid".into(),
                message: format!("expected a VMID, got {v}"),
            })
    }

    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, PveError> {
        self.get("/nodes", &Params::new()).await
    }

    pub async fn node_status(&self, node: &str) -> Result<NodeStatus, PveError> {
        self.get(&format!("{}/status", node_path(node)), &Params::new()).await
    }

    /// Storages usable on a node, optionally only those holding `content` (`images`, `vztmpl`…).
    pub async fn storages(&self, node: &str, content: Option<&str>) -> Result<Vec<StorageInfo>, PveError> {
        self.get(
            &format!("{}/storage", node_path(node)),
            &Params::new().opt_str("content", content),
        )
        .await
    }

    pub async fn storage_status(&self, node: &str, storage: &str) -> Result<StorageInfo, PveError> {
        self.get(
            &format!("{}/storage/{}/status", node_path(node), path_segment(storage)),
            &Params::new(),
        )
        .await
    }

    pub async fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageVolume>, PveError> {
        let path = format!("{}/storage/{}/content", node_path(node), path_segment(storage));
        self.get(&path, &Params::new().opt_str("content", content)).await
    }

    pub async fn pools(&self, poolid: Option<&str>) -> Result<Vec<PoolInfo>, PveError> {
        self.get("/pools", &Params::new().opt_str("poolid", poolid)).await
    }

    /// `POST /pools`.
    pub async fn create_pool(&self, poolid: &str, comment: Option<&str>) -> Result<(), PveError> {
        let params = Params::new().str("poolid", poolid).opt_str("comment", comment);
        self.write::<Value>(Method::Post, "/pools", &params).await.map(|_| ())
    }

    /// `PUT /pools`: adds (or with `remove`, removes) guests and storage; a guest in another
    /// pool is moved only with `allow_move`.
    pub async fn update_pool(
        &self,
        poolid: &str,
        vms: &[u32],
        storage: &[&str],
        remove: bool,
        allow_move: bool,
    ) -> Result<(), PveError> {
        let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(","));
        let mut params = Params::new()
            .str("poolid", poolid)
            .opt_str("vms", join(vms.iter().map(u32::to_string).collect()).as_deref())
            .opt_str(
                "storage",
                join(storage.iter().map(|s| s.to_string()).collect()).as_deref(),
            );
        if remove {
            params = params.bool("delete", true);
        }
        if allow_move {
            params = params.bool("allow-move", true);
        }
        self.write::<Value>(Method::Put, "/pools", &params).await.map(|_| ())
    }

    /// `PUT /pools` with only `comment`: the pool's description.
    pub async fn set_pool_comment(&self, poolid: &str, comment: &str) -> Result<(), PveError> {
        let params = Params::new().str("poolid", poolid).str("comment", comment);
        self.write::<Value>(Method::Put, "/pools", &params).await.map(|_| ())
    }

    /// `DELETE /pools?poolid=`: an empty pool only.
    pub async fn delete_pool(&self, poolid: &str) -> Result<(), PveError> {
        self.write::<Value>(Method::Delete, "/pools", &Params::new().str("poolid", poolid))
            .await
            .map(|_| ())
    }

    /// The calling token's effective privileges, for one path or every path with an ACL.
    pub async fn permissions(&self, path: Option<&str>) -> Result<Permissions, PveError> {
        self.get("/access/permissions", &Params::new().opt_str("path", path))
            .await
    }

    pub async fn guest_status(&self, node: &str, ty: GuestType, vmid: u32) -> Result<GuestStatus, PveError> {
        self.get(
            &format!("{}/status/current", guest_path(node, ty, vmid)),
            &Params::new(),
        )
        .await
    }

    pub async fn guest_config(&self, node: &str, ty: GuestType, vmid: u32) -> Result<GuestConfig, PveError> {
        self.get(&format!("{}/config", guest_path(node, ty, vmid)), &Params::new())
            .await
    }

    /// `PUT .../config` (synchronous); retried on lock timeouts.
    pub async fn update_config(&self, node: &str, ty: GuestType, vmid: u32, params: &Params) -> Result<(), PveError> {
        let path = format!("{}/config", guest_path(node, ty, vmid));
        self.write::<Value>(Method::Put, &path, params).await.map(|_| ())
    }

    /// `PUT .../resize` to an absolute size like `20G`. Older PVE answers `null` (done), newer
    /// a UPID to wait for.
    pub async fn resize_disk(
        &self,
        node: &str,
        ty: GuestType,
        vmid: u32,
        disk: &str,
        size: &str,
    ) -> Result<Option<Upid>, PveError> {
        let path = format!("{}/resize", guest_path(node, ty, vmid));
        let data: Value = self
            .write(Method::Put, &path, &Params::new().str("disk", disk).str("size", size))
            .await?;
        match data {
            Value::Null => Ok(None),
            other => upid_from(Method::Put, &path, other).map(Some),
        }
    }

    /// `POST .../status/{start|stop|shutdown|reboot}`: the task's UPID.
    pub async fn power(
        &self,
        node: &str,
        ty: GuestType,
        vmid: u32,
        action: PowerAction,
        params: &Params,
    ) -> Result<Upid, PveError> {
        let path = format!("{}/status/{}", guest_path(node, ty, vmid), action.segment());
        let data = self.write(Method::Post, &path, params).await?;
        upid_from(Method::Post, &path, data)
    }

    /// `DELETE /nodes/{node}/{type}/{vmid}` with `purge=1&destroy-unreferenced-disks=1`.
    pub async fn delete_guest(&self, node: &str, ty: GuestType, vmid: u32) -> Result<Upid, PveError> {
        let path = guest_path(node, ty, vmid);
        let params = Params::new()
            .bool("purge", true)
            .bool("destroy-unreferenced-disks", true);
        let data = self.write(Method::Delete, &path, &params).await?;
        upid_from(Method::Delete, &path, data)
    }

    /// `GET …/snapshot`: the guest's snapshots, without the pseudo-entry `current`.
    pub async fn snapshots(&self, node: &str, ty: GuestType, vmid: u32) -> Result<Vec<SnapshotInfo>, PveError> {
        let all: Vec<SnapshotInfo> = self
            .get(&format!("{}/snapshot", guest_path(node, ty, vmid)), &Params::new())
            .await?;
        Ok(all.into_iter().filter(|s| s.name != "current").collect())
    }

    /// `POST …/snapshot`, sent once (a retry of a lost answer would find the name taken).
    /// `vmstate` exists for VMs only.
    pub async fn create_snapshot(
        &self,
        node: &str,
        ty: GuestType,
        vmid: u32,
        name: &str,
        description: &str,
        vmstate: bool,
    ) -> Result<Upid, PveError> {
        let path = format!("{}/snapshot", guest_path(node, ty, vmid));
        let mut params = Params::new().str("snapname", name);
        if !description.is_empty() {
            params = params.str("description", description);
        }
        if vmstate && ty == GuestType::Qemu {
            params = params.bool("vmstate", true);
        }
        let data = self.write_once(Method::Post, &path, &params).await?;
        upid_from(Method::Post, &path, data)
    }

    /// `DELETE …/snapshot/{name}`.
    pub async fn delete_snapshot(&self, node: &str, ty: GuestType, vmid: u32, name: &str) -> Result<Upid, PveError> {
        let path = format!("{}/snapshot/{}", guest_path(node, ty, vmid), path_segment(name));
        let data = self.write_once(Method::Delete, &path, &Params::new()).await?;
        upid_from(Method::Delete, &path, data)
    }

    /// `POST …/snapshot/{name}/rollback` (`start`: run the guest afterwards).
    pub async fn rollback_snapshot(
        &self,
        node: &str,
        ty: GuestType,
        vmid: u32,
        name: &str,
        start: bool,
    ) -> Result<Upid, PveError> {
        let path = format!(
            "{}/snapshot/{}/rollback",
            guest_path(node, ty, vmid),
            path_segment(name)
        );
        let params = if start {
            Params::new().bool("start", true)
        } else {
            Params::new()
        };
        let data = self.write_once(Method::Post, &path, &params).await?;
        upid_from(Method::Post, &path, data)
    }

    /// `POST /nodes/{node}/qemu/{vmid}/clone`, sent once: a retried clone must first check
    /// whether the previous attempt created the VM.
    pub async fn clone_vm(&self, node: &str, vmid: u32, params: &Params) -> Result<Upid, PveError> {
        let path = format!("{}/clone", guest_path(node, GuestType::Qemu, vmid));
        let data = self.write_once(Method::Post, &path, params).await?;
        upid_from(Method::Post, &path, data)
    }

    /// `POST /nodes/{node}/lxc`, sent once (same reason as `clone_vm`).
    pub async fn create_container(&self, node: &str, params: &Params) -> Result<Upid, PveError> {
        let path = format!("{}/lxc", node_path(node));
        let data = self.write_once(Method::Post, &path, params).await?;
        upid_from(Method::Post, &path, data)
    }

    /// `POST /nodes/{node}/qemu`: a VM from scratch (disks as `STORAGE:SIZE_GiB`), sent once.
    pub async fn create_vm(&self, node: &str, params: &Params) -> Result<Upid, PveError> {
        let path = format!("{}/qemu", node_path(node));
        let data = self.write_once(Method::Post, &path, params).await?;
        upid_from(Method::Post, &path, data)
    }

    /// A guest `vmid` from a vzdump backup volume (`archive`), joining `pool`:
    /// `POST /nodes/{node}/qemu` with `archive` (`qmrestore`: disks on the storages they were on,
    /// or all on `storage`), or `/lxc` with the archive as `ostemplate` and `restore=1`
    /// (`vzrestore`: every volume on `storage`, which PVE takes to be `local` when not given).
    /// Sent once; never over an existing guest.
    pub async fn restore_guest(
        &self,
        node: &str,
        ty: GuestType,
        vmid: u32,
        archive: &str,
        storage: Option<&str>,
        pool: Option<&str>,
    ) -> Result<Upid, PveError> {
        let p = Params::new()
            .str("vmid", vmid.to_string())
            .opt_str("storage", storage)
            .opt_str("pool", pool);
        match ty {
            GuestType::Qemu => self.create_vm(node, &p.str("archive", archive)).await,
            GuestType::Lxc => {
                self.create_container(node, &p.str("ostemplate", archive).str("restore", "1"))
                    .await
            }
        }
    }

    /// `GET …/pending`: every key with its current value and what waits for a restart.
    pub async fn pending(&self, node: &str, ty: GuestType, vmid: u32) -> Result<Vec<PendingEntry>, PveError> {
        self.get(&format!("{}/pending", guest_path(node, ty, vmid)), &Params::new())
            .await
    }

    /// `GET .../agent/network-get-interfaces`, once (the caller polls).
    pub async fn agent_interfaces(&self, node: &str, vmid: u32) -> Result<Vec<NetInterface>, PveError> {
        let path = format!(
            "{}/agent/network-get-interfaces",
            guest_path(node, GuestType::Qemu, vmid)
        );
        let r: AgentInterfaces = self.get_once(&path, &Params::new()).await?;
        Ok(r.result.unwrap_or_default())
    }

    /// `POST .../agent/exec` with `command` = `argv` (program + arguments, run without a shell):
    /// the guest PID. `command` is a JSON array (see `Payload` in `http`: a form cannot carry a
    /// list), and the request is sent once: whether running it again is safe is the caller's call.
    pub async fn agent_exec(&self, node: &str, vmid: u32, argv: &[&str]) -> Result<u64, PveError> {
        let path = format!("{}/agent/exec", guest_path(node, GuestType::Qemu, vmid));
        let r: AgentExecStarted = self.post_json_once(&path, &json!({ "command": argv })).await?;
        r.pid.ok_or_else(|| PveError::Decode {
            method: "POST",
            path,
            message: "the answer has no pid".into(),
        })
    }

    /// `GET .../agent/exec-status?pid=N`, once (the caller polls).
    pub async fn agent_exec_status(&self, node: &str, vmid: u32, pid: u64) -> Result<AgentExecStatus, PveError> {
        let path = format!("{}/agent/exec-status", guest_path(node, GuestType::Qemu, vmid));
        self.get_once(&path, &Params::new().int("pid", pid)).await
    }

    /// `GET /nodes/{node}/lxc/{vmid}/interfaces`, once.
    pub async fn lxc_interfaces(&self, node: &str, vmid: u32) -> Result<Vec<NetInterface>, PveError> {
        let path = format!("{}/interfaces", guest_path(node, GuestType::Lxc, vmid));
        let r: Option<Vec<NetInterface>> = self.get_once(&path, &Params::new()).await?;
        Ok(r.unwrap_or_default())
    }
}
