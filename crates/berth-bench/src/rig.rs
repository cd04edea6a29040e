//! The end-to-end rig of the agent benchmarks: the control plane (in this process, SQLite), the
//! PVE emulator (in this process, paced as asked) and a real `berth agent` process enrolled with
//! it, and the customer's side: offerings, orders, operations followed to their end.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_api::client::{Auth, Client};
use berth_api::wire::*;
use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Timings};

const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

/// The emulator paced like a real cluster: clone 2 s, start 1 s, guest agent up 1 s after the
/// start (a create is about 4 s).
pub fn paced() -> Timings {
    let ms = Duration::from_millis;
    Timings {
        clone: ms(2000),
        start: ms(1000),
        agent_ready: ms(1000),
        resize: ms(0),
        ..Timings::fast()
    }
}

/// Refuses to run without the binary the agent runs as.
pub fn require(berth: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        berth.exists(),
        "{} not found: build it first (cargo build --release -p berth)",
        berth.display()
    );
    Ok(())
}

pub struct Rig {
    pub emu: EmulatorHandle,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub provider: Client,
    pub provider_id: String,
    pub customer: Client,
    _server: berth_server::Running,
}

/// The agent process; killed when dropped.
pub struct AgentProcess(pub Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Rig {
    pub async fn start(timings: Timings) -> anyhow::Result<Rig> {
        let emu = Emulator::start(EmulatorConfig {
            timings,
            ..EmulatorConfig::default()
        })
        .await?;
        // Room for every guest of the run: the gate must not refuse on disk.
        emu.set_storage_gib("local-lvm", 10_000);
        let dir = tempfile::tempdir()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let url = format!("http://{addr}");
        let cfg = crate::server_config(
            &format!("listen = \"{addr}\""),
            &format!("sqlite = \"{}\"", dir.path().join("bench.db").display()),
        )?;
        let store = berth_server::open_store(&cfg).await?;
        let token_file = dir.path().join("operator.token");
        berth_server::bootstrap_operator(&*store, &token_file).await?;
        let server = berth_server::start(cfg, store).await?;
        let operator = Client::new(&url, Auth::Bearer(std::fs::read_to_string(&token_file)?.trim().into()));
        let p = operator.create_provider("bench").await?;
        let c = operator.create_customer("bench").await?;
        Ok(Rig {
            emu,
            dir,
            provider: Client::new(&url, Auth::Bearer(p.token.clone())),
            provider_id: p.id,
            customer: Client::new(&url, Auth::Bearer(c.token.clone())),
            url,
            _server: server,
        })
    }

    /// Writes the agent's `berth.toml` (the emulator's backend with a rate limit out of the way,
    /// `concurrency`, capacity out of the way, then `extra`), enrolls it and starts `berth`
    /// (`berth agent`, or the lean `berth-agent`); returns once its first heartbeat is in.
    pub async fn agent(&self, berth: &Path, concurrency: usize, extra: &str) -> anyhow::Result<AgentProcess> {
        // Each agent its own file and state (key, journal): several may be enrolled in turn.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let agent_toml = self.dir.path().join(format!("berth-{n}.toml"));
        std::fs::write(
            &agent_toml,
            format!(
                "{backend}\n[provisioner.rate_limit]\nqps = 1000\nburst = 1000\n\n[api]\nendpoint = \"{server}\"\n\n\
                 [agent]\nstate_dir = \"state-{n}\"\nconcurrency = {concurrency}\n\n\
                 [capacity]\ncores = 100000\nmemory_mib = 100000000\ndisk_gib = 1000000\n{extra}",
                backend = crate::emulator_config(&self.emu, None)?,
                server = self.url,
            ),
        )?;
        let lean = berth
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("berth-agent"));
        let loaded = berth_agent::load_config(&agent_toml).map_err(|e| anyhow::anyhow!("{e}"))?;
        let settings = loaded.agent.clone().context("[api]")?;
        let setup = self.provider.create_enrollment_token(&self.provider_id, None).await?;
        berth_agent::identity::enroll(&settings, &setup.token, Some(&format!("bench-{n}"))).await?;
        let child = AgentProcess(
            Command::new(berth)
                // `berth agent --config F`, or the lean `berth-agent --config F`.
                .args(if lean {
                    &["--config"][..]
                } else {
                    &["agent", "--config"][..]
                })
                .arg(&agent_toml)
                .env("BERTH_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?,
        );
        let started = Instant::now();
        while !self.provider.agents().await?.iter().any(|a| a.alive) {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the agent never heartbeat");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(child)
    }

    /// An offering of this size from the backend's default template.
    pub async fn offering(&self, name: &str, cores: u32, memory_mib: u64, disk_gib: u64) -> anyhow::Result<String> {
        Ok(self
            .provider
            .create_offering(&OfferingSpec {
                name: name.into(),
                cores,
                memory_mib,
                disk_gib,
                bandwidth_mbps: None,
                template: None,
                price: None,
                region: None,
                labels: Default::default(),
                post_provision_commands: Vec::new(),
            })
            .await?
            .id)
    }

    pub async fn order(&self, offering: &str, name: &str) -> anyhow::Result<Accepted> {
        Ok(self
            .customer
            .create_order(
                &CreateOrder {
                    offering_id: offering.into(),
                    name: name.into(),
                    ssh_public_key: crate::KEY.into(),
                    requester_public_key: Some(AGE.into()),
                    skip_post_provision: false,
                    provision: true,
                },
                None,
            )
            .await?)
    }

    /// The operation once it ended.
    pub async fn finished(&self, op: &str) -> anyhow::Result<OperationView> {
        loop {
            let v = self.customer.wait_operation(op, Duration::from_secs(30)).await?;
            if v.status == "succeeded" || v.status == "failed" {
                return Ok(v);
            }
        }
    }
}

/// The `p`th percentile (0..=100) of `v`, nearest rank.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
