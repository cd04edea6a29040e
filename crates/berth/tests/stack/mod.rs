//! The whole stack for end-to-end tests: the Proxmox VE emulator (in this process), the control
//! plane (in this process, on SQLite or PostgreSQL, restartable on the same port) and the agent
//! as a real `berth agent` process, enrolled with `berth agent enroll`, that the tests can kill.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_api::client::{Auth, Client};
use berth_api::wire::*;
use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, GuestSnapshot, Timings};
use berth_store::testpg::Postgres;

use crate::common::{KEY, berth, config_text};

pub const AGE_ID: &str = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";

#[derive(Default)]
pub struct Tokens {
    pub operator: String,
    pub provider: String,
    pub customer: String,
}

pub enum Db {
    Sqlite,
    Postgres,
}

pub struct Stack {
    pub emu: EmulatorHandle,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub url: String,
    server_toml: String,
    server: Option<berth_server::Running>,
    _pg: Option<Postgres>,
    pub operator: Client,
    pub provider: Client,
    pub provider_id: String,
    pub customer: Client,
    /// The API tokens behind the clients (the dashboard tests sign in with them).
    pub tokens: Tokens,
    pub agent_toml: PathBuf,
    agent: Option<Child>,
}

/// Slow enough that a test can kill the agent inside each stage.
pub fn paced() -> Timings {
    let ms = Duration::from_millis;
    Timings {
        clone: ms(900),
        start: ms(700),
        resize: ms(500),
        agent_ready: ms(900),
        ..Timings::fast()
    }
}

/// `berth ARGS…` to its end, off the async threads.
pub async fn run_berth(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || berth().args(args).output().unwrap())
        .await
        .unwrap()
}

pub fn age_public() -> String {
    use std::str::FromStr as _;
    age::x25519::Identity::from_str(AGE_ID).unwrap().to_public().to_string()
}

impl Stack {
    /// `None` when the database is PostgreSQL and none can be started here.
    pub async fn start(db: Db, timings: Timings, agent_extra: &str) -> Option<Stack> {
        Stack::start_with_backend(db, timings, None, agent_extra).await
    }

    /// As `start`, with another backend's `[provisioner]` text instead of the emulator's.
    pub async fn start_with_backend(
        db: Db,
        timings: Timings,
        backend: Option<String>,
        agent_extra: &str,
    ) -> Option<Stack> {
        let provisioner = move |emu: &EmulatorHandle| backend.unwrap_or_else(|| config_text(emu, &emu.token_secret()));
        Stack::start_with(db, timings, provisioner, agent_extra).await
    }

    /// A running stack whose agent drives a manual backend (answers polled every 100 ms) with
    /// room for anything.
    pub async fn manual(db: Db, timings: Timings) -> Option<Stack> {
        let backend = "[provisioner]\ntype = \"manual\"\n\n[provisioner.manual]\npoll_interval_ms = 100\n".to_owned();
        let extra = "[polling]\nheartbeat_interval_seconds = 1\n[capacity]\ncores = 64\nmemory_mib = 262144\ndisk_gib = 10000\n";
        let mut s = Stack::start_with_backend(db, timings, Some(backend), extra).await?;
        s.spawn_agent();
        s.wait_agent_alive().await;
        Some(s)
    }

