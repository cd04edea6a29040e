//! What a remote provider costs over the same backend in-process: the Proxmox backend against
//! the PVE emulator, called directly and through `berth-provider-grpc` (served in this process,
//! on loopback TCP and on a Unix socket, with a bearer token):
//!
//! - per-call overhead: `describe` of one machine, p50 and p99 of `--calls` calls each way, the
//!   paths taken in turns of 100 calls (so drift on a shared machine falls on all alike); once
//!   against the emulator, once against a backend that answers at once (the protocol's own cost);
//! - one create's overhead: the median of `--creates` creates each way (emulator timings as
//!   the `vm create` bench: clone 2 s, start 1 s, guest agent 1 s).
//!
//! `cargo build --release -p berth-bench --bin grpc-bench && target/release/grpc-bench`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_core::{Instance, InstanceRef, NoProgress, Provider, ProviderError, Secret, VmSpec};
use berth_provider_grpc::{RemoteConfig, RemoteProvider, ServeOptions};
use berth_pve_emulator::{Emulator, EmulatorConfig, Timings};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    #[arg(long, default_value_t = 7)]
    creates: usize,
}

/// Serves `inner` on `listen`; the remote provider that calls it.
async fn remote(inner: Arc<dyn Provider>, listen: &str, dir: &Path) -> anyhow::Result<Arc<dyn Provider>> {
    let served = berth_provider_grpc::bind(ServeOptions {
        listen: listen.parse().map_err(anyhow::Error::msg)?,
        tls: None,
        token: Some(Secret::new("bench-token")),
        allow_unauthenticated: false,
    })
    .await?;
    let endpoint = match &served.local {
        berth_provider_grpc::Listen::Tcp(a) => format!("http://{a}"),
        berth_provider_grpc::Listen::Unix(p) => format!("unix:{}", p.display()),
    };
    tokio::spawn(served.run(inner, futures::future::pending()));
    std::fs::write(dir.join("token"), "bench-token")?;
    let config: RemoteConfig = toml::from_str(&format!("endpoint = {endpoint:?}\ntoken_file = \"token\"\n"))?;
    Ok(Arc::new(RemoteProvider::new(&config, dir)?))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `describe` through each path, `n` calls each, in turns of 100; sorted times per path.
async fn describes(paths: &[&Arc<dyn Provider>], id: &InstanceRef, n: usize) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut took = vec![Vec::with_capacity(n); paths.len()];
    for p in paths {
        for _ in 0..50 {
            p.describe(id).await?; // warm: connections, TLS to the emulator
        }
    }
    for _ in 0..n.div_ceil(100) {
        for (p, t) in paths.iter().zip(took.iter_mut()) {
            for _ in 0..100 {
                let t0 = Instant::now();
                p.describe(id).await?;
                t.push(t0.elapsed());
            }
        }
    }
    for t in &mut took {
        t.sort();
    }
    Ok(took)
}

fn table(title: &str, names: &[&str], took: &[Vec<Duration>]) {
    println!("{title} (ms):");
    println!("{:<22} {:>8} {:>8}", "path", "p50", "p99");
    let base = &took[0];
    for (name, t) in names.iter().zip(took) {
        let (p50, p99) = (pct(t, 0.5), pct(t, 0.99));
        let extra = if std::ptr::eq(t, base) {
            String::new()
        } else {
            format!(
                "   overhead p50 {:+.3}, p99 {:+.3}",
                ms(p50) - ms(pct(base, 0.5)),
                ms(p99) - ms(pct(base, 0.99))
            )
        };
        println!("{name:<22} {:>8.3} {:>8.3}{extra}", ms(p50), ms(p99));
    }
}

/// A backend that answers `describe` at once: what is left is the protocol's own cost.
struct Instant0(berth_core::Instance);

