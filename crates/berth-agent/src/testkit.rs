//! For the crate's own tests: a real control plane (SQLite, loopback), the Proxmox VE emulator
//! and an enrolled agent whose internals a test can drive step by step (claim, take, reconcile)
//! instead of racing a whole process.

use std::sync::Arc;
use std::time::Duration;

use berth_api::client::{Auth, Client};
use berth_api::wire::{Accepted, Claimed, CreateOrder, OfferingSpec, OperationView};
use berth_core::Provider;
use berth_proxmox::{ProxmoxConfig, ProxmoxProvider};
use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, GuestSnapshot, Timings};

use crate::agent::{Agent, Backend};
use crate::config::AgentSettings;
use crate::journal::Entry;
use crate::lease::Lease;

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kit";

pub fn proxmox(emu: &EmulatorHandle, node: &str) -> Arc<dyn Provider> {
    let mut c = ProxmoxConfig::new(&emu.base_url(), &emu.token_id(), node, 9000, "local-lvm");
    c.api_token_secret = Some(berth_core::Secret::new(emu.token_secret()));
    c.tls_fingerprint = emu.fingerprint();
    c.pool = Some("berth".into());
    c.poll_interval_ms = 20;
    Arc::new(ProxmoxProvider::new(c).expect("provider builds"))
}

pub struct Kit {
    pub emu: EmulatorHandle,
    pub dir: tempfile::TempDir,
    _server: berth_server::Running,
    pub provider: Client,
    pub customer: Client,
    pub agent: Arc<Agent>,
}

impl Kit {
    /// The stack with one backend, `proxmox` on pve1 (or what `backend` makes of the
    /// emulator), leases of 6 s, and the agent's settings as `tune` leaves them.
    pub async fn start(
        timings: Timings,
        backend: impl FnOnce(&EmulatorHandle) -> Arc<dyn Provider>,
        tune: impl FnOnce(&mut AgentSettings),
    ) -> Kit {
        let emu = Emulator::start(EmulatorConfig {
            timings,
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator starts");
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "listen = \"127.0.0.1:0\"\n[database]\nsqlite = \"{}\"\n[agents]\nlease_ttl_seconds = 6\n",
            dir.path().join("berth.db").display()
        );
        let cfg = berth_server::ServerConfig::parse(&toml, "server.toml").unwrap();
        let store = berth_server::open_store(&cfg).await.unwrap();
        let token_file = dir.path().join("operator.token");
        berth_server::bootstrap_operator(&*store, &token_file).await.unwrap();
        let server = berth_server::start(cfg, store).await.unwrap();
        let url = format!("http://{}", server.addr);
        let operator = Client::new(
            &url,
            Auth::Bearer(std::fs::read_to_string(&token_file).unwrap().trim().into()),
        );
        let p = operator.create_provider("acme").await.unwrap();
        let provider = Client::new(&url, Auth::Bearer(p.token.clone()));
        let customer = Client::new(&url, Auth::Bearer(operator.create_customer("bob").await.unwrap().token));

        let mut settings = AgentSettings::with_defaults(&url, &dir.path().join("state"));
        tune(&mut settings);
        let token = provider.create_enrollment_token(&p.id, None).await.unwrap();
        crate::identity::enroll(&settings, &token.token, Some("kit"))
            .await
            .unwrap();
        let (client, enrollment) = crate::identity::signed_client(&settings).unwrap();
        let b = Backend::new("proxmox", backend(&emu), settings.agent.concurrency);
        let agent = Agent::new(client, enrollment.agent_id, settings, vec![b]).unwrap();
        // Orders are admitted against the agent's heartbeat.
        agent.client.heartbeat(&agent.heartbeat_once().await).await.unwrap();
        Kit {
            emu,
            dir,
            _server: server,
            provider,
            customer,
            agent,
        }
    }

    pub async fn offering(&self, commands: &[&str]) -> String {
        let spec = OfferingSpec {
            name: "small".into(),
            cores: 2,
            memory_mib: 2048,
            disk_gib: 20,
            bandwidth_mbps: None,
            template: None,
            price: None,
            region: None,
            labels: Default::default(),
            post_provision_commands: commands.iter().map(|s| s.to_string()).collect(),
        };
        self.provider.create_offering(&spec).await.unwrap().id
    }

    pub async fn order(&self, offering: &str, name: &str) -> Accepted {
        let requester = age::x25519::Identity::generate().to_public().to_string();
        self.customer
            .create_order(
                &CreateOrder {
                    offering_id: offering.into(),
                    name: name.into(),
                    ssh_public_key: KEY.into(),
                    requester_public_key: Some(requester),
                    skip_post_provision: false,
                    provision: true,
                },
                None,
            )
            .await
            .unwrap()
    }

    /// Claims the queued work, as the agent's claim loop does.
    pub async fn claim(&self) -> (Claimed, Arc<Lease>) {
        let c = self
            .agent
            .client
            .claim(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("work is queued");
        let lease = Lease::granted(
            self.agent.client.clone(),
            &c.operation_id,
            c.generation,
            c.lease_ttl_ms,
            c.lease_expires_at,
        );
        (c, lease)
    }

    /// Journals an entry for claimed work, on `backend`, as `tweak` leaves it (what an earlier
    /// task of this agent left behind).
    pub fn journal(&self, c: &Claimed, backend: &str, tweak: impl FnOnce(&mut Entry)) {
        let mut e = Entry::new(
            &c.operation_id,
            &c.instance_id,
            &c.kind,
            c.generation,
            c.payload.clone(),
        );
        e.backend = backend.into();
        tweak(&mut e);
        self.agent.journal.save(&e).unwrap();
    }

    /// Claims the queued work and runs it to its end.
    pub async fn run_next(&self) -> OperationView {
        let (c, lease) = self.claim().await;
        let op = c.operation_id.clone();
        self.agent.take(c, lease).await;
        self.customer.operation(&op).await.unwrap()
    }

    /// Berth-owned guests in the emulator.
    pub fn owned(&self) -> Vec<GuestSnapshot> {
        self.emu
            .guests()
            .into_iter()
            .filter(|g| !g.template && g.tags.iter().any(|t| t.starts_with("berth")))
            .collect()
    }
}

/// A backend whose `describe` fails (`Unavailable`, retryable) the next `describe_faults`
/// times, and which counts its deletes; the rest is the wrapped backend.
pub struct Flaky {
    pub inner: Arc<dyn Provider>,
    pub describe_faults: std::sync::atomic::AtomicU32,
    pub deletes: std::sync::atomic::AtomicU32,
}

impl Flaky {
    pub fn new(inner: Arc<dyn Provider>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            describe_faults: 0.into(),
            deletes: 0.into(),
        })
    }
}

