//! A faithful Proxmox VE REST API emulator (`/api2/json`) for Berth's tests and benchmarks: public API,
//! startup and the handle tests drive it with. Never part of the product.

mod actions;
mod agent;
mod api;
mod config;
mod exec;
mod faults;
mod guestcfg;
mod handlers;
mod netcfg;
mod perms;
mod propstr;
pub mod schema;
mod seed;
mod server;
mod snapshots;
mod state;
mod storagecfg;
mod tasks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::sync::watch;

pub use config::{EmulatorConfig, Timings};
pub use exec::DEFAULT_OUTPUT_LIMIT as DEFAULT_EXEC_OUTPUT_LIMIT;
pub use faults::{Fault, FaultRule};

use perms::{ALL_PRIVS, Token};
use server::Shared;
use state::World;

/// Every privilege PVE 9 knows (what the default token has on `/`).
pub const ALL_PRIVILEGES: &[&str] = ALL_PRIVS;

/// The id of the token every seeded world has (all privileges on `/`).
pub const DEFAULT_TOKEN_ID: &str = "berth@pve!agent";

/// A guest as the emulator sees it (for assertions in tests).
#[derive(Clone, Debug)]
pub struct GuestSnapshot {
    pub vmid: u32,
    pub node: String,
    /// "qemu" | "lxc"
    pub kind: String,
    pub name: String,
    /// "running" | "stopped"
    pub status: String,
    pub template: bool,
    pub lock: Option<String>,
    pub tags: Vec<String>,
    pub description: String,
    pub config: BTreeMap<String, String>,
}

/// One handled request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    /// After /api2/json, percent-decoded.
    pub path: String,
    /// Query + body, decoded (query overrides body); `cipassword`/`password` values read `**********`.
    pub params: Vec<(String, String)>,
    pub status: u16,
    /// When the request arrived and when its answer left (the added latency included).
    pub received: std::time::Instant,
    pub answered: std::time::Instant,
}

/// Starts emulators.
pub struct Emulator;

impl Emulator {
    /// Binds, generates the certificate (if TLS), seeds the world and starts serving.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
        let schema = match &config.schema_path {
            Some(p) => Some(schema::Schema::load(p).map_err(|e| anyhow::anyhow!("loading the PVE schema: {e}"))?),
            None => None,
        };
        let tls = if config.tls {
            Some(server::make_tls().context("setting up TLS")?)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let scheme = if config.tls { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");

        let node_fp = tls.as_ref().map(|t| t.fingerprint.clone()).unwrap_or_default();
        let mut world = World::new(config.timings.clone(), node_fp);
        world.pve_major = config.pve_major;
        world.exec = exec::ExecSettings {
            enabled: config.guest_exec,
            output_limit: config.exec_output_limit,
            ..Default::default()
        };
        let secret = random_secret();
        world.tokens.insert(
            DEFAULT_TOKEN_ID.to_string(),
            Token::new(
                DEFAULT_TOKEN_ID,
                &secret,
                vec![("/".to_string(), ALL_PRIVS.iter().map(|p| p.to_string()).collect())],
            ),
        );
        if config.seed {
            seed::seed(&mut world);
        }
        let shared = Arc::new(Shared::new(
            world,
            schema,
            config.old_error_envelope,
            tls.as_ref(),
            base_url,
        ));
        let (tx, rx) = watch::channel(false);
        let acceptor = tls.map(|t| t.acceptor);
        let join = tokio::spawn(server::serve(listener, acceptor, shared.clone(), rx));
        tracing::info!(url = %shared.base_url, tls = config.tls, seeded = config.seed, "PVE emulator listening");
        Ok(EmulatorHandle {
            inner: Arc::new(HandleInner {
                shared,
                shutdown: tx,
                join: Mutex::new(Some(join)),
                secret,
            }),
        })
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    join: Mutex<Option<tokio::task::JoinHandle<()>>>,
    secret: String,
}

/// Controls a running emulator; cheap to clone.
#[derive(Clone)]
pub struct EmulatorHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("base_url", &self.inner.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.inner.shared.world()
    }

    /// "https://127.0.0.1:PORT" (the client appends /api2/json).
    pub fn base_url(&self) -> String {
        self.inner.shared.base_url.clone()
    }

    /// SHA-256 of the leaf certificate's DER, uppercase colon hex (PVE style); None without TLS.
    pub fn fingerprint(&self) -> Option<String> {
        self.inner.shared.fingerprint.clone()
    }

    /// The self-signed certificate, usable as a CA file; None without TLS.
    pub fn cert_pem(&self) -> Option<String> {
        self.inner.shared.cert_pem.clone()
    }

    /// "berth@pve!agent" (all privileges on "/").
    pub fn token_id(&self) -> String {
        DEFAULT_TOKEN_ID.to_string()
    }

    pub fn token_secret(&self) -> String {
        self.inner.secret.clone()
    }

    /// Adds (or replaces) a token; `acl` is (path, privileges), privileges propagate to sub-paths.
    pub fn add_token(&self, token_id: &str, secret: &str, acl: Vec<(String, Vec<String>)>) {
        self.world()
            .tokens
            .insert(token_id.to_string(), Token::new(token_id, secret, acl));
    }

    pub fn inject(&self, rule: FaultRule) {
        self.world().faults.push(rule);
    }

    /// Removes every pending fault rule and sets the random fault rate back to 0.
    pub fn clear_faults(&self) {
        let mut w = self.world();
        w.faults.clear();
        w.fault_rate = 0.0;
    }

    /// Every answer comes this much later: a real cluster's round trip, for measuring how many
    /// requests sit on a path (zero by default).
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.world().latency = latency;
    }