    /// As `start`, with the `[provisioner]` text made from the emulator (its URL, token, pin).
    pub async fn start_with(
        db: Db,
        timings: Timings,
        provisioner: impl FnOnce(&EmulatorHandle) -> String,
        agent_extra: &str,
    ) -> Option<Stack> {
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(Postgres::start()?),
        };
        let emu = Emulator::start(EmulatorConfig {
            timings,
            schema_path: EmulatorConfig::default_schema_path(),
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator starts");
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("http://{addr}");
        let database = match &pg {
            Some(pg) => format!("postgres = \"{}\"", pg.url),
            None => format!("sqlite = \"{}\"", dir.path().join("berth.db").display()),
        };
        let server_toml = format!(
            "listen = \"{addr}\"\n[database]\n{database}\n[agents]\nlease_ttl_seconds = 6\nheartbeat_ttl_seconds = 30\nmax_claim_wait_seconds = 30\n"
        );
        let mut s = Stack {
            emu,
            addr,
            url: url.clone(),
            server_toml,
            server: None,
            _pg: pg,
            operator: Client::new(&url, Auth::None),
            provider: Client::new(&url, Auth::None),
            provider_id: String::new(),
            customer: Client::new(&url, Auth::None),
            tokens: Tokens::default(),
            agent_toml: dir.path().join("agent/berth.toml"),
            dir,
            agent: None,
        };
        s.start_server().await;
        let token_file = s.dir.path().join("operator.token");
        s.tokens.operator = std::fs::read_to_string(&token_file).unwrap().trim().into();
        s.operator = Client::new(&url, Auth::Bearer(s.tokens.operator.clone()));
        let p = s.operator.create_provider("acme").await.unwrap();
        s.provider = Client::new(&url, Auth::Bearer(p.token.clone()));
        s.tokens.provider = p.token.clone();
        s.provider_id = p.id;
        let c = s.operator.create_customer("alice").await.unwrap();
        s.customer = Client::new(&url, Auth::Bearer(c.token.clone()));
        s.tokens.customer = c.token.clone();

        std::fs::create_dir_all(s.dir.path().join("agent")).unwrap();
        // Test agents run side by side: none takes the default metrics port unless a test
        // names an address of its own.
        let metrics = if agent_extra.contains("metrics_listen") {
            ""
        } else {
            "metrics_listen = \"off\"\n"
        };
        let toml = format!(
            "{backend}\n[api]\nendpoint = \"{url}\"\n\n[agent]\nstate_dir = \"state\"\n{metrics}{agent_extra}\n",
            backend = provisioner(&s.emu),
        );
        std::fs::write(&s.agent_toml, toml).unwrap();
        let token = s.provider.create_enrollment_token(&s.provider_id, None).await.unwrap();
        let mut enroll = berth();
        enroll
            .args(["agent", "enroll", "--name", "e2e", "--config"])
            .arg(&s.agent_toml)
            .env("BERTH_SETUP_TOKEN", &token.token);
        let out = tokio::task::spawn_blocking(move || enroll.output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
        Some(s)
    }

    pub async fn start_server(&mut self) {
        let cfg = berth_server::ServerConfig::parse(&self.server_toml, "server.toml").unwrap();
        let store = berth_server::open_store(&cfg).await.unwrap();
        berth_server::bootstrap_operator(&*store, &self.dir.path().join("operator.token"))
            .await
            .unwrap();
        // The port may linger briefly after a stop.
        let started = Instant::now();
        loop {
            match berth_server::start_app(cfg.clone(), store.clone(), berth_web::app).await {
                Ok(r) => {
                    self.server = Some(r);
                    return;
                }
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    eprintln!("server start: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("server does not start: {e}"),
            }
        }
    }

    /// Stops the control plane abruptly (its task is aborted: connections drop mid-request).
    pub async fn kill_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.task.abort();
            let _ = s.task.await;
        }
    }

    /// Enrolls another agent of the same provider, with its own state directory, and returns its
    /// configuration file.
    pub async fn enroll_another(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("berth.toml");
        std::fs::copy(&self.agent_toml, &toml).unwrap();
        let token = self
            .provider
            .create_enrollment_token(&self.provider_id, None)
            .await
            .unwrap();
        let mut enroll = berth();
        enroll
            .args(["agent", "enroll", "--name", name, "--config"])
            .arg(&toml)
            .env("BERTH_SETUP_TOKEN", &token.token);
        let out = tokio::task::spawn_blocking(move || enroll.output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
        toml
    }

    /// Runs the agent of `toml` (from [`Stack::enroll_another`]) until the returned guard drops.
    pub fn spawn_other(&self, toml: &std::path::Path) -> OtherAgent {
        self.spawn_other_with(toml, &[])
    }

    /// As `spawn_other`, with more environment (a failpoint).
    pub fn spawn_other_with(&self, toml: &std::path::Path, env: &[(&str, &str)]) -> OtherAgent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(toml.with_file_name("agent.log"))
            .unwrap();
        let mut c = berth();
        c.args(["agent", "--config"])
            .arg(toml)
            .env("BERTH_LOG", "info,berth_agent=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        OtherAgent(c.spawn().unwrap())
    }

    /// How the agent process ended, once it has.
    pub fn agent_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.agent.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn spawn_agent(&mut self) {
        self.spawn_agent_with(&[]);
    }

    pub fn spawn_agent_with(&mut self, env: &[(&str, &str)]) {
        assert!(self.agent.is_none(), "one agent at a time");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let mut c = berth();
        c.args(["agent", "--config"])
            .arg(&self.agent_toml)
            .env("BERTH_LOG", "info,berth_agent=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        self.agent = Some(c.spawn().unwrap());
    }

    /// Sends `signal` to the agent process (SIGSTOP / SIGCONT to freeze it past its lease).
    pub fn signal_agent(&self, signal: rustix::process::Signal) {
        let c = self.agent.as_ref().expect("an agent runs");
        rustix::process::kill_process(rustix::process::Pid::from_raw(c.id() as i32).unwrap(), signal).unwrap();
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, and the exit status once it exits.
    pub async fn term_agent(&mut self) -> std::process::ExitStatus {
        let mut c = self.agent.take().expect("an agent runs");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(c.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        tokio::task::spawn_blocking(move || c.wait().unwrap()).await.unwrap()
    }

    /// Waits for the agent process to exit on its own (a failpoint).
    pub async fn agent_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.agent.take().expect("an agent runs");
        tokio::task::spawn_blocking(move || c.wait().unwrap()).await.unwrap()
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits until the agent's heartbeat reached the control plane (it can take orders).
    pub async fn wait_agent_alive(&self) {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if self.provider.agents().await.unwrap().iter().any(|a| a.alive) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no heartbeat from the agent; log:\n{}", self.agent_log());
    }

    /// Pool `name` as the agent's latest heartbeat reports it, if that came after `since` (ms
    /// since the epoch).
    pub async fn pool_report(&self, name: &str, since: i64) -> Option<berth_api::wire::PoolReport> {
        let agents = self.provider.agents().await.ok()?;
        agents
            .iter()
            .filter(|a| a.last_seen.is_some_and(|t| t > since))
            .filter_map(|a| a.heartbeat.as_ref())
            .flat_map(|h| h.pools.iter())
            .find(|p| p.name == name)
            .cloned()
    }

    pub async fn offering(&self, commands: &[&str]) -> String {
        // Names are unique among a provider's offerings on sale.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spec = OfferingSpec {
            name: if n == 0 { "small".into() } else { format!("small-{n}") },
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
        let r = self
            .customer
            .create_order(
                &CreateOrder {
                    offering_id: offering.into(),
                    name: name.into(),
                    ssh_public_key: KEY.into(),
                    requester_public_key: Some(age_public()),
                    skip_post_provision: false,
                    provision: true,
                },
                None,
            )
            .await;
        match r {
            Ok(a) => a,
            Err(e) => panic!(
                "order: {e}\nagents: {:#?}\nagent log:\n{}",
                self.provider.agents().await,
                self.agent_log()
            ),
        }
    }

    /// The operation once it ended (succeeded or failed).
    pub async fn finished(&self, op: &str, within: Duration) -> OperationView {
        self.finished_as(&self.customer, op, within).await
    }

    /// As `finished`, asking as `who` (a provider's own machines are not the customer's).
    pub async fn finished_as(&self, who: &Client, op: &str, within: Duration) -> OperationView {
        let until = Instant::now() + within;
        loop {
            let v = match who.wait_operation(op, Duration::from_secs(5)).await {
                Ok(v) => v,
                Err(e) => {
                    // The control plane may be restarting.
                    eprintln!("wait {op}: {e}");
                    assert!(Instant::now() < until, "operation {op}: {e} for {within:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if v.status == "succeeded" || v.status == "failed" {
                return v;
            }
            assert!(
                Instant::now() < until,
                "operation {op} still {} after {within:?}: {v:#?}\nagent log:\n{}",
                v.status,
                self.agent_log()
            );
        }
    }

    /// Waits until `stage` of the operation has started (and not finished).
    pub async fn in_stage(&self, op: &str, stage: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.customer.operation(op).await.unwrap();
            if v.stages.iter().any(|s| s.stage == stage && s.status == "running") {
                return;
            }
            if v.stages.iter().any(|s| s.stage == stage && s.status != "running") {
                panic!("stage {stage} ended before the test saw it running: {v:#?}");
            }
            assert!(
                Instant::now() < until,
                "stage {stage} never started: {v:#?}\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Berth-owned guests in the emulator (not templates).
    pub fn owned(&self) -> Vec<GuestSnapshot> {
        self.emu
            .guests()
            .into_iter()
            .filter(|g| !g.template && g.tags.iter().any(|t| t.starts_with("berth")))
            .collect()
    }

    pub fn owned_by(&self, instance_id: &str) -> Vec<GuestSnapshot> {
        self.owned()
            .into_iter()
            .filter(|g| g.description.contains(instance_id) || g.tags.iter().any(|t| t.contains(instance_id)))
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// Another agent process, killed when dropped.
pub struct OtherAgent(Child);

impl OtherAgent {
    /// Whether it exited by itself.
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for OtherAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
