//! `berth-agent`: the agent alone, for hypervisor hosts. The same agent as `berth agent`, in a
//! binary without the control plane, its database drivers and the web UI, so its idle memory is
//! a fraction of the full `berth` binary's. Built without the `libvirt` feature it does not
//! load libvirt's libraries either.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "berth-agent", version, about = "Berth's agent: runs next to the hypervisors")]
struct Cli {
    /// Configuration file.
    #[arg(long, short, env = "BERTH_CONFIG", default_value = "berth.toml", global = true)]
    config: PathBuf,
    /// More detailed logs (or set BERTH_LOG, e.g. BERTH_LOG=debug).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Register this agent's key with the control plane, using a single-use setup token.
    Enroll(berth_agent::cmd::EnrollArgs),
    /// Check the configuration, the key, the enrollment, the control plane and each backend.
    Doctor {
        /// The checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// This agent's identity, backends, the operations in its journal, and how the control
    /// plane sees it.
    Status,
    /// Empty warm pools and keep them empty (`--undo`: fill them again).
    Drain(berth_agent::cmd::DrainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    berth_agent::cmd::init_logging(cli.verbose);
    // The agent mostly waits on the network: one thread keeps its idle footprint small.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Some(Command::Doctor { json }) = cli.command {
            return berth_agent::doctor::run(&cli.config, json).await;
        }
        let cfg = berth_agent::load_config(&cli.config).map_err(|e| anyhow::anyhow!("{e}"))?;
        match cli.command {
            Some(Command::Enroll(args)) => berth_agent::cmd::enroll(&cfg, &args).await,
            Some(Command::Status) => berth_agent::cmd::status(&cfg).await,
            Some(Command::Drain(args)) => berth_agent::cmd::drain(&cfg, &args),
            _ => berth_agent::cmd::run(&cfg).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
