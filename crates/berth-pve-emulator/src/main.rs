//! `berth-pve-emulator` binary: runs the emulator until SIGINT/SIGTERM and prints how to reach it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_pve_emulator::{Emulator, EmulatorConfig, Timings};
use clap::Parser;

/// A Proxmox VE API emulator for tests and benchmarks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    no_tls: bool,
    /// apidata.json to validate requests against (default: the workspace's shared copy, if present).
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Duration of a clone task, in ms.
    #[arg(long)]
    clone_ms: Option<u64>,
    /// Duration of a start task, in ms.
    #[arg(long)]
    start_ms: Option<u64>,
    /// Duration of stop and shutdown tasks, in ms.
    #[arg(long)]
    stop_ms: Option<u64>,
    /// Time from VM start until the guest agent answers, in ms.
    #[arg(long)]
    agent_ready_ms: Option<u64>,
    /// Duration of a container create task, in ms.
    #[arg(long)]
    create_ct_ms: Option<u64>,
    /// Every answer this much later (milliseconds): a real pveproxy's round trip.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction (0..1) of requests that fail transiently.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// The PVE major version to behave as: 9 (HA rules) or 8 (HA groups).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u8).range(8..=9))]
    pve_major: u8,
    /// Error bodies are `{"data":null}` only (PVE before 8.3).
    #[arg(long)]
    old_error_envelope: bool,
    /// Let `agent/exec` run commands for real, as subprocesses of this emulator on this host.
    /// Off by default: without it the emulated guest agent refuses `guest-exec`.
    #[arg(long)]
    guest_exec: bool,
    /// Secret of the berth@pve!agent token (random if not given).
    #[arg(long, env = "BERTH_PVE_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.fault_rate) {
        anyhow::bail!("--fault-rate must be between 0 and 1, got {}", args.fault_rate);
    }
    let ms = Duration::from_millis;
    let mut timings = Timings::default();
    if let Some(v) = args.clone_ms {
        timings.clone = ms(v);
    }
    if let Some(v) = args.start_ms {
        timings.start = ms(v);
        timings.reboot = ms(v);
    }
    if let Some(v) = args.stop_ms {
        timings.stop = ms(v);
        timings.shutdown = ms(v);
    }
    if let Some(v) = args.agent_ready_ms {
        timings.agent_ready = ms(v);
    }
    if let Some(v) = args.create_ct_ms {
        timings.create_ct = ms(v);
    }
    let config = EmulatorConfig {
        listen: args.listen,
        tls: !args.no_tls,
        schema_path: args.schema.or_else(EmulatorConfig::default_schema_path),
        timings,
        old_error_envelope: args.old_error_envelope,
        seed: true,
        guest_exec: args.guest_exec,
        pve_major: args.pve_major,
        ..EmulatorConfig::default()
    };
    let handle = Emulator::start(config).await?;
    let secret = match args.token_secret {
        Some(s) => {
            handle.add_token(&handle.token_id(), &s, vec![("/".to_string(), all_privileges())]);
            s
        }
        None => handle.token_secret(),
    };
    handle.set_fault_rate(args.fault_rate);
    handle.set_latency(std::time::Duration::from_millis(args.latency_ms));
    println!("url={}", handle.base_url());
    if let Some(fp) = handle.fingerprint() {
        println!("fingerprint={fp}");
    }
    println!("token_id={}", handle.token_id());
    println!("token_secret={secret}");
    use std::io::Write as _;
    std::io::stdout().flush()?;

    wait_for_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

fn all_privileges() -> Vec<String> {
    berth_pve_emulator::ALL_PRIVILEGES
        .iter()
        .map(|p| p.to_string())
        .collect()
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
