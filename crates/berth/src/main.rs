//! `berth`: argument parsing and wiring only. Each subcommand lives in its own module.

mod agent_cmd;
mod agents_cmd;
mod api_cmd;
mod audit_cmd;
mod backup;
mod cli;
mod cli_api;
mod cli_error;
mod decl_audit;
mod decl_cmd;
mod decl_ledger;
mod decl_rollback;
mod instance_cmd;
mod keygen;
mod offering_cmd;
mod operator;
mod output;
mod progress;
mod provider_serve;
mod pve_backup;
mod pve_cmd;
mod pve_ha;
mod pve_network;
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
        use cli::Command as C;
        match cli.command {
            C::Doctor(a) => berth_agent::doctor::run(&a.config.config, output == cli::OutputFormat::Json).await,
            C::Keygen(args) => keygen::run(&args, output),
            C::Vm(args) => vm::run(args, output, None).await,
            C::Ct(args) => vm::run(args, output, Some(berth_core::GuestKind::Container)).await,
            C::Pve(args) => pve_cmd::run(args, output).await,
            C::Plan(a) => decl_cmd::plan(a, output, false).await,
            C::Drift(a) => decl_cmd::plan(a, output, true).await,
            C::Apply(a) => decl_cmd::apply(a, output).await,
            C::Discover(a) => decl_cmd::discover(a).await,
            C::Checkpoints(a) => decl_rollback::checkpoints(&a, output),
            C::Rollback(a) => decl_rollback::rollback(&a.site, &a.apply_id, a.yes).await,
            C::Server(args) => server_cmd::run(args).await,
            C::Provider(a) => match a.action {
                cli_api::ProviderAction::Serve(s) => provider_serve::run(s).await,
                cli_api::ProviderAction::Create { name } => {
                    api_cmd::accounts("provider", cli_api::AccountAction::Create { name }, &a.api, output).await
                }
                cli_api::ProviderAction::List => {
                    api_cmd::accounts("provider", cli_api::AccountAction::List, &a.api, output).await
                }
            },
            C::Customer(a) => api_cmd::accounts("customer", a.action, &a.api, output).await,
            C::AgentToken(a) => api_cmd::agent_token(a.action, &a.api, output).await,
            C::Token(a) => token_cmd::token(a.action, &a.api, output).await,
            C::Quota(a) => quota_cmd::quota(a.action, &a.api, output).await,
            C::Offering(a) => offering_cmd::offering(a.action, &a.api, output).await,
            C::Order(a) => api_cmd::order(a.action, &a.api, output).await,
            C::Op(a) => api_cmd::op(a.action, &a.api, output).await,
            C::Instance(a) => instance_cmd::instance(a.action, &a.api, output).await,
            C::Template(a) => api_cmd::templates(a.action, &a.api, output).await,
            C::Agent(cli_api::AgentArgs {
                action:
                    Some(
                        a @ (cli_api::AgentAction::List { .. }
                        | cli_api::AgentAction::Show { .. }
                        | cli_api::AgentAction::Revoke { .. }),
                    ),
                ..
            }) => agents_cmd::agents(a, output).await,
            C::Agent(a) => agent_cmd::run(a).await,
            C::Up(a) => up_cmd::run(a).await,
            C::Audit(cli_api::AuditAction::Verify { file: Some(f), .. }) => decl_cmd::verify_audit(&f, output),
            C::Audit(cli_api::AuditAction::Verify { config, file: None }) => {
                server_cmd::audit_verify(&config.config, output).await
            }
            C::Audit(cli_api::AuditAction::List {
                api,
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
                audit_cmd::list(after, limit, filter, follow, &api, output).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => cli_error::report(&e, output),
    }
}
