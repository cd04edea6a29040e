//! `ProxmoxProvider`: Berth's `Provider` contract on top of the PVE client, for VMs (clone of a
//! cloud-init template) and LXC containers. The work is split by concern into the modules below;
//! this file holds the provider value and the trait wiring.

mod create;
mod create_ct;
mod create_vm;
mod dispatch;
mod doctor;
mod exec;
mod guest;
mod inventory;
mod manage;
mod marker;
pub use marker::control_plane_owner;
mod migrate;
mod network;
mod pool;
mod power;
mod preflight;
mod pve_params;
mod snapshot;
mod stages;
mod steps;
mod vmid;

use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, DeleteOutcome, ExecOutput, Instance, InstanceId, InstanceRef, ListFilter, PoolMark,
    PoolMode, PowerOp, ProgressSink, Provider, ProviderError, ReconfigureOutcome, Resize, Template, VmSpec,
};

use crate::client::{ClientOptions, PveClient, RetryPolicy, TlsOptions};
use crate::config::{ConfigError, ProxmoxConfig};
use berth_tls::{parse_fingerprints, parse_pem_certs};

use stages::Stages;

/// The Proxmox VE backend.
#[derive(Debug, Clone)]
pub struct ProxmoxProvider {
    client: PveClient,
    config: ProxmoxConfig,
}

impl ProxmoxProvider {
    /// Validates the configuration and builds the HTTP client (TLS per config). Requires
    /// `api_token_secret` to be resolved already.
    pub fn new(config: ProxmoxConfig) -> Result<ProxmoxProvider, ConfigError> {
        config.validate()?;
        let secret = config
            .api_token_secret
            .clone()
            .ok_or_else(|| ConfigError::new("api_token_secret", "missing: the API token secret must be set"))?;
        let mut opts = ClientOptions::new(&config.api_url, &config.api_token_id, secret);
        opts.tls = tls_options(&config)?;
        opts.poll_interval = Duration::from_millis(config.poll_interval_ms);
        opts.retry = RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(config.poll_interval_ms.min(1000)),
            max: Duration::from_millis(config.poll_interval_ms.saturating_mul(8).min(15_000)),
        };
        let client = PveClient::new(opts).map_err(|e| ConfigError::new(tls_key(&config), e.to_string()))?;
        Ok(ProxmoxProvider { client, config })
    }

    /// The underlying API client.
    pub fn client(&self) -> &PveClient {
        &self.client
    }

    pub fn config(&self) -> &ProxmoxConfig {
        &self.config
    }

    fn task_timeout(&self) -> Duration {
        Duration::from_secs(self.config.task_timeout_secs)
    }

    fn clone_timeout(&self) -> Duration {
        Duration::from_secs(self.config.clone_timeout_secs)
    }

    fn network_timeout(&self) -> Duration {
        Duration::from_secs(self.config.network_timeout_secs)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.config.poll_interval_ms)
    }
}

fn tls_key(config: &ProxmoxConfig) -> &'static str {
    if config.tls_fingerprint.is_some() {
        "tls_fingerprint"
    } else if config.ca_file.is_some() {
        "ca_file"
    } else {
        "api_url"
    }
}

/// Proxmox signs its certificates with its own cluster CA.
pub(crate) const PVE_TRUST_HINT: &str = "Proxmox uses its own cluster CA: set ca_file to a copy of /etc/pve/pve-root-ca.pem or \
     pin tls_fingerprint (shown by `pvenode cert info`)";

fn tls_options(config: &ProxmoxConfig) -> Result<TlsOptions, ConfigError> {
    let mut tls = TlsOptions {
        insecure: !config.verify_ssl,
        server: "the Proxmox API",
        trust_hint: PVE_TRUST_HINT,
        ..TlsOptions::default()
    };
    if let Some(fp) = &config.tls_fingerprint {
        tls.fingerprints = parse_fingerprints(fp).map_err(|m| ConfigError::new("tls_fingerprint", m))?;
        tls.insecure = false;
    }
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| ConfigError::new("ca_file", format!("cannot read {}: {e}", path.display())))?;
        tls.ca_certs =
            parse_pem_certs(&pem).map_err(|m| ConfigError::new("ca_file", format!("{}: {m}", path.display())))?;
        tls.insecure = false;
    }
    Ok(tls)
}

#[async_trait]
impl Provider for ProxmoxProvider {
    fn backend(&self) -> &'static str {
        "proxmox"
    }

    async fn validate(&self) -> Vec<Check> {
        self.doctor().await
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        self.read_capabilities().await
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        spec.validate()?;
        let mut inst = self.create_guest(spec, &Stages::new(progress), None).await?;
        // Who cloud-init made (a container's keys are root's).
        inst.login_user = Some(match spec.kind {
            berth_core::GuestKind::Container => "root".into(),
            berth_core::GuestKind::Vm => spec.user.clone().unwrap_or_else(|| self.config.ci_user.clone()),
        });
        Ok(inst)
    }

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError> {
        self.describe_ref(id).await
    }

    async fn fill(
        &self,
        spec: &VmSpec,
        mark: &PoolMark,
        mode: PoolMode,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        self.fill_guest(spec, mark, mode, &Stages::new(progress)).await
    }

    async fn take(
        &self,
        from: &InstanceId,
        mark: &PoolMark,
        mode: PoolMode,
        spec: &VmSpec,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        self.take_guest(from, mark, mode, spec, &Stages::new(progress)).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        self.list_guests(filter).await
    }

    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        self.power_ref(id, op).await
    }

    async fn reconfigure(&self, id: &InstanceRef, change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        self.reconfigure_ref(id, change).await
    }

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        self.delete_ref(id).await
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        self.templates().await
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        self.node_capacity().await
    }

    async fn exec(&self, id: &InstanceRef, command: &str, timeout: Duration) -> Result<ExecOutput, ProviderError> {
        self.exec_ref(id, command, timeout).await
    }

    async fn snapshots(&self, id: &InstanceRef) -> Result<Vec<berth_core::Snapshot>, ProviderError> {
        self.snapshots_ref(id).await
    }

    async fn snapshot(
        &self,
        id: &InstanceRef,
        name: &str,
        description: &str,
        vmstate: bool,
    ) -> Result<berth_core::Snapshot, ProviderError> {
        self.snapshot_ref(id, name, description, vmstate).await
    }

    async fn rollback(&self, id: &InstanceRef, name: &str, start: bool) -> Result<Instance, ProviderError> {
        self.rollback_ref(id, name, start).await
    }

    async fn delete_snapshot(&self, id: &InstanceRef, name: &str) -> Result<DeleteOutcome, ProviderError> {
        self.delete_snapshot_ref(id, name).await
    }

    async fn migrate(&self, id: &InstanceRef, to: &str, online: bool) -> Result<Instance, ProviderError> {
        self.migrate_ref(id, to, online).await
    }
}
