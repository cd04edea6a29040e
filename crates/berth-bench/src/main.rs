//! `berth-bench`: measures Berth's own overhead for `vm create` against the PVE emulator, whose
//! task times are fixed, so wall time minus the emulator's task time is what Berth adds.
//!
//! `cargo run --release -p berth-bench -- [--runs 5] [--concurrent 32] [--poll-ms N]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_core::{NoProgress, Provider};
use berth_pve_emulator::{Emulator, EmulatorConfig, Timings};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Sequential single creates to take the median of.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// VMs created at once in the concurrency run.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    concurrent: u16,
    /// Task/agent poll interval cap in ms (`poll_interval_ms`); the config default when absent.
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Also time single creates with this much added to every API answer (ms, a real pveproxy's
    /// round trip); repeatable, e.g. `--latency 15 --latency 30 --latency 60`.
    #[arg(long)]
    latency: Vec<u64>,
    /// Print the request timeline of one warm create with this much latency added (ms).
    #[arg(long)]
    trace: Option<u64>,
    /// Also time `berth vm create` as its own process, with this `berth` binary (build it with
    /// `cargo build --release -p berth`), at 0 ms and each `--latency`.
    #[arg(long)]
    cli: Option<std::path::PathBuf>,
}

/// The emulator's own time for one create: clone, resize, start, then the agent's delay.
fn ideal(t: &Timings) -> Duration {
    t.clone + t.resize + t.start + t.agent_ready
}

/// `berth vm create` as a process of its own, start to exit.
fn timed_cli(berth: &Path, config: &Path, tag: &str) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = std::process::Command::new(berth)
        .args(["vm", "create", "--config"])
        .arg(config)
        .args(["--name", tag, "--cores", "2", "--memory-mib", "2048"])
        .args(["--disk-gib", "20", "--ssh-key", berth_bench::KEY])
        .output()
        .with_context(|| format!("running {}", berth.display()))?;
    let took = t0.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "berth vm create {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

