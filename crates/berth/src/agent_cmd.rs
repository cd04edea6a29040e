//! `berth agent`: run the agent from `berth.toml` until SIGINT/SIGTERM, or enroll it with a
//! setup token. On a signal it stops claiming, lets running work finish within
//! `agent.shutdown_grace_seconds`, then checkpoints and releases what is left.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use berth_agent::{Config, identity, runner};

use crate::cli_api::{AgentAction, AgentArgs};

pub fn load(config: &Path) -> anyhow::Result<Config> {
    berth_agent::load_config(config).map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn run(args: AgentArgs, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    let settings = cfg.agent.clone().with_context(|| {
        format!(
            "{}: no [api] table (api.endpoint names the control plane)",
            config.display()
        )
    })?;
    match args.action {
        Some(AgentAction::Enroll { token, name }) => {
            let e = identity::enroll(&settings, token.trim(), name.as_deref()).await?;
            println!(
                "enrolled as agent {} ({}) under provider {} with {}",
                e.agent_id, e.name, e.provider_id, e.endpoint
            );
            println!("key: {}", settings.key_file.display());
            Ok(ExitCode::SUCCESS)
        }
        None | Some(AgentAction::Run) => {
            let stop = crate::server_cmd::StopSignal::install()?;
            let running = runner::start(&cfg).await?;
            eprintln!(
                "berth agent {} working for {} (backends {}, {} at a time)",
                running.agent.agent_id,
                settings.endpoint,
                cfg.describe_backends(),
                settings.agent.concurrency
            );
            if let Some(m) = running.metrics {
                eprintln!("metrics: http://{m}/metrics");
            }
            stop.wait().await;
            eprintln!("stopping: no new work; running work finishes or is checkpointed and released");
            running.shutdown();
            running.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