#[async_trait::async_trait]
impl Provider for Flaky {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn validate(&self) -> Vec<berth_core::Check> {
        self.inner.validate().await
    }
    async fn capabilities(&self) -> Result<berth_core::Capabilities, berth_core::ProviderError> {
        self.inner.capabilities().await
    }
    async fn create(
        &self,
        spec: &berth_core::VmSpec,
        progress: &dyn berth_core::ProgressSink,
    ) -> Result<berth_core::Instance, berth_core::ProviderError> {
        self.inner.create(spec, progress).await
    }
    async fn describe(&self, id: &berth_core::InstanceRef) -> Result<berth_core::Instance, berth_core::ProviderError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .describe_faults
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(berth_core::ProviderError::Unavailable {
                message: "injected: the backend is briefly away".into(),
            });
        }
        self.inner.describe(id).await
    }
    async fn list(
        &self,
        filter: berth_core::ListFilter,
    ) -> Result<Vec<berth_core::Instance>, berth_core::ProviderError> {
        self.inner.list(filter).await
    }
    async fn power(
        &self,
        id: &berth_core::InstanceRef,
        op: berth_core::PowerOp,
    ) -> Result<berth_core::Instance, berth_core::ProviderError> {
        self.inner.power(id, op).await
    }
    async fn reconfigure(
        &self,
        id: &berth_core::InstanceRef,
        change: &berth_core::Resize,
    ) -> Result<berth_core::ReconfigureOutcome, berth_core::ProviderError> {
        self.inner.reconfigure(id, change).await
    }
    async fn delete(
        &self,
        id: &berth_core::InstanceRef,
    ) -> Result<berth_core::DeleteOutcome, berth_core::ProviderError> {
        self.deletes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.delete(id).await
    }
    async fn list_templates(&self) -> Result<Vec<berth_core::Template>, berth_core::ProviderError> {
        self.inner.list_templates().await
    }
    async fn capacity(&self) -> Result<berth_core::Capacity, berth_core::ProviderError> {
        self.inner.capacity().await
    }
    async fn exec(
        &self,
        id: &berth_core::InstanceRef,
        command: &str,
        timeout: Duration,
    ) -> Result<berth_core::ExecOutput, berth_core::ProviderError> {
        self.inner.exec(id, command, timeout).await
    }
}
