//! The agent end to end: the control plane (in this process, SQLite), the PVE emulator (in this
//! process, paced like a small cluster) and a real `berth agent` process.
//!
//! - pickup and overhead: sequential orders; order-to-running wall time minus the backend's own
//!   time (first backend stage started → last backend stage completed, as the agent reported);
//! - throughput: N orders at once through one agent with concurrency C, against the
//!   emulator-bound ideal ⌈N / C⌉ × one create's emulated time;
//! - the agent's resident memory when idle, and the binary's size.
//!
//! `cargo build --release -p berth -p berth-bench && target/release/agent-bench`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_bench::rig::Rig;
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The binary the agent runs as: `berth` (run as `berth agent`) or the lean `berth-agent`.
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    #[arg(long, default_value_t = 21)]
    latency_runs: usize,
    #[arg(long, default_value_t = 200)]
    orders: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Also run the sequential orders with this much added to every Proxmox API answer (ms, a
    /// real pveproxy's round trip); repeatable: `--pve-latency 15 --pve-latency 30`.
    #[arg(long)]
    pve_latency: Vec<u64>,
    /// Print the Proxmox request timeline of the last order at each `--pve-latency`.
    #[arg(long)]
    trace: bool,
}

const BACKEND_STAGES: [&str; 4] = ["clone_template", "configure_vm", "start_vm", "wait_network"];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// VmRSS, and its anonymous (heap, stacks) and file-backed (the mapped binary) parts, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?, field("RssFile:")?))
}

fn mib(kib: (u64, u64, u64)) -> String {
    let m = |k: u64| k as f64 / 1024.0;
    format!(
        "{:.1} MiB (anonymous {:.1}, file-backed {:.1})",
        m(kib.0),
        m(kib.1),
        m(kib.2)
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_bench::rig::require(&args.berth)?;
    let timings = berth_bench::rig::paced();
    let ideal_one = 4.0;
    let rig = Rig::start(timings).await?;
    let emu = &rig.emu;
    let child = rig.agent(&args.berth, args.concurrency, "").await?;
    let pid = child.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_fresh = rss_kib(pid)?;

    let offering = rig.offering("bench", 1, 512, 2).await?;

    // Pickup and overhead, one order at a time.
    let (mut overhead, mut pickup, mut backend) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..args.latency_runs {
        let t0 = Instant::now();
        let a = rig.order(&offering, &format!("lat{n}")).await?;
        let op = rig.finished(a.operation_id.as_deref().context("op")?).await?;
        let wall = t0.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(op.status == "succeeded", "{op:?}");
        let of = |stage: &str, phase: &str| {
            op.events
                .iter()
                .find(|e| e.event.stage == stage && e.event.phase == phase)
                .map(|e| e.at)
        };
        let first = of(BACKEND_STAGES[0], "started").context("first stage")?;
        let last = of(BACKEND_STAGES[3], "completed").context("last stage")?;
        let span = (last - first) as f64;
        backend.push(span);
        overhead.push(wall - span);
        pickup.push((first - op.created_at) as f64);
    }
    println!(
        "sequential orders ({}): wall - backend time median {:.0} ms; pickup (queued -> first stage) median {:.0} ms; backend span median {:.0} ms (emulated ideal {:.0} ms)",
        args.latency_runs,
        median(&mut overhead),
        median(&mut pickup),
        median(&mut backend),
        ideal_one * 1000.0
    );

    // The same against a slower Proxmox API: order → succeeded over the emulator's own time.
    for &lat in &args.pve_latency {
        emu.set_latency(Duration::from_millis(lat));
        let mut over = Vec::new();
        for n in 0..args.latency_runs {
            let before = emu.requests().len();
            let t0 = Instant::now();
            let a = rig.order(&offering, &format!("pve{lat}-{n}")).await?;
            let op = rig.finished(a.operation_id.as_deref().context("op")?).await?;
            anyhow::ensure!(op.status == "succeeded", "{op:?}");
            over.push(t0.elapsed().as_secs_f64() * 1000.0 - ideal_one * 1000.0);
            if args.trace && n + 1 == args.latency_runs {
                println!("timeline of the last order at {lat} ms:");
                berth_bench::print_timeline(&emu.requests()[before..], t0);
            }
        }
        println!(
            "Proxmox API latency {lat} ms: order -> succeeded minus the emulated ideal, median {:.0} ms",
            median(&mut over)
        );
    }
    emu.set_latency(Duration::ZERO);

    // Throughput: all orders at once.
    let t0 = Instant::now();
    let mut ops = Vec::new();
    for n in 0..args.orders {
        ops.push(rig.order(&offering, &format!("t{n}")).await?);
    }
    let submitted = t0.elapsed();
    let waits = ops.iter().map(|a| {
        let op = a.operation_id.clone().unwrap_or_default();
        let rig = &rig;
        async move { rig.finished(&op).await }
    });
    let results = futures::future::join_all(waits).await;
    let wall = t0.elapsed().as_secs_f64();
    let failed = results
        .iter()
        .filter(|r| !matches!(r, Ok(v) if v.status == "succeeded"))
        .count();
    let mut reasons = std::collections::BTreeMap::new();
    for r in &results {
        let why = match r {
            Ok(v) if v.status == "succeeded" => continue,
            Ok(v) => v
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.code, e.message))
                .unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        *reasons.entry(why).or_insert(0) += 1;
    }
    for (why, n) in &reasons {
        println!("  failed x{n}: {why}");
    }
    let ideal = args.orders.div_ceil(args.concurrency) as f64 * ideal_one;
    println!(
        "{} orders, concurrency {}: wall {:.2} s vs ideal {:.1} s = {:.3}x; {} failed; orders submitted in {:.2} s",
        args.orders,
        args.concurrency,
        wall,
        ideal,
        wall / ideal,
        failed,
        submitted.as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_after = rss_kib(pid)?;
    let size = std::fs::metadata(&args.berth)?.len();
    println!(
        "agent RSS idle: {} fresh; {} after the run; berth binary {:.1} MiB",
        mib(idle_fresh),
        mib(idle_after),
        size as f64 / (1024.0 * 1024.0)
    );
    drop(child);
    Ok(())
}
