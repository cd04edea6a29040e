//! The objects a site is made of, as the planner sees them: a kind, an address, and PVE's own
//! field names with normalized values, whether they come from the file (desired) or from the
//! cluster (observed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Object kinds, in the order an apply creates them (deletes run the other way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Cluster,
    Storage,
    Pool,
    Interface,
    Vm,
    /// A container (LXC).
    Ct,
    Ha,
    Backup,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Storage => "storage",
            Kind::Pool => "pool",
            Kind::Interface => "net",
            Kind::Vm => "vm",
            Kind::Ct => "ct",
            Kind::Ha => "ha",
            Kind::Backup => "backup",
        }
    }
}

/// One object: `storage.nas`, `pool.web`, `net.pve1.vmbr1`, `backup.nightly`, `cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub kind: Kind,
    pub addr: String,
    /// PVE field → normalized value (for the desired side: only the fields the file sets).
    pub fields: BTreeMap<String, String>,
    /// Write-only fields → their reference (`env:NAME`, `file:/path`); desired side only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// The file asks for it to be gone (`ensure = "absent"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
    /// Where the file declares it (0: observed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub line: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Object {
    pub fn new(kind: Kind, addr: impl Into<String>) -> Object {
        Object {
            kind,
            addr: addr.into(),
            fields: BTreeMap::new(),
            secrets: BTreeMap::new(),
            absent: false,
            line: 0,
        }
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
    /// Whose machine of Berth's control plane this guest is (`instance …`, `warm pool …`), by
    /// its marker: such a guest belongs to its orders, and a site file never touches it.
    pub fn control_plane_owner(&self) -> Option<String> {
        if !matches!(self.kind, Kind::Vm | Kind::Ct) {
            return None;
        }
        berth_proxmox::provider::control_plane_owner(
            self.get("tags").unwrap_or_default(),
            self.get("description").unwrap_or_default(),
        )
    }
    /// `net.pve1.vmbr1` → (`pve1`, `vmbr1`); the id of other kinds.
    pub fn id(&self) -> &str {
        self.addr.split_once('.').map_or("", |(_, rest)| rest)
    }
    pub fn node_iface(&self) -> Option<(&str, &str)> {
        (self.kind == Kind::Interface)
            .then(|| self.id().split_once('.'))
            .flatten()
    }
}

/// What the cluster is: its objects, and what is asserted but never changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub objects: Vec<Object>,
    pub cluster_name: Option<String>,
    pub nodes: Vec<String>,
    /// Per node, edits someone staged and nobody reloaded (the `changes` diff).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_network: BTreeMap<String, String>,
    /// The PVE major release (HA rules from 9).
    #[serde(default)]
    pub pve_major: u32,
    /// Per guest address, its config's `digest` as read (an apply refuses a guest whose config
    /// changed after its freshness check).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
}

impl Observed {
    pub fn find(&self, addr: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.addr == addr)
    }

    /// Whose machine of Berth's control plane the object at `addr` is, or belongs to: a guest's
    /// marker, and for its HA resource (`ha.vm:N`, `ha.ct:N`) the guest's.
    pub fn control_plane_owner(&self, addr: &str) -> Option<String> {
        let guest = match addr.strip_prefix("ha.") {
            Some(sid) => {
                let (kind, id) = sid.split_once(':')?;
                format!("{kind}.{id}")
            }
            None => addr.to_owned(),
        };
        self.find(&guest)?.control_plane_owner()
    }
}

/// What the file asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub objects: Vec<Object>,
    /// `cluster`: asserted, never changed.
    pub cluster_name: Option<String>,
    pub nodes: Vec<String>,
    /// The backend of the agent configuration the site is reached through.
    pub backend: Option<String>,
}

impl Desired {
    pub fn find(&self, addr: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.addr == addr)
    }
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else { return false };
            tail.char_indices()
                .map(|(i, _)| i)
                .chain([tail.len()])
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn targets_match_addresses_and_globs() {
        use super::glob;
        assert!(glob("vm.150", "vm.150") && !glob("vm.150", "vm.1500"));
        assert!(glob("net.pve1.*", "net.pve1.vmbr1") && !glob("net.pve1.*", "net.pve2.vmbr1"));
        assert!(glob("*", "storage.nas") && glob("vm.*0", "vm.150") && !glob("vm.*0", "vm.151"));
        assert!(glob("pool.*", "pool.éé") && !glob("pool.*x", "pool.é"));
    }
}
