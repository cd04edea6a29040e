//! The emulated cluster's state: nodes, storages and volumes, pools, guests (one `World` behind a mutex).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use crate::config::Timings;
use crate::exec::{ExecSettings, GuestExecs};
use crate::faults::FaultRule;
use crate::perms::Token;
pub(crate) use crate::storagecfg::StorageDef;
use crate::tasks::Task;
use crate::{GuestSnapshot, RequestRecord};

/// qemu or lxc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Qemu,
    Lxc,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Qemu => "qemu",
            Kind::Lxc => "lxc",
        }
    }
    /// Directory under /etc/pve/nodes/<node>/ holding the config.
    pub fn conf_dir(self) -> &'static str {
        match self {
            Kind::Qemu => "qemu-server",
            Kind::Lxc => "lxc",
        }
    }
    /// "VM" or "CT", as PVE words messages.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Qemu => "VM",
            Kind::Lxc => "CT",
        }
    }
    /// The error PVE gives when the config is not on the node that handles the request.
    pub fn missing_config(self, node: &str, vmid: u32) -> String {
        format!(
            "Configuration file 'nodes/{node}/{}/{vmid}.conf' does not exist",
            self.conf_dir()
        )
    }
    /// The config lock file named in lock timeouts.
    pub fn lock_file(self, vmid: u32) -> String {
        match self {
            Kind::Qemu => format!("/var/lock/qemu-server/lock-{vmid}.conf"),
            Kind::Lxc => format!("/run/lock/lxc/pve-config-{vmid}.lock"),
        }
    }
}

