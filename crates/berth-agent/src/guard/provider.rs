//! The guarded backend is a backend: every call but `validate` goes through the bucket and the
//! breaker.

use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, DeleteOutcome, ExecOutput, Instance, InstanceId, InstanceRef, ListFilter, PoolMark,
    PoolMode, PowerOp, ProgressSink, Provider, ProviderError, ReconfigureOutcome, Resize, Snapshot, Template, VmSpec,
};

use super::{Guarded, exec_fault};

#[async_trait]
impl Provider for Guarded {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// A diagnostic: straight to the backend, past the breaker and the bucket.
    async fn validate(&self) -> Vec<Check> {
        self.inner.validate().await
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        self.call("capabilities", |p| p.capabilities()).await
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        self.call("create", |p| p.create(spec, progress)).await
    }

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError> {
        self.call("describe", |p| p.describe(id)).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        self.call("list", |p| p.list(filter)).await
    }

    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        self.call("power", |p| p.power(id, op)).await
    }

    async fn reconfigure(&self, id: &InstanceRef, change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        self.call("reconfigure", |p| p.reconfigure(id, change)).await
    }

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        self.call("delete", |p| p.delete(id)).await
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        self.call("list_templates", |p| p.list_templates()).await
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        self.call("capacity", |p| p.capacity()).await
    }

    /// A `Timeout` here is the guest's (a slow command, a guest agent still booting), not the
    /// backend's: it does not count toward opening the circuit.
    async fn exec(&self, id: &InstanceRef, command: &str, timeout: Duration) -> Result<ExecOutput, ProviderError> {
        self.call_with("exec", exec_fault, |p| p.exec(id, command, timeout))
            .await
    }

    async fn snapshots(&self, id: &InstanceRef) -> Result<Vec<Snapshot>, ProviderError> {
        self.call("snapshots", |p| p.snapshots(id)).await
    }

    async fn snapshot(
        &self,
        id: &InstanceRef,
        name: &str,
        description: &str,
        vmstate: bool,
    ) -> Result<Snapshot, ProviderError> {
        self.call("snapshot", |p| p.snapshot(id, name, description, vmstate))
            .await
    }

    async fn rollback(&self, id: &InstanceRef, name: &str, start: bool) -> Result<Instance, ProviderError> {
        self.call("rollback", |p| p.rollback(id, name, start)).await
    }

    async fn delete_snapshot(&self, id: &InstanceRef, name: &str) -> Result<DeleteOutcome, ProviderError> {
        self.call("delete_snapshot", |p| p.delete_snapshot(id, name)).await
    }

    async fn migrate(&self, id: &InstanceRef, to: &str, online: bool) -> Result<Instance, ProviderError> {
        self.call("migrate", |p| p.migrate(id, to, online)).await
    }

    async fn fill(
        &self,
        spec: &VmSpec,
        mark: &PoolMark,
        mode: PoolMode,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        self.call("fill", |p| p.fill(spec, mark, mode, progress)).await
    }

    async fn take(
        &self,
        from: &InstanceId,
        mark: &PoolMark,
        mode: PoolMode,
        spec: &VmSpec,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        self.call("take", |p| p.take(from, mark, mode, spec, progress)).await
    }
}
