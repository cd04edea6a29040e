//! The agent's commands, shared by `berth agent` and the lean `berth-agent` binary: run until
//! SIGINT/SIGTERM, or enroll with a setup token. On a signal the agent stops claiming, lets
//! running work finish within `agent.shutdown_grace_seconds`, then checkpoints and releases
//! what is left.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::{AgentSettings, Config, identity, runner};

/// SIGINT and SIGTERM, caught from the moment of `install` (a signal before the wait is kept).
pub struct StopSignal {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignal {
    pub fn install() -> anyhow::Result<StopSignal> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignal {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Logs to stderr; `BERTH_LOG` (an env-filter) overrides the default level.
pub fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        "info,berth=debug,berth_agent=debug,berth_proxmox=debug"
    } else {
        "warn,rustls=off,berth=info,berth_agent=info,berth_proxmox=info"
    };
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The configuration's agent tables, or an error saying `[api]` is missing.
pub fn settings(cfg: &Config) -> anyhow::Result<AgentSettings> {
    cfg.agent.clone().with_context(|| {
        format!(
            "{}: no [api] table (api.endpoint names the control plane)",
            cfg.path.display()
        )
    })
}

/// `enroll`'s arguments, the same in `berth agent enroll` and `berth-agent enroll`.
#[derive(clap::Args, Debug)]
pub struct EnrollArgs {
    /// The setup token (`berth agent-token create`); or set BERTH_SETUP_TOKEN.
    #[arg(long, env = "BERTH_SETUP_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The name to enroll under (default: agent.name, else the host name).
    #[arg(long)]
    pub name: Option<String>,
}

/// Registers the agent's key (made if absent) with a single-use setup token.
pub async fn enroll(cfg: &Config, args: &EnrollArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(cfg)?;
    let e = identity::enroll(&settings, args.token.trim(), args.name.as_deref()).await?;
    println!(
        "enrolled as agent {} ({}) under provider {} with {}",
        e.agent_id, e.name, e.provider_id, e.endpoint
    );
    println!("key: {}", settings.key_file.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs the agent until SIGINT or SIGTERM, then winds it down.
pub async fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let stop = StopSignal::install()?;
    let running = runner::start(cfg).await?;
    let settings = &running.agent.settings;
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
    notify_ready(&format!("working for {}", settings.endpoint));
    stop.wait().await;
    eprintln!("stopping: no new work; running work finishes or is checkpointed and released");
    running.shutdown();
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// `status`: what this agent is and is doing, from its own files and from the control plane:
/// its identity, each backend, the operations its journal holds (claimed and not yet
/// acknowledged: their lease generation, the stages done, whether the outcome is decided), and
/// how the control plane sees it (heartbeat, backends' health, version skew).
pub async fn status(cfg: &Config) -> anyhow::Result<ExitCode> {
    let settings = settings(cfg)?;
    let enrolled = identity::load_enrollment(&settings);
    match &enrolled {
        Ok(e) => println!(
            "agent {} ({}) of provider {}, control plane {}",
            e.agent_id, e.name, e.provider_id, e.endpoint
        ),
        Err(e) => println!("not enrolled: {e:#}"),
    }
    println!("backends:");
    for b in &cfg.backends {
        println!("  {} ({})", b.name, b.kind().as_str());
    }
    let entries = crate::journal::Journal::open(&settings.journal_dir())?.load_all()?;
    if entries.is_empty() {
        println!("journal: no operation in progress");
    } else {
        println!(
            "journal: {} operation(s) not yet acknowledged by the control plane:",
            entries.len()
        );
        for e in entries {
            let stages = if e.stages.is_empty() {
                "none".to_owned()
            } else {
                e.stages.join(", ")
            };
            let decided = if e.outcome.is_some() {
                "; outcome decided, being reported"
            } else {
                ""
            };
            println!(
                "  {} {} of instance {} on {} (lease generation {}): stages done: {stages}{decided}",
                e.operation_id, e.kind, e.instance_id, e.backend, e.generation
            );
        }
    }
    let state = &settings.agent.state_dir;
    if !cfg.pools.is_empty() {
        println!("warm pools (as configured; the control plane's view below has their counts):");
        for p in &cfg.pools {
            println!(
                "  {} on {}: {} ready wanted, {}, template {}, {} cores, {} MiB, {} GiB",
                p.name,
                p.backend,
                p.ready,
                p.mode,
                p.template.as_deref().unwrap_or("(the backend's default)"),
                p.cores,
                p.memory_mib,
                p.disk_gib
            );
        }
    }
    let q = crate::release::quarantined(state);
    if q.orphans.is_empty() {
        println!("quarantine: empty");
    } else {
        println!("quarantine: machines stopped because the control plane does not expect them:");
        for (id, o) in &q.orphans {
            println!(
                "  {id} on {} ({}) since {}; `berth agent release {id}` hands it to you",
                o.backend,
                o.vm_id,
                berth_core::utc(o.since)
            );
        }
    }
    for (id, r) in crate::release::released(state) {
        println!(
            "released: {id} on {} ({}) at {}: left alone",
            r.backend,
            r.vm_id,
            berth_core::utc(r.at)
        );
    }
    if enrolled.is_ok() {
        let seen = match identity::signed_client(&settings) {
            Ok((client, _)) => client.me().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match seen {
            Ok(v) => {
                let state = if v.alive {
                    "alive"
                } else {
                    "not alive (no recent heartbeat)"
                };
                let last = v.last_seen.map(berth_core::utc).unwrap_or_else(|| "never".into());
                println!("control plane: {state}, last heartbeat {last}");
                for b in v.heartbeat.iter().flat_map(|h| &h.backends) {
                    let health = if b.healthy { "healthy" } else { "UNHEALTHY" };
                    println!(
                        "  {} {health}{}",
                        b.name,
                        b.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
                    );
                }
                if let Some(skew) = v.version_skew {
                    println!("  {skew}");
                }
                for p in v.heartbeat.iter().flat_map(|h| &h.pools) {
                    println!("  {}", pool_line(p));
                }
            }
            Err(e) => println!("control plane: not reached ({e:#})"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One pool as the heartbeat reports it: `pool web: 3/5 ready (1 being made), stopped, 12 hits, 2 misses`.
pub fn pool_line(p: &berth_api::wire::PoolReport) -> String {
    let mut s = format!("pool {}: {}/{} ready", p.name, p.ready, p.target);
    if p.filling > 0 {
        s.push_str(&format!(" ({} being made)", p.filling));
    }
    s.push_str(&format!(", {}, {} hits, {} misses", p.mode, p.hits, p.misses));
    if let Some(ms) = p.last_fill_ms {
        s.push_str(&format!(", last made in {:.1} s", ms as f64 / 1000.0));
    }
    if let Some(d) = &p.detail {
        s.push_str(&format!(": {d}"));
    }
    s
}

/// Tells systemd (`Type=notify` units) that the service is up; not under systemd (no
/// `$NOTIFY_SOCKET`) it does nothing.
pub fn notify_ready(status: &str) {
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(e) = notify(&socket, &format!("READY=1\nSTATUS={status}\n"))
    {
        tracing::warn!(error = %e, "cannot tell systemd that the service is ready");
    }
}

/// One datagram to the notification socket (a path, or `@name` in the abstract namespace).
fn notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(message.as_bytes(), std::path::Path::new(socket))?;
        }
    }
    Ok(())
}

/// `drain`'s arguments, the same in `berth agent drain` and `berth-agent drain`.
#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// A pool to drain (repeat for several; default: every pool).
    #[arg(long = "pool", value_name = "NAME")]
    pub pools: Vec<String>,
    /// Keep the pools filled again.
    #[arg(long)]
    pub undo: bool,
}

/// `drain`: the running agent (or the next to start) deletes the ready machines of the pools
/// named and keeps those pools empty, until `--undo`.
pub fn drain(cfg: &Config, args: &DrainArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(cfg)?;
    if cfg.pools.is_empty() {
        anyhow::bail!("{}: no [[pool]] is configured", cfg.path.display());
    }
    for p in &args.pools {
        if !cfg.pools.iter().any(|c| &c.name == p) {
            let names: Vec<&str> = cfg.pools.iter().map(|c| c.name.as_str()).collect();
            anyhow::bail!("--pool {p}: no such pool (configured: {})", names.join(", "));
        }
    }
    let names: Vec<String> = cfg.pools.iter().map(|c| c.name.clone()).collect();
    let now = crate::pools::request_drain(&settings.agent.state_dir, &args.pools, args.undo, &names)?;
    let all = now.iter().any(|p| p == "*");
    for c in &cfg.pools {
        let drained = all || now.contains(&c.name);
        println!(
            "pool {}: {}",
            c.name,
            if drained {
                "drained (its ready machines are deleted; none are made)".to_owned()
            } else {
                format!("kept ({} ready)", c.ready)
            }
        );
    }
    println!("the running agent acts on it within a few seconds (`berth agent status` shows the pools)");
    Ok(ExitCode::SUCCESS)
}

/// `berth agent release ID`: hands a quarantined machine to the operator; the running agent
/// leaves it alone from its next reconcile pass on.
pub fn release(cfg: &Config, instance_id: &str) -> anyhow::Result<ExitCode> {
    let settings = settings(cfg)?;
    let o = crate::release::release(&settings.agent.state_dir, instance_id)?;
    println!(
        "released {instance_id} ({} on {}): the agent no longer stops, deletes or reports it; \
         it is yours (`berth vm start {instance_id}`, `berth vm delete {instance_id}`)",
        o.vm_id, o.backend
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn readiness_reaches_the_notification_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::notify(path.as_os_str(), "READY=1\nSTATUS=up\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up\n");
        assert!(super::notify(dir.path().join("absent").as_os_str(), "READY=1").is_err());
    }
}