pub(crate) struct Node {
    pub name: String,
    /// 1-based position in the cluster (pve1 = 1).
    pub index: u32,
    pub cpus: u32,
    pub memory: u64,
    pub online: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Volume {
    pub storage: String,
    pub volname: String,
    pub size: u64,
    pub format: String,
    pub content: String,
    pub vmid: Option<u32>,
    pub ctime: u64,
    pub parent: Option<String>,
}

impl Volume {
    pub fn volid(&self) -> String {
        format!("{}:{}", self.storage, self.volname)
    }
}

#[derive(Default)]
pub(crate) struct Pool {
    pub comment: Option<String>,
    pub vms: BTreeSet<u32>,
    pub storage: BTreeSet<String>,
}

pub(crate) struct Guest {
    pub vmid: u32,
    pub node: String,
    pub kind: Kind,
    pub config: BTreeMap<String, String>,
    pub pending: BTreeMap<String, String>,
    pub pending_delete: BTreeSet<String>,
    /// Cloud-init values last written to the cloud-init drive (for GET .../cloudinit).
    pub cloudinit_applied: BTreeMap<String, String>,
    pub running: bool,
    pub started_at: Option<Instant>,
    pub agent_ready_at: Option<Instant>,
    /// Processes started through the guest agent (`agent/exec`).
    pub execs: GuestExecs,
    /// Its snapshots, oldest first (they die with the guest).
    pub snapshots: Vec<SnapshotEntry>,
}

/// One snapshot of a guest: the config it had, and whether its RAM was saved (`vmstate`).
#[derive(Clone, Debug)]
pub(crate) struct SnapshotEntry {
    pub name: String,
    /// The snapshot it was taken on top of.
    pub parent: Option<String>,
    /// Unix seconds.
    pub snaptime: u64,
    pub description: String,
    pub vmstate: bool,
    pub config: BTreeMap<String, String>,
}

impl Guest {
    pub fn new(vmid: u32, node: &str, kind: Kind, config: BTreeMap<String, String>) -> Guest {
        Guest {
            vmid,
            node: node.to_string(),
            kind,
            config,
            pending: BTreeMap::new(),
            pending_delete: BTreeSet::new(),
            cloudinit_applied: BTreeMap::new(),
            running: false,
            started_at: None,
            agent_ready_at: None,
            execs: GuestExecs::default(),
            snapshots: Vec::new(),
        }
    }
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }
    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|t| t == "1")
    }
    pub fn name(&self) -> String {
        let key = if self.kind == Kind::Qemu { "name" } else { "hostname" };
        self.config.get(key).cloned().unwrap_or_else(|| match self.kind {
            Kind::Qemu => format!("VM {}", self.vmid),
            Kind::Lxc => format!("CT{}", self.vmid),
        })
    }
    pub fn tags(&self) -> Vec<String> {
        self.config
            .get("tags")
            .map(|t| t.split(';').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    }
    pub fn status_str(&self) -> &'static str {
        if self.running { "running" } else { "stopped" }
    }
    pub fn uptime(&self) -> u64 {
        self.started_at.map(|s| s.elapsed().as_secs()).unwrap_or(0)
    }
    /// Memory in MiB (property string `[current=]N`).
    pub fn memory_mib(&self) -> u64 {
        let raw = self.config.get("memory").map(String::as_str).unwrap_or("512");
        crate::propstr::memory_current(raw).unwrap_or(512)
    }
    pub fn cpus(&self) -> u64 {
        let get = |k: &str, d: u64| self.config.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        match self.kind {
            Kind::Qemu => get("vcpus", get("cores", 1) * get("sockets", 1)),
            Kind::Lxc => get("cores", 1),
        }
    }
    /// Whether `agent: [enabled=]1` is in the config.
    pub fn agent_enabled(&self) -> bool {
        self.config
            .get("agent")
            .is_some_and(|a| crate::propstr::agent_enabled(a))
    }
    /// Bytes of the boot disk (qemu) or rootfs (lxc).
    pub fn maxdisk(&self) -> u64 {
        let key = match self.kind {
            Kind::Lxc => Some("rootfs".to_string()),
            Kind::Qemu => self.boot_disk_key(),
        };
        key.and_then(|k| self.config.get(&k))
            .and_then(|v| crate::propstr::get_kv(v, "size"))
            .and_then(|s| crate::propstr::parse_size(&s).ok())
            .unwrap_or(0)
    }
    fn boot_disk_key(&self) -> Option<String> {
        if let Some(order) = self.config.get("boot").and_then(|b| crate::propstr::get_kv(b, "order")) {
            for dev in order.split(';') {
                if self.config.get(dev).is_some_and(|v| !crate::propstr::is_cdrom(v)) {
                    return Some(dev.to_string());
                }
            }
        }
        self.disk_keys()
            .into_iter()
            .find(|k| !crate::propstr::is_cdrom(&self.config[k]))
    }
    /// Config keys that hold drives (scsiN, virtioN, sataN, ideN, efidisk0, tpmstate0, rootfs, mpN).
    pub fn disk_keys(&self) -> Vec<String> {
        self.config
            .keys()
            .filter(|k| crate::propstr::is_disk_key(k))
            .cloned()
            .collect()
    }
    pub fn snapshot(&self) -> GuestSnapshot {
        GuestSnapshot {
            vmid: self.vmid,
            node: self.node.clone(),
            kind: self.kind.as_str().to_string(),
            name: self.name(),
            status: self.status_str().to_string(),
            template: self.is_template(),
            lock: self.lock().map(str::to_string),
            tags: self.tags(),
            description: self.config.get("description").cloned().unwrap_or_default(),
            config: self.config.clone(),
        }
    }
}

/// What a vzdump archive holds, as far as a restore needs: the guest's kind and config, and the
/// volumes it owned then.
#[derive(Clone, Debug)]
pub(crate) struct BackupImage {
    pub kind: Kind,
    pub config: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
}

