//! A guest (VM or container) as the provider tracks it: where it lives, who owns it, and how it
//! turns into Berth's `Instance`.

use std::net::{Ipv4Addr, Ipv6Addr};

use berth_core::{GuestKind, Instance, InstanceId, PoolMark, PowerState};

use super::marker;
use crate::client::GuestType;
use crate::client::types::{ClusterResource, GuestStatus};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// One VM or container, located in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Guest {
    pub vmid: u32,
    pub node: String,
    pub ty: GuestType,
    pub name: String,
    /// Berth's instance id, when the guest carries the marker (tags or description).
    pub owner: Option<InstanceId>,
    /// The warm pool it is kept in (its tags say so).
    pub pool: Option<PoolMark>,
    /// Whether the marker tags are set (set by configure for VMs, at creation for containers).
    pub tagged: bool,
    pub lock: Option<String>,
    pub status: Option<String>,
    pub template: bool,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
}

impl Guest {
    pub fn from_resource(r: &ClusterResource) -> Option<Guest> {
        let ty = GuestType::from_kind(r.kind.as_deref()?)?;
        let vmid = r.vmid?;
        let tags = r.tag_list();
        let owner = marker::owner_from_tags(&tags);
        Some(Guest {
            vmid,
            node: r.node.clone().unwrap_or_default(),
            ty,
            name: r.name.clone().unwrap_or_default(),
            tagged: owner.is_some(),
            owner,
            pool: marker::pool_from_tags(&tags),
            lock: r.lock.clone().filter(|l| !l.is_empty()),
            status: r.status.clone(),
            template: r.template,
            cores: r.maxcpu.map(|c| c.round() as u32),
            memory_mib: r.maxmem.map(|m| m / MIB),
            disk_gib: r.maxdisk.map(to_gib),
        })
    }

    /// Takes the fresher values of `status/current`.
    pub fn apply_status(&mut self, st: &GuestStatus) {
        if st.status.is_some() {
            self.status = st.status.clone();
        }
        self.lock = st.lock.clone().filter(|l| !l.is_empty());
        if let Some(n) = &st.name {
            self.name = n.clone();
        }
        if let Some(c) = st.cpus {
            self.cores = Some(c.round() as u32);
        }
        if let Some(m) = st.maxmem {
            self.memory_mib = Some(m / MIB);
        }
        if let Some(d) = st.maxdisk {
            self.disk_gib = Some(to_gib(d));
        }
        if st.status.as_deref() == Some("running") && st.qmpstatus.as_deref() == Some("paused") {
            self.status = Some("paused".into());
        }
    }

    pub fn is_running(&self) -> bool {
        self.status.as_deref() == Some("running")
    }

    pub fn kind(&self) -> GuestKind {
        match self.ty {
            GuestType::Qemu => GuestKind::Vm,
            GuestType::Lxc => GuestKind::Container,
        }
    }

    /// "VM 10234 (web1) on pve1".
    pub fn label(&self) -> String {
        format!("{} {} ({}) on {}", self.ty.label(), self.vmid, self.name, self.node)
    }

    pub fn state(&self) -> PowerState {
        if let Some(lock) = &self.lock
            && matches!(lock.as_str(), "clone" | "create" | "destroyed" | "disk")
        {
            return PowerState::Provisioning;
        }
        match self.status.as_deref() {
            Some("running") => PowerState::Running,
            Some("stopped") => PowerState::Stopped,
            Some("paused" | "suspended") => PowerState::Paused,
            _ => PowerState::Unknown,
        }
    }

    pub fn to_instance(&self, ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> Instance {
        Instance {
            instance_id: self.owner.clone(),
            backend_id: self.vmid.to_string(),
            kind: self.kind(),
            node: Some(self.node.clone()).filter(|n| !n.is_empty()),
            name: self.name.clone(),
            state: self.state(),
            ipv4,
            ipv6,
            cores: self.cores,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            ssh_port: None,
            root_password: None,
            login_user: None,
            pool: self.pool.clone(),
        }
    }
}

/// Bytes to GiB, rounded to the nearest whole GiB (disks are sized in whole GiB).
pub(crate) fn to_gib(bytes: u64) -> u64 {
    (bytes + GIB / 2) / GIB
}

pub(crate) const fn gib(n: u64) -> u64 {
    n.saturating_mul(GIB)
}

pub(crate) const fn mib(n: u64) -> u64 {
    n.saturating_mul(MIB)
}