    /// Makes this fraction (0.0..=1.0) of requests fail transiently: 500 lock timeouts on PUT config,
    /// 595 on GETs, task failures on clone.
    pub fn set_fault_rate(&self, rate: f64) {
        self.world().fault_rate = rate.clamp(0.0, 1.0);
    }

    /// Sets a storage's size in GiB (benchmarks that need room for many guests).
    pub fn set_storage_gib(&self, id: &str, gib: u64) {
        if let Some(st) = self.world().storages.iter_mut().find(|st| st.id == id) {
            st.total = gib * (1 << 30);
        }
    }

    /// New timings apply to operations started from now on.
    pub fn set_timings(&self, t: Timings) {
        self.world().timings = t;
    }

    /// A file in guest `vmid`'s emulated file system (what commands run through its agent wrote
    /// under `BERTH_ROOT`); `None` when absent.
    pub fn guest_file(&self, vmid: u32, path: &str) -> Option<String> {
        let root = self.world().exec.root_of(vmid);
        std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()
    }

    /// Every qemu and lxc guest, templates included.
    pub fn guests(&self) -> Vec<GuestSnapshot> {
        self.world().snapshots()
    }

    /// A running VM Berth does not own.
    pub fn add_foreign_vm(&self, node: &str, vmid: u32, name: &str) {
        seed::add_foreign_vm(&mut self.world(), node, vmid, name);
    }

    /// A running VM carrying Berth's marker for `instance_id`, made behind the agent's back.
    pub fn add_marked_vm(&self, node: &str, vmid: u32, name: &str, instance_id: &str) {
        seed::add_marked_vm(&mut self.world(), node, vmid, name, instance_id);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.world().requests.clone()
    }

    pub fn schema_loaded(&self) -> bool {
        self.inner.shared.schema.is_some()
    }

    /// Every request that failed schema validation ("METHOD /path: param: message; ...").
    pub fn schema_violations(&self) -> Vec<String> {
        self.world().violations.clone()
    }

    pub fn running_tasks(&self) -> usize {
        self.world().tasks.values().filter(|t| t.running).count()
    }

    /// Stops accepting, closes connections gracefully and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.inner.shutdown.send(true);
        let join = self.inner.join.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(j) = join {
            let _ = j.await;
        }
    }
}

fn random_secret() -> String {
    propstr::random_uuid()
}
