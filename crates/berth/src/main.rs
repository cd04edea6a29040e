//! `berth`: argument parsing and wiring only. Each subcommand lives in its own module.

mod agent_cmd;
mod agents_cmd;
mod api_cmd;
mod audit_cmd;
mod backup;
mod cli;
mod cli_api;
mod cli_error;
mod instance_cmd;
mod keygen;
mod operator;
mod output;
mod progress;
mod quota_cmd;
mod server_cmd;
mod token_cmd;
mod up_cmd;
mod vm;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    berth_agent::cmd::init_logging(cli.verbose);
    // The agent mostly waits on the network: one thread keeps its idle footprint small.
    let mut builder = if matches!(cli.command, cli::Command::Agent(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let output = cli.output.output;
    let result = runtime.block_on(async move {
        let config = &cli.config.config;
        match cli.command {
            cli::Command::Doctor(_) => berth_agent::doctor::run(config, output == cli::OutputFormat::Json).await,
            cli::Command::Keygen(args) => keygen::run(&args),
            cli::Command::Vm(args) => vm::run(args, config, output, None).await,
            cli::Command::Ct(args) => vm::run(args, config, output, Some(berth_core::GuestKind::Container)).await,
            cli::Command::Server(args) => server_cmd::run(args, config).await,
            cli::Command::Provider(a) => api_cmd::accounts("provider", a, &cli.api, output).await,
            cli::Command::Customer(a) => api_cmd::accounts("customer", a, &cli.api, output).await,
            cli::Command::AgentToken(a) => api_cmd::agent_token(a, &cli.api, output).await,
            cli::Command::Token(a) => token_cmd::token(a, &cli.api, output).await,
            cli::Command::Quota(a) => quota_cmd::quota(a, &cli.api, output).await,
            cli::Command::Offering(a) => api_cmd::offering(a, &cli.api, output).await,
            cli::Command::Order(a) => api_cmd::order(a, &cli.api, output).await,
            cli::Command::Op(a) => api_cmd::op(a, &cli.api, output).await,
            cli::Command::Instance(a) => instance_cmd::instance(a, &cli.api, output).await,
            cli::Command::Template(a) => api_cmd::templates(a, &cli.api, output).await,
            cli::Command::Agent(cli_api::AgentArgs {
                action:
                    Some(
                        a @ (cli_api::AgentAction::List
                        | cli_api::AgentAction::Show { .. }
                        | cli_api::AgentAction::Revoke { .. }),
                    ),
            }) => agents_cmd::agents(a, &cli.api, output).await,
            cli::Command::Agent(a) => agent_cmd::run(a, config).await,
            cli::Command::Up(a) => up_cmd::run(a, config).await,
            cli::Command::Audit(cli_api::AuditAction::Verify) => server_cmd::audit_verify(config, output).await,
            cli::Command::Audit(cli_api::AuditAction::List {
                after,
                limit,
                actor,
                subject,
                action,
                since,
                follow,
            }) => {
                let filter = audit_cmd::Filter {
                    actor,
                    subject,
                    action,
                    since,
                };
                audit_cmd::list(after, limit, filter, follow, &cli.api, output).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => cli_error::report(&e, output),
    }
}