async fn timed_create(p: &Arc<dyn Provider>, tag: &str) -> anyhow::Result<Duration> {
    let s = berth_bench::spec(tag)?;
    let t0 = Instant::now();
    p.create(&s, &NoProgress)
        .await
        .with_context(|| format!("create {tag}"))?;
    Ok(t0.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of some walls.
fn median(mut walls: Vec<Duration>) -> Duration {
    walls.sort();
    walls[walls.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let t = berth_bench::rig::paced();
    let emu = Emulator::start(EmulatorConfig {
        timings: t.clone(),
        ..EmulatorConfig::default()
    })
    .await?;
    let p = berth_bench::emulator_provider(&emu, args.poll_ms)?;
    let ideal = ideal(&t);
    println!(
        "emulator: clone {:?}, start {:?}, agent ready {:?}; ideal per create {:?}",
        t.clone, t.start, t.agent_ready, ideal
    );
    println!(
        "poll_interval_ms: {}",
        args.poll_ms.map_or("config default".to_owned(), |m| m.to_string())
    );

    // The first create: TLS handshake, and nothing learned yet about how long waits take.
    let cold = timed_create(&p, "cold").await?;
    println!(
        "first (cold) create: wall {:.0} ms, overhead {:.0} ms",
        ms(cold),
        ms(cold.saturating_sub(ideal))
    );

    let before = emu.requests().len();
    let mut walls = Vec::new();
    for i in 0..args.runs {
        walls.push(timed_create(&p, &format!("single-{i}")).await?);
    }
    walls.sort();
    let base = walls[walls.len() / 2];
    let overheads: Vec<String> = walls
        .iter()
        .map(|w| format!("{:.0}", ms(w.saturating_sub(ideal))))
        .collect();
    println!(
        "single create: median wall {:.0} ms, overhead (wall - ideal) median {:.0} ms; all overheads ms: [{}]",
        ms(base),
        ms(base.saturating_sub(ideal)),
        overheads.join(", ")
    );

    let per_create = (emu.requests().len() - before) as f64 / f64::from(args.runs);
    println!("API requests per create (incl. task and agent polls): {per_create:.1}");

    // The same against a slower API: what each added millisecond costs tells how many requests
    // sit one after another on the critical path.
    for &lat in &args.latency {
        emu.set_latency(Duration::from_millis(lat));
        let before = emu.requests().len();
        let mut w = Vec::new();
        for i in 0..args.runs {
            w.push(timed_create(&p, &format!("lat{lat}-{i}")).await?);
        }
        let m = median(w);
        let reqs = (emu.requests().len() - before) as f64 / f64::from(args.runs);
        let sequential = (ms(m) - ms(base)) / lat.max(1) as f64;
        println!(
            "latency {lat} ms: median wall {:.0} ms, overhead {:.0} ms, {reqs:.1} requests per create, \
             about {sequential:.1} of them on the critical path",
            ms(m),
            ms(m.saturating_sub(ideal))
        );
    }
    // A cold process (`berth vm create`): a new client each time, nothing learned but what the
    // node's task history says, a new TLS connection.
    for &lat in std::iter::once(&0).chain(&args.latency) {
        emu.set_latency(Duration::from_millis(lat));
        let mut w = Vec::new();
        for i in 0..args.runs {
            let fresh = berth_bench::emulator_provider(&emu, args.poll_ms)?;
            w.push(timed_create(&fresh, &format!("cold{lat}-{i}")).await?);
        }
        let m = median(w);
        println!(
            "cold process, latency {lat} ms: median wall {:.0} ms, overhead {:.0} ms",
            ms(m),
            ms(m.saturating_sub(ideal))
        );
    }
    emu.set_latency(Duration::ZERO);

    if let Some(berth) = &args.cli {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("berth.toml");
        std::fs::write(&config, berth_bench::emulator_config(&emu, args.poll_ms)?)?;
        for &lat in std::iter::once(&0).chain(&args.latency) {
            emu.set_latency(Duration::from_millis(lat));
            let mut w = Vec::new();
            for i in 0..args.runs {
                let tag = format!("cli{lat}-{i}");
                let berth = berth.clone();
                let config = config.clone();
                w.push(tokio::task::spawn_blocking(move || timed_cli(&berth, &config, &tag)).await??);
            }
            let m = median(w);
            println!(
                "`berth vm create` process, latency {lat} ms: median wall {:.0} ms, overhead {:.0} ms",
                ms(m),
                ms(m.saturating_sub(ideal))
            );
        }
        emu.set_latency(Duration::ZERO);
    }

    if let Some(lat) = args.trace {
        emu.set_latency(Duration::from_millis(lat));
        let before = emu.requests().len();
        let t0 = Instant::now();
        let wall = timed_create(&p, "traced").await?;
        println!("timeline of one create at {lat} ms (wall {:.0} ms):", ms(wall));
        berth_bench::print_timeline(&emu.requests()[before..], t0);
        emu.set_latency(Duration::ZERO);
    }

    let before = emu.requests().len();
    let t0 = Instant::now();
    let results = futures::future::join_all((0..args.concurrent).map(|i| {
        let p = p.clone();
        async move { timed_create(&p, &format!("conc-{i}")).await }
    }))
    .await;
    let wall = t0.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e:#}");
    }
    println!(
        "{} concurrent creates: wall {:.0} ms, ideal {:.0} ms, ratio {:.3}, failed {failed}",
        args.concurrent,
        ms(wall),
        ms(ideal),
        wall.as_secs_f64() / ideal.as_secs_f64()
    );
    let total = emu.requests().len() - before;
    println!(
        "API requests in the concurrent run: {total} ({:.0}/s)",
        total as f64 / wall.as_secs_f64()
    );
    emu.shutdown().await;
    // Numbers from a run with failures would be wrong; never let them look like a result.
    anyhow::ensure!(failed == 0, "{failed} of {} concurrent creates failed", args.concurrent);
    Ok(())
}
