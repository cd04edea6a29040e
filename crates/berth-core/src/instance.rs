//! What a backend reports back: instances and their power state, templates, capacity,
//! capabilities, and the outcome types of mutating calls.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::ids::InstanceId;
use crate::secret::Secret;
use crate::spec::GuestKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Running,
    Stopped,
    Paused,
    /// Still being made (e.g. a Proxmox clone holds its lock), or being destroyed.
    Provisioning,
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Paused => "paused",
            PowerState::Provisioning => "provisioning",
            PowerState::Unknown => "unknown",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum PowerOp {
    Start,
    /// Hard stop (power off).
    Stop,
    /// Graceful shutdown; after `timeout_secs` without the guest powering off, a hard stop.
    Shutdown {
        timeout_secs: u64,
    },
    Reboot,
}

impl fmt::Display for PowerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerOp::Start => f.write_str("start"),
            PowerOp::Stop => f.write_str("stop"),
            PowerOp::Shutdown { timeout_secs } => write!(f, "shutdown (timeout {timeout_secs}s)"),
            PowerOp::Reboot => f.write_str("reboot"),
        }
    }
}

/// A machine as a backend sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Berth's id, from the ownership marker; `None` for machines Berth does not own.
    pub instance_id: Option<InstanceId>,
    /// The backend's own id (Proxmox VMID, libvirt domain name, ...).
    pub backend_id: String,
    pub kind: GuestKind,
    /// Hypervisor node or host the machine lives on.
    pub node: Option<String>,
    pub name: String,
    pub state: PowerState,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    /// SSH port when it is not 22 (a NAT'ed or manually provisioned machine); `None` = 22.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// The user to log in as by SSH, where the backend knows it: set by `create` (the
    /// cloud-init user it made, a container's `root`); `None` elsewhere.
    #[serde(default)]
    pub login_user: Option<String>,
    /// A password the machine was born with (script or operator supplied). Never serialized
    /// and never printed: it leaves the agent only encrypted to the requester's key.
    #[serde(skip)]
    pub root_password: Option<Secret>,
    /// The warm pool it is kept ready in, when its marker says so (see [`crate::pool`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<crate::pool::PoolMark>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// What `VmSpec::template` takes to select it.
    pub id: String,
    pub name: String,
    pub kind: GuestKind,
    pub node: Option<String>,
    pub disk_gib: Option<u64>,
    /// The image format (`qcow2`, `raw`) where the backend knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Totals and usage of the host or node a backend places machines on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    pub cpus_total: u32,
    pub memory_mib_total: u64,
    pub memory_mib_used: u64,
    pub disk_gib_total: u64,
    pub disk_gib_free: u64,
    /// Machines currently placed there (all of them, not only Berth's).
    pub instances: u32,
    /// The node these totals are of, when the backend spans several (a Proxmox cluster): only
    /// machines on it count against them. `None`: everything the backend lists is on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a backend can do, read live (a conformance suite skips what a backend cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// start / stop (and reboot / shutdown as flagged) are carried out by the backend.
    pub power: bool,
    pub vms: bool,
    pub containers: bool,
    pub graceful_shutdown: bool,
    pub reboot: bool,
    pub reconfigure: bool,
    pub static_ip: bool,
    pub ipv6: bool,
    pub list_templates: bool,
    pub capacity: bool,
    /// `fill` and `take`: warm pools, in both modes.
    #[serde(default)]
    pub pools: bool,
}

/// A snapshot of a machine: its disks and configuration, and with `vmstate` its memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    /// The snapshot it was taken on top of.
    pub parent: Option<String>,
    /// When it was taken (Unix seconds), where the backend says.
    pub taken_at: Option<u64>,
    pub description: String,
    /// The running machine's memory was saved: a rollback resumes it running.
    pub vmstate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteOutcome {
    Deleted,
    /// Nothing was there: delete is idempotent.
    AlreadyAbsent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconfigureOutcome {
    /// The change is recorded but takes effect only after the machine restarts.
    pub restart_required: bool,
}

/// What a command run inside a guest (`Provider::exec`) ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// The exit code; for a command killed by a signal, 128 + the signal number (the shell's
    /// convention).
    pub exit_status: i32,
    /// Standard output, as far as the backend captured it (invalid UTF-8 replaced).
    pub stdout: String,
    /// Standard error, likewise.
    pub stderr: String,
    /// The backend captured only part of stdout or stderr (its capture limit was reached).
    pub truncated: bool,
}

impl ExecOutput {
    /// How much of a command a message quotes.
    const SHOWN_CHARS: usize = 60;

    pub fn success(&self) -> bool {
        self.exit_status == 0
    }

    /// The exit status as Berth reports it, from a guest agent's `exitcode` and `signal`: a
    /// signal `N` as 128 + N, an NTSTATUS such as 0xC0000005 (Windows) with its bits kept.
    pub fn status_of(exitcode: Option<i64>, signal: Option<i64>) -> i32 {
        match (exitcode, signal) {
            (Some(code), _) => code as i32,
            (None, Some(sig)) => 128 + sig as i32,
            (None, None) => -1,
        }
    }

    /// The first line of `command`, cut short, for messages.
    pub fn shown(command: &str) -> String {
        let first = command.trim().lines().next().unwrap_or_default();
        let mut s: String = first.chars().take(Self::SHOWN_CHARS).collect();
        if s.len() < command.trim().len() {
            s.push('…');
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
    /// Not run: a check it depends on failed (so its answer would say nothing new, slowly).
    Skipped,
}

/// One line of `berth doctor`: what was checked and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
        }
    }
    pub fn warn(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Warn,
            detail: detail.into(),
        }
    }
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
        }
    }
    /// Not run because `because` (the check it depends on) failed.
    pub fn skipped(name: impl Into<String>, because: &str) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Skipped,
            detail: format!("not checked: the {because} check failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shortened_for_messages_and_statuses_read() {
        assert_eq!(ExecOutput::shown("  echo hi  "), "echo hi");
        assert_eq!(ExecOutput::shown("set -e\napt-get update"), "set -e…");
        let long = "x".repeat(100);
        assert_eq!(ExecOutput::shown(&long).chars().count(), ExecOutput::SHOWN_CHARS + 1);
        assert_eq!(ExecOutput::status_of(Some(3), Some(9)), 3);
        assert_eq!(ExecOutput::status_of(None, Some(9)), 137);
        assert_eq!(ExecOutput::status_of(None, None), -1);
    }

    #[test]
    fn passwords_never_leave_an_instance_in_json_or_debug() {
        let i = Instance {
            instance_id: None,
            backend_id: "vm-1".into(),
            kind: GuestKind::Vm,
            node: None,
            name: "vm-1".into(),
            state: PowerState::Running,
            ipv4: None,
            ipv6: None,
            cores: None,
            memory_mib: None,
            disk_gib: None,
            ssh_port: Some(2222),
            root_password: Some(Secret::new("hunter2-root")),
            login_user: None,
            pool: None,
        };
        let json = serde_json::to_string(&i).unwrap();
        assert!(!json.contains("hunter2") && json.contains("2222"), "{json}");
        assert!(!format!("{i:?}").contains("hunter2"));
    }

    #[test]
    fn display_honours_width_for_tables() {
        assert_eq!(format!("{:<9}|", GuestKind::Vm), "vm       |");
        assert_eq!(format!("{:<9}|", PowerState::Running), "running  |");
    }
}
