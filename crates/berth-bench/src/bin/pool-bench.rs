//! Warm pools end to end: order → running with an address, through the control plane and a
//! real `berth agent`, against the PVE emulator paced like a real cluster (clone 2 s, start 1 s,
//! guest agent up 1 s after the start: a create is about 4 s).
//!
//! - sequential orders with no pool, with a `stopped` pool and with a `running` pool (each order
//!   placed once the pool is full again): p50 and p99 of order → succeeded;
//! - a burst of orders against a pool smaller than the burst: how many took a pool machine, and
//!   how long the hits and the rest took.
//!
//! `cargo build --release -p berth -p berth-bench && target/release/pool-bench`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_bench::rig::{Rig, percentile};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// Sequential orders per mode.
    #[arg(long, default_value_t = 21)]
    runs: usize,
    /// Pool size for the sequential orders.
    #[arg(long, default_value_t = 2)]
    ready: u32,
    #[arg(long, default_value_t = 50)]
    burst: usize,
    #[arg(long, default_value_t = 10)]
    burst_pool: u32,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn pool(name: &str, ready: u32, mode: &str) -> String {
    format!(
        "\n[polling]\nheartbeat_interval_seconds = 1\n\n[[pool]]\nname = \"{name}\"\ncores = 2\nmemory_mib = 2048\ndisk_gib = 20\nready = {ready}\nmode = \"{mode}\"\n"
    )
}

/// Waits until a heartbeat sent from now on shows `name` full (an older one may predate the
/// last take).
async fn full(rig: &Rig, name: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let since = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    loop {
        let agents = rig.provider.agents().await?;
        let full = agents
            .iter()
            .filter(|a| a.alive && a.last_seen.is_some_and(|t| t > since))
            .filter_map(|a| a.heartbeat.as_ref())
            .flat_map(|h| h.pools.iter())
            .any(|p| p.name == name && p.ready == p.target && p.filling == 0);
        if full {
            return Ok(());
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(300), "pool {name} never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the operation took a pool machine (its clone stage says so).
fn hit(op: &berth_api::wire::OperationView) -> bool {
    op.stages
        .iter()
        .any(|s| s.stage == "clone_template" && s.message.as_deref().is_some_and(|m| m.contains("taken from pool")))
}

fn line(what: &str, v: &mut [f64]) -> String {
    if v.is_empty() {
        return format!("{what}: none");
    }
    let n = v.len();
    format!(
        "{what}: p50 {:.0} ms, p99 {:.0} ms ({n} orders)",
        percentile(v, 50.0),
        percentile(v, 99.0)
    )
}

/// `runs` orders one at a time (each once the pool, if any, is full again).
async fn sequential(rig: &Rig, offering: &str, pool: Option<&str>, runs: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    let (mut took, mut hits) = (Vec::new(), 0);
    for n in 0..runs {
        if let Some(p) = pool {
            full(rig, p).await?;
        }
        let t0 = Instant::now();
        let a = rig.order(offering, &format!("{}-{n}", pool.unwrap_or("plain"))).await?;
        let op = rig.finished(a.operation_id.as_deref().context("op")?).await?;
        anyhow::ensure!(op.status == "succeeded", "{op:?}");
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        hits += usize::from(hit(&op));
    }
    Ok((took, hits))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_bench::rig::require(&args.berth)?;
    let timings = berth_bench::rig::paced();
    let rig = Rig::start(timings).await?;
    let offering = rig.offering("small", 2, 2048, 20).await?;

    let agent = rig
        .agent(
            &args.berth,
            args.concurrency,
            "\n[polling]\nheartbeat_interval_seconds = 1\n",
        )
        .await?;
    let (mut plain, _) = sequential(&rig, &offering, None, args.runs).await?;
    println!("{}", line("no pool", &mut plain));
    drop(agent);

    for mode in ["stopped", "running"] {
        let agent = rig
            .agent(&args.berth, args.concurrency, &pool(mode, args.ready, mode))
            .await?;
        let (mut took, hits) = sequential(&rig, &offering, Some(mode), args.runs).await?;
        println!(
            "{} ({hits} of {} took a pool machine)",
            line(&format!("{mode} pool of {}", args.ready), &mut took),
            args.runs
        );
        drop(agent);
    }

    // The burst: every order at once against a running pool smaller than it.
    let name = "burst";
    let agent = rig
        .agent(&args.berth, args.concurrency, &pool(name, args.burst_pool, "running"))
        .await?;
    full(&rig, name).await?;
    let t0 = Instant::now();
    let mut placed = Vec::new();
    for n in 0..args.burst {
        placed.push((Instant::now(), rig.order(&offering, &format!("burst-{n}")).await?));
    }
    let waits = placed.iter().map(|(at, a)| {
        let op = a.operation_id.clone().unwrap_or_default();
        let rig = &rig;
        async move { rig.finished(&op).await.map(|v| (v, at.elapsed())) }
    });
    let (mut hits, mut misses, mut failed) = (Vec::new(), Vec::new(), 0);
    for r in futures::future::join_all(waits).await {
        let (op, took) = r?;
        let ms = took.as_secs_f64() * 1000.0;
        if op.status != "succeeded" {
            failed += 1;
        } else if hit(&op) {
            hits.push(ms);
        } else {
            misses.push(ms);
        }
    }
    println!(
        "burst of {} orders against a running pool of {} (concurrency {}): {} took a pool machine, {} were created, {failed} failed; all done in {:.1} s",
        args.burst,
        args.burst_pool,
        args.concurrency,
        hits.len(),
        misses.len(),
        t0.elapsed().as_secs_f64()
    );
    println!("  {}", line("hits", &mut hits));
    println!("  {}", line("created", &mut misses));
    drop(agent);
    Ok(())
}