/// Everything the emulator knows. Lock it briefly; never across an await.
pub(crate) struct World {
    pub nodes: Vec<Node>,
    pub storages: Vec<StorageDef>,
    /// (scope, volid) → volume; scope is the node for local storages and "" for shared ones.
    pub volumes: BTreeMap<(String, String), Volume>,
    pub pools: BTreeMap<String, Pool>,
    /// Per node: its network configuration, running and staged.
    pub networks: BTreeMap<String, crate::netcfg::NodeNetwork>,
    /// HA resources, groups and rules.
    pub ha: crate::handlers::HaConfig,
    /// 8 or 9: the PVE release the emulator behaves as.
    pub pve_major: u8,
    /// `jobs.cfg`: backup jobs by id.
    pub backup_jobs: BTreeMap<String, BTreeMap<String, String>>,
    /// What each backup volume (by volid) holds.
    pub backups: BTreeMap<String, BackupImage>,
    pub guests: BTreeMap<u32, Guest>,
    pub tasks: HashMap<String, Task>,
    pub task_order: Vec<String>,
    pub tokens: BTreeMap<String, Token>,
    pub faults: Vec<FaultRule>,
    pub fault_rate: f64,
    pub timings: Timings,
    pub requests: Vec<RequestRecord>,
    pub violations: Vec<String>,
    pub next_pid: u32,
    /// Added to every answer (a real API's round trip); zero by default.
    pub latency: std::time::Duration,
    pub boot: Instant,
    pub node_fingerprint: String,
    pub exec: ExecSettings,
}

