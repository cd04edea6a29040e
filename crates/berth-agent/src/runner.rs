//! From a loaded configuration to a running agent: the signed client from the enrollment, the
//! backends, each behind its own rate limit and circuit breaker, the metrics listener, and the agent's
//! loops on their own task.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::agent::{Agent, Backend};
use crate::config::Config;
use crate::guard::{CircuitState, Guarded};
use crate::identity;

pub struct Running {
    pub agent: Arc<Agent>,
    /// Where `/metrics` is served, when configured.
    pub metrics: Option<SocketAddr>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stop claiming; running work finishes within the grace period, then is released.
    pub fn shutdown(&self) {
        self.agent.shutdown.cancel();
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the agent task failed")?
    }
}

pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let settings = crate::cmd::settings(config)?;
    let (client, enrollment) = identity::signed_client(&settings)?;
    let mut backends = Vec::with_capacity(config.backends.len());
    for bc in &config.backends {
        let inner = crate::build_provider(config, bc)?;
        let guarded = Arc::new(Guarded::new(bc.name.clone(), inner, bc.rate_limit, bc.circuit_breaker));
        let g = guarded.clone();
        let concurrency = bc.concurrency.unwrap_or(settings.agent.concurrency);
        let manual = match bc.kind() {
            crate::config::BackendKind::Manual => Some(Arc::new(crate::manual_provider(config, Some(&bc.name))?)),
            _ => None,
        };
        let backend = Backend::new(bc.name.clone(), guarded, concurrency)
            .with_capacity(bc.capacity.clone())
            .with_manual(manual)
            .with_circuit(Arc::new(move || {
                let state = match g.state() {
                    CircuitState::Closed => return None,
                    CircuitState::Open => "open",
                    CircuitState::HalfOpen => "half-open (one trial call at a time)",
                };
                Some(format!("circuit breaker {state}: the backend kept failing"))
            }));
        backends.push(backend);
    }
    let metrics_listen = settings.agent.metrics_listen;
    let agent = Agent::new(client, enrollment.agent_id, settings, backends)?;
    crate::metrics_http::handle();
    crate::guard::describe_metrics();
    crate::metrics_http::describe(&config.backends.iter().map(|b| b.name.clone()).collect::<Vec<_>>());
    // Metrics at the default address are a convenience: taken (a second agent on this host),
    // that is said and the agent runs without them. An address the file names is meant: one
    // that cannot be used stops the start, as any other bad setting does.
    let metrics = match metrics_listen.address() {
        Some(addr) => match crate::metrics_http::serve(addr, agent.shutdown.clone()).await {
            Ok(a) => Some(a),
            Err(e) if metrics_listen == crate::config::MetricsListen::Default => {
                tracing::warn!(%addr, error = %format!("{e:#}"), "metrics not served (set agent.metrics_listen to another address, or \"off\")");
                None
            }
            Err(e) => {
                agent.shutdown.cancel();
                return Err(e);
            }
        },
        None => None,
    };
    if let Some(d) = &config.drift {
        let bc = config.backend(Some(&d.backend))?;
        let crate::config::BackendSettings::Proxmox(px) = &bc.settings else {
            anyhow::bail!("drift.backend {}: not a proxmox backend", d.backend);
        };
        let watch = Arc::new(crate::site_drift::SiteWatch::new(d.clone(), px)?);
        let _ = agent.site.set(watch.clone());
        tokio::spawn(watch.run(agent.shutdown.clone()));
    }
    if !config.pools.is_empty() {
        // The machines journaled operations are taking are theirs, not anyone else's.
        let taking: Vec<crate::pools::PoolTake> = agent
            .journal
            .load_all()?
            .into_iter()
            .filter_map(|e| e.pool_take)
            .collect();
        let pools = crate::pools::Pools::new(config.pools.clone(), &agent.settings.agent.state_dir, &taking)?;
        crate::pools::describe_metrics(&config.pools);
        let _ = agent.pools.set(Arc::new(pools));
    }
    let task = tokio::spawn(agent.clone().run());
    Ok(Running { agent, metrics, task })
}