#[async_trait::async_trait]
impl Provider for Instant0 {
    fn backend(&self) -> &'static str {
        "null"
    }
    async fn validate(&self) -> Vec<berth_core::Check> {
        Vec::new()
    }
    async fn capabilities(&self) -> Result<berth_core::Capabilities, ProviderError> {
        Ok(berth_core::Capabilities::default())
    }
    async fn create(&self, _: &VmSpec, _: &dyn berth_core::ProgressSink) -> Result<Instance, ProviderError> {
        Err(nope())
    }
    async fn describe(&self, _: &InstanceRef) -> Result<Instance, ProviderError> {
        Ok(self.0.clone())
    }
    async fn list(&self, _: berth_core::ListFilter) -> Result<Vec<Instance>, ProviderError> {
        Err(nope())
    }
    async fn power(&self, _: &InstanceRef, _: berth_core::PowerOp) -> Result<Instance, ProviderError> {
        Err(nope())
    }
    async fn reconfigure(
        &self,
        _: &InstanceRef,
        _: &berth_core::Resize,
    ) -> Result<berth_core::ReconfigureOutcome, ProviderError> {
        Err(nope())
    }
    async fn delete(&self, _: &InstanceRef) -> Result<berth_core::DeleteOutcome, ProviderError> {
        Err(nope())
    }
    async fn list_templates(&self) -> Result<Vec<berth_core::Template>, ProviderError> {
        Err(nope())
    }
    async fn capacity(&self) -> Result<berth_core::Capacity, ProviderError> {
        Err(nope())
    }
}

fn nope() -> ProviderError {
    ProviderError::unsupported("not in this bench")
}

async fn creates(p: &Arc<dyn Provider>, prefix: &str, n: usize) -> anyhow::Result<Duration> {
    let mut walls = Vec::new();
    for i in 0..=n {
        let s = berth_bench::spec(&format!("{prefix}-{i}"))?;
        let t0 = Instant::now();
        p.create(&s, &NoProgress).await?;
        if i > 0 {
            walls.push(t0.elapsed()); // the first only warms the learned durations
        }
        p.delete(&InstanceRef::Id(s.instance_id)).await?;
    }
    walls.sort();
    Ok(walls[walls.len() / 2])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let emu = Emulator::start(EmulatorConfig {
        timings: Timings::fast(),
        ..EmulatorConfig::default()
    })
    .await?;
    let direct = berth_bench::emulator_provider(&emu, None)?;
    let tcp = remote(berth_bench::emulator_provider(&emu, None)?, "127.0.0.1:0", dir.path()).await?;
    let unix = remote(
        berth_bench::emulator_provider(&emu, None)?,
        &format!("unix:{}", dir.path().join("p.sock").display()),
        dir.path(),
    )
    .await?;
    let made = direct.create(&berth_bench::spec("probe")?, &NoProgress).await?;
    let id = InstanceRef::Id(made.instance_id.clone().context("owned")?);
    let names = ["in-process", "gRPC, loopback TCP", "gRPC, Unix socket"];
    let took = describes(&[&direct, &tcp, &unix], &id, args.calls).await?;
    table(
        &format!("describe against the emulator, {} calls each", args.calls),
        &names,
        &took,
    );
    let null: Arc<dyn Provider> = Arc::new(Instant0(made.clone()));
    let null_tcp = remote(null.clone(), "127.0.0.1:0", dir.path()).await?;
    let null_unix = remote(
        null.clone(),
        &format!("unix:{}", dir.path().join("n.sock").display()),
        dir.path(),
    )
    .await?;
    let took = describes(&[&null, &null_tcp, &null_unix], &id, args.calls).await?;
    table(
        &format!("describe of a backend that answers at once, {} calls each", args.calls),
        &names,
        &took,
    );
    direct.delete(&id).await?;
    drop(emu);

    let emu = Emulator::start(EmulatorConfig {
        timings: Timings {
            clone: Duration::from_secs(2),
            start: Duration::from_secs(1),
            agent_ready: Duration::from_secs(1),
            resize: Duration::ZERO,
            ..Timings::fast()
        },
        ..EmulatorConfig::default()
    })
    .await?;
    let direct = berth_bench::emulator_provider(&emu, None)?;
    let tcp = remote(berth_bench::emulator_provider(&emu, None)?, "127.0.0.1:0", dir.path()).await?;
    let a = creates(&direct, "direct", args.creates).await?;
    let b = creates(&tcp, "remote", args.creates).await?;
    println!(
        "create, median of {} (emulator ideal 4000 ms): in-process {:.0} ms, gRPC {:.0} ms, overhead {:+.1} ms",
        args.creates,
        ms(a),
        ms(b),
        ms(b) - ms(a)
    );
    Ok(())
}
