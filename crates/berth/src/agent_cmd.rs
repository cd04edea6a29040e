//! `berth agent`: run the agent from `berth.toml`, or enroll it (`berth_agent::cmd`).

use std::path::Path;
use std::process::ExitCode;

use berth_agent::{Config, cmd};

use crate::cli_api::{AgentAction, AgentArgs};

pub fn load(config: &Path) -> anyhow::Result<Config> {
    berth_agent::load_config(config).map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.config.as_path();
    let cfg = load(config)?;
    match args.action {
        Some(AgentAction::Enroll(a)) => cmd::enroll(&cfg, &a).await,
        Some(AgentAction::Status) => cmd::status(&cfg).await,
        Some(AgentAction::Release { instance_id }) => cmd::release(&cfg, &instance_id),
        Some(AgentAction::Drain(a)) => cmd::drain(&cfg, &a),
        None | Some(AgentAction::Run) => cmd::run(&cfg).await,
        Some(AgentAction::List { .. } | AgentAction::Show { .. } | AgentAction::Revoke { .. }) => {
            unreachable!("the API's agent commands are dispatched in main")
        }
    }
}
