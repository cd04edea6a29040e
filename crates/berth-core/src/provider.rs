//! The Provider contract: what every backend (Proxmox, libvirt, script, manual, Multipass)
//! implements, and what the agent, the CLI and the declarative planner drive.
//!
//! Rules every implementation keeps (the conformance suite checks them):
//! - `create` is idempotent by `spec.instance_id`: the backend stores that id in an ownership
//!   marker and, before making anything, looks it up and resumes or returns the existing machine.
//!   Cancelling `create` at any await point (a crash) and calling it again finishes the job with
//!   exactly one machine. If a later step fails, `create` removes what it made.
//! - `delete` of something absent is `Ok(AlreadyAbsent)`. Mutating calls act only on machines
//!   that carry Berth's marker; others are a `Conflict`.
//! - A transient backend failure is never reported as `NotFound`.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::ProviderError;
use crate::ids::{InstanceId, InstanceRef};
use crate::instance::{
    Capabilities, Capacity, Check, DeleteOutcome, ExecOutput, Instance, PowerOp, ReconfigureOutcome, Snapshot, Template,
};
use crate::pool::{PoolMark, PoolMode};
use crate::spec::{GuestKind, Resize, VmSpec};
use crate::stage::ProgressSink;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListFilter {
    /// Include machines without Berth's ownership marker.
    pub all: bool,
    /// Only this kind; `None` lists every kind.
    pub kind: Option<GuestKind>,
    /// Leave out what costs the backend a request per machine (the guests' current addresses):
    /// for counting what the machines take.
    pub without_addresses: bool,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Short backend name (`proxmox`, `libvirt`, ...).
    fn backend(&self) -> &'static str;

    /// Credentials, reachability, permissions and prerequisites, one `Check` per thing checked.
    async fn validate(&self) -> Vec<Check>;

    async fn capabilities(&self) -> Result<Capabilities, ProviderError>;

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError>;

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError>;

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError>;

    /// Performs the operation and returns the machine as it is afterwards. Idempotent: starting
    /// a running machine or stopping a stopped one succeeds.
    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError>;

    async fn reconfigure(&self, id: &InstanceRef, change: &Resize) -> Result<ReconfigureOutcome, ProviderError>;

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError>;

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError>;

    async fn capacity(&self) -> Result<Capacity, ProviderError>;

    /// Runs `command` with `/bin/sh -c` inside the guest (through the guest agent where the
    /// backend has one) and waits up to `timeout` for it to exit. Backends without a channel
    /// into the guest answer `Unsupported`.
    ///
    /// Like every mutating call it acts only on machines carrying Berth's marker (`Conflict`
    /// otherwise). Waiting for the channel to come up (a guest agent still booting) counts
    /// against `timeout`; a command still running when it runs out is a `Timeout` naming the
    /// command (the command itself may go on running in the guest). A command that runs and
    /// fails is not an error: its status is in the `ExecOutput`.
    async fn exec(&self, id: &InstanceRef, command: &str, timeout: Duration) -> Result<ExecOutput, ProviderError> {
        let _ = (id, command, timeout);
        Err(ProviderError::unsupported(format!(
            "running commands inside the guest on the {} backend",
            self.backend()
        )))
    }

    /// The machine's snapshots, oldest first. Backends without snapshots answer `Unsupported`,
    /// as do the three calls below.
    async fn snapshots(&self, id: &InstanceRef) -> Result<Vec<Snapshot>, ProviderError> {
        let _ = id;
        Err(no_snapshots(self.backend()))
    }

    /// Takes snapshot `name` (with `vmstate`, of a running machine's memory too). A name the
    /// machine already has is a `Conflict`; one the backend's format refuses, `InvalidSpec`
    /// naming `name`. Berth's machines only.
    async fn snapshot(
        &self,
        id: &InstanceRef,
        name: &str,
        description: &str,
        vmstate: bool,
    ) -> Result<Snapshot, ProviderError> {
        let _ = (id, name, description, vmstate);
        Err(no_snapshots(self.backend()))
    }

    /// Puts the machine back to snapshot `name`: its disks and config as they were (writes since
    /// are lost). It runs afterwards when the snapshot holds its memory, or when `start`.
    async fn rollback(&self, id: &InstanceRef, name: &str, start: bool) -> Result<Instance, ProviderError> {
        let _ = (id, name, start);
        Err(no_snapshots(self.backend()))
    }

    /// Deletes snapshot `name`; one that is not there is `AlreadyAbsent`.
    async fn delete_snapshot(&self, id: &InstanceRef, name: &str) -> Result<DeleteOutcome, ProviderError> {
        let _ = (id, name);
        Err(no_snapshots(self.backend()))
    }

    /// Makes a pool machine for `mark`'s pool: `spec` (its own `pool-…` id and name, no SSH
    /// keys) cloned and configured with the pool mark on its marker, left stopped
    /// ([`PoolMode::Stopped`]: never booted) or started and reachable through its guest agent
    /// ([`PoolMode::Running`]). Idempotent by `spec.instance_id` like `create`, and like it
    /// removes what it made when a later step fails. Backends without pools answer `Unsupported`.
    async fn fill(
        &self,
        spec: &VmSpec,
        mark: &PoolMark,
        mode: PoolMode,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        let _ = (spec, mark, mode, progress);
        Err(no_pools(self.backend()))
    }

    /// Hands pool machine `from` (carrying `mark`) over to `spec.instance_id`: the marker moves
    /// from the pool machine to the instance in one step (the commit point; the machine leaves
    /// the pool), then the order's name, keys and network are put in (in `mode`: for a stopped
    /// machine as cloud-init data, and it is started; for a running one through the guest
    /// agent), the disk grows to `spec.disk_gib`, and the instance is returned as `create`
    /// returns it. Idempotent by `spec.instance_id`: when the instance's machine exists, the
    /// personalisation is finished on it. `NotFound` when `from` is no longer in the pool with
    /// `mark` (taken by someone else, drained): nothing was changed, a normal create follows. A
    /// failure after the commit point is the instance's, as in `create`.
    async fn take(
        &self,
        from: &InstanceId,
        mark: &PoolMark,
        mode: PoolMode,
        spec: &VmSpec,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        let _ = (from, mark, mode, spec, progress);
        Err(no_pools(self.backend()))
    }

    /// Moves the machine to node `to` of the backend's cluster, disks on local storage along.
    /// A running machine moves only with `online` (a VM live, a container restarted). Backends
    /// without nodes answer `Unsupported`.
    async fn migrate(&self, id: &InstanceRef, to: &str, online: bool) -> Result<Instance, ProviderError> {
        let _ = (id, to, online);
        Err(ProviderError::unsupported(format!(
            "migration between nodes on the {} backend",
            self.backend()
        )))
    }
}

fn no_pools(backend: &str) -> ProviderError {
    ProviderError::unsupported(format!("warm pools on the {backend} backend"))
}

fn no_snapshots(backend: &str) -> ProviderError {
    ProviderError::unsupported(format!("snapshots on the {backend} backend"))
}
