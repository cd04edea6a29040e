//! `berth server`: runs the control plane from `server.toml` until SIGINT/SIGTERM, making the
//! first operator token if the database has none; `berth audit verify`: checks the audit
//! chain offline, straight from the database.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use berth_server::ServerConfig;

use crate::cli::OutputFormat;
use crate::cli_api::{ServerAction, ServerArgs};

/// Where the first operator token goes: the configured file, else beside the SQLite database,
/// else `./operator.token`.
fn token_file(cfg: &ServerConfig) -> PathBuf {
    if let Some(f) = &cfg.api.operator_token_file {
        return f.clone();
    }
    match &cfg.database.sqlite {
        Some(db) => db.with_file_name("operator.token"),
        None => PathBuf::from("operator.token"),
    }
}

/// The HTTP app: the API and the dashboard (the default feature `dashboard`).
#[cfg(feature = "dashboard")]
pub fn app(state: berth_server::AppState) -> axum::Router {
    berth_web::app(state)
}

/// The HTTP app: the API alone (built without the `dashboard` feature).
#[cfg(not(feature = "dashboard"))]
pub fn app(state: berth_server::AppState) -> axum::Router {
    berth_server::router(state)
}

pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.config.as_path();
    match args.action {
        Some(ServerAction::Openapi) => {
            println!("{}", serde_json::to_string_pretty(&berth_server::openapi())?);
            return Ok(ExitCode::SUCCESS);
        }
        Some(ServerAction::Backup { to }) => return crate::backup::backup(config, &to).await,
        Some(ServerAction::Restore { from, force }) => return crate::backup::restore(config, &from, force).await,
        None => {}
    }
    let stop = berth_agent::cmd::StopSignal::install()?;
    let cfg = ServerConfig::load(config)?;
    let store = berth_server::open_store(&cfg).await?;
    let file = token_file(&cfg);
    if berth_server::bootstrap_operator(&*store, &file).await? {
        eprintln!("wrote the first operator API token to {} (mode 0600)", file.display());
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = berth_server::start_app(cfg, store, app).await?;
    let url = running.url();
    eprintln!("berth server listening on {url}");
    if let Some(t) = &running.tls {
        eprintln!(
            "TLS certificate sha256:{} (pin it with --tls-fingerprint / tls_fingerprint; SIGHUP reloads it)",
            t.fingerprint()
        );
    }
    eprintln!("OpenAPI document: {url}/api/v1/openapi.json");
    if cfg!(feature = "dashboard") {
        eprintln!("dashboard: {url}/ (sign in with an API token)");
    }
    berth_agent::cmd::notify_ready(&format!("listening on {url}"));
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = hup.recv() => running.reload_tls(),
        }
    }
    eprintln!("shutting down: finishing requests in flight");
    running.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_verify(config: &Path, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let cfg = ServerConfig::load(config)?;
    let store = berth_server::open_store(&cfg).await.context("opening the database")?;
    let v = berth_server::routes::audit::verification(store.verify_audit().await?);
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        OutputFormat::Human if v.ok => println!(
            "audit log intact: {} entries, head {}",
            v.entries,
            v.last_hash.as_deref().unwrap_or("-")
        ),
        OutputFormat::Human => println!(
            "audit log BROKEN at entry {}: {}",
            v.broken_at.unwrap_or_default(),
            v.reason.as_deref().unwrap_or_default()
        ),
    }
    Ok(if v.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
