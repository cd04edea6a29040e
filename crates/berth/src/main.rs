//! `berth`: argument parsing and wiring only. Each subcommand lives in its own module.

mod cli;
mod doctor;
mod keygen;
mod operator;
mod output;
mod progress;
mod vm;

use std::process::ExitCode;

use clap::Parser;

fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        "info,berth=debug,berth_proxmox=debug"
    } else {
        "warn,rustls=off,berth=info,berth_proxmox=info"
    };
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let (config, output) = (&cli.config.config, cli.output.output);
        match cli.command {
            cli::Command::Doctor(_) => doctor::run(config, output).await,
            cli::Command::Keygen(args) => keygen::run(&args),
            cli::Command::Vm(args) => vm::run(args, config, output, None).await,
            cli::Command::Ct(args) => vm::run(args, config, output, Some(berth_core::GuestKind::Container)).await,
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