impl World {
    pub fn new(timings: Timings, node_fingerprint: String) -> World {
        World {
            nodes: Vec::new(),
            storages: Vec::new(),
            volumes: BTreeMap::new(),
            pools: BTreeMap::new(),
            networks: BTreeMap::new(),
            backup_jobs: BTreeMap::new(),
            backups: BTreeMap::new(),
            ha: Default::default(),
            pve_major: 9,
            guests: BTreeMap::new(),
            tasks: HashMap::new(),
            task_order: Vec::new(),
            tokens: BTreeMap::new(),
            faults: Vec::new(),
            fault_rate: 0.0,
            timings,
            requests: Vec::new(),
            violations: Vec::new(),
            next_pid: 4000 + rand::random_range(0..20000),
            latency: std::time::Duration::ZERO,
            boot: Instant::now(),
            node_fingerprint,
            exec: ExecSettings::default(),
        }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn storage(&self, id: &str) -> Option<&StorageDef> {
        self.storages.iter().find(|s| s.id == id)
    }

    /// A storage new volumes may go to from `node` (`storage_check_node`, `storage_check_enabled`).
    pub fn storage_for_alloc(&self, id: &str, node: &str) -> Result<&StorageDef, String> {
        let s = self
            .storage(id)
            .ok_or_else(|| format!("storage '{id}' does not exist"))?;
        if !s.nodes.iter().any(|n| n == node) {
            return Err(format!("storage '{id}' is not available on node '{node}'"));
        }
        if s.disabled() {
            return Err(format!("storage '{id}' is disabled"));
        }
        Ok(s)
    }

    /// The guest `vmid` of `kind` if its config lives on `node`.
    pub fn guest_on(&self, node: &str, kind: Kind, vmid: u32) -> Option<&Guest> {
        self.guests.get(&vmid).filter(|g| g.node == node && g.kind == kind)
    }

    pub fn guest_on_mut(&mut self, node: &str, kind: Kind, vmid: u32) -> Option<&mut Guest> {
        self.guests.get_mut(&vmid).filter(|g| g.node == node && g.kind == kind)
    }

    pub fn pool_of(&self, vmid: u32) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, p)| p.vms.contains(&vmid))
            .map(|(id, _)| id.as_str())
    }

    pub fn remove_from_pools(&mut self, vmid: u32) {
        for pool in self.pools.values_mut() {
            pool.vms.remove(&vmid);
        }
    }

    /// Bytes used on `storage` as seen from `node`.
    pub fn storage_used(&self, storage: &StorageDef, node: &str) -> u64 {
        let scope = storage.scope(node);
        self.volumes
            .iter()
            .filter(|((s, _), v)| *s == scope && v.storage == storage.id)
            .map(|(_, v)| v.size)
            .sum()
    }

    pub fn volume(&self, node: &str, volid: &str) -> Option<&Volume> {
        let sid = volid.split(':').next()?;
        let storage = self.storage(sid)?;
        self.volumes.get(&(storage.scope(node), volid.to_string()))
    }

    pub fn volume_mut(&mut self, node: &str, volid: &str) -> Option<&mut Volume> {
        let sid = volid.split(':').next()?;
        let scope = self.storage(sid)?.scope(node);
        self.volumes.get_mut(&(scope, volid.to_string()))
    }

    /// Adds `vol` where `node` sees its storage and returns its volid.
    pub fn insert_volume(&mut self, node: &str, vol: Volume) -> String {
        let scope = self
            .storage(&vol.storage)
            .map(|s| s.scope(node))
            .unwrap_or_else(|| node.to_string());
        let volid = vol.volid();
        self.volumes.insert((scope, volid.clone()), vol);
        volid
    }

    pub fn remove_volume(&mut self, node: &str, volid: &str) -> Option<Volume> {
        let sid = volid.split(':').next()?;
        let scope = self.storage(sid)?.scope(node);
        self.volumes.remove(&(scope, volid.to_string()))
    }

    /// Lowest N such that `vm-<vmid>-disk-N` is free on `storage` (as seen from `node`).
    pub fn next_disk_index(&self, storage: &str, node: &str, vmid: u32) -> u32 {
        let Some(sdef) = self.storage(storage) else { return 0 };
        let scope = sdef.scope(node);
        let mut used = BTreeSet::new();
        for ((s, _), v) in &self.volumes {
            if *s == scope && v.storage == storage && v.vmid == Some(vmid) {
                let base = v.volname.rsplit('/').next().unwrap_or(&v.volname);
                let base = base.split('.').next().unwrap_or(base);
                if let Some(n) = base
                    .strip_prefix(&format!("vm-{vmid}-disk-"))
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    used.insert(n);
                }
            }
        }
        (0..).find(|n| !used.contains(n)).unwrap_or(0)
    }

    /// Allocates a new image volume for `vmid` and returns its volid.
    pub fn alloc_disk(
        &mut self,
        node: &str,
        storage: &str,
        vmid: u32,
        size: u64,
        format: Option<&str>,
        content: &str,
    ) -> String {
        let n = self.next_disk_index(storage, node, vmid);
        let vol = self.new_volume(storage, vmid, &format!("disk-{n}"), size, format, content);
        self.insert_volume(node, vol)
    }

    /// Allocates the cloud-init volume of `vmid` on `storage`.
    pub fn alloc_cloudinit(&mut self, node: &str, storage: &str, vmid: u32) -> String {
        let vol = self.new_volume(storage, vmid, "cloudinit", 4 * 1024 * 1024, Some("qcow2"), "images");
        self.insert_volume(node, vol)
    }

    /// A volume `vm-{vmid}-{name}` owned by `vmid`: on file-based storage in the `{vmid}/` directory with the
    /// format (else the storage's default) as extension, elsewhere a raw block device.
    pub fn new_volume(
        &self,
        storage: &str,
        vmid: u32,
        name: &str,
        size: u64,
        format: Option<&str>,
        content: &str,
    ) -> Volume {
        let (volname, format) = match self.storage(storage).filter(|s| s.is_file_based()) {
            Some(s) => {
                let format = format.unwrap_or(s.default_format());
                (format!("{vmid}/vm-{vmid}-{name}.{format}"), format)
            }
            None => (format!("vm-{vmid}-{name}"), "raw"),
        };
        Volume {
            storage: storage.to_string(),
            volname,
            size,
            format: format.to_string(),
            content: content.to_string(),
            vmid: Some(vmid),
            ctime: unix_now(),
            parent: None,
        }
    }

    /// The disks owned by `vmid` (any storage visible from `node`); its backups are not disks.
    pub fn volumes_of(&self, node: &str, vmid: u32) -> Vec<String> {
        self.volumes
            .iter()
            .filter(|((scope, _), v)| (scope.is_empty() || scope == node) && v.vmid == Some(vmid))
            .filter(|(_, v)| matches!(v.content.as_str(), "images" | "rootdir"))
            .map(|((_, volid), _)| volid.clone())
            .collect()
    }

    pub fn snapshots(&self) -> Vec<GuestSnapshot> {
        self.guests.values().map(Guest::snapshot).collect()
    }

    pub fn record_request(&mut self, rec: RequestRecord) {
        // Bounded so that long soak runs do not grow without limit.
        const MAX: usize = 200_000;
        if self.requests.len() >= MAX {
            self.requests.drain(..MAX / 2);
        }
        self.requests.push(rec);
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
