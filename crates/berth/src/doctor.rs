//! `berth doctor`: the configuration file first, then every check the backend offers, one line
//! each; exits non-zero if anything failed.

use std::path::Path;
use std::process::ExitCode;

use berth_core::{Check, CheckStatus};

use crate::cli::OutputFormat;

pub async fn run(path: &Path, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    match berth_agent::load_config(path) {
        Err(e) => checks.push(Check::fail("config", e.to_string())),
        Ok(config) => {
            checks.push(Check::ok(
                "config",
                format!("{} is valid (backend {})", path.display(), config.backend.as_str()),
            ));
            match berth_agent::build_provider(&config) {
                Err(e) => checks.push(Check::fail("backend", e.to_string())),
                Ok(provider) => checks.extend(provider.validate().await),
            }
        }
    }
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let tag = match c.status {
                CheckStatus::Ok => " ok ",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "FAIL",
            };
            println!("[{tag}] {:<22} {}", c.name, c.detail);
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
