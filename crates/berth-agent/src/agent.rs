//! The agent: claim work (long-poll) while a backend has a free slot, run each operation in its
//! own task, heartbeat and reconcile on their own schedules, and on shutdown stop claiming, let
//! running work finish within the grace period, then checkpoint it and release its lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::client::Client;
use berth_api::wire::{Claimed, Drift};
use berth_core::{Provider, ProviderError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AgentSettings, CapacitySection};
use crate::heartbeat::{Need, Reading};
use crate::journal::{Entry, Journal, Loaded};
use crate::lease::{Lease, is_refusal};

/// One backend the agent drives, with its own concurrency limit.
pub struct Backend {
    pub name: String,
    pub provider: Arc<dyn Provider>,
    pub slots: Arc<Semaphore>,
    /// Its host's totals and thresholds, when not the agent's `[capacity]`.
    pub capacity: Option<CapacitySection>,
    health: Mutex<(bool, Option<String>)>,
    /// Resources of provisions under way, by instance id (see [`Reservation`]).
    reserved: Mutex<HashMap<String, Need>>,
    /// Reservations given back so far: a host reading older than the last one may miss a
    /// machine (made after the reading, no longer held aside).
    released: AtomicU64,
    circuit: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
    /// A manual backend's request store, where an operator's input from the control plane goes.
    pub manual: Option<Arc<berth_manual::ManualProvider>>,
    /// Health as last reported, to log when it changes.
    reported: Mutex<Option<bool>>,
    /// What the backend can do, asked once (it does not change while the agent runs).
    capabilities: tokio::sync::OnceCell<berth_core::Capabilities>,
    /// Whether the warning that it is unmetered was logged.
    said_unmetered: std::sync::atomic::AtomicBool,
}

impl Backend {
    pub fn new(name: impl Into<String>, provider: Arc<dyn Provider>, concurrency: usize) -> Backend {
        Backend {
            name: name.into(),
            provider,
            slots: Arc::new(Semaphore::new(concurrency)),
            capacity: None,
            health: Mutex::new((true, None)),
            reserved: Mutex::new(HashMap::new()),
            released: AtomicU64::new(0),
            circuit: None,
            manual: None,
            reported: Mutex::new(None),
            capabilities: tokio::sync::OnceCell::new(),
            said_unmetered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Logs, once, that orders for this backend are not checked against any capacity.
    pub(crate) fn note_unmetered(&self) {
        if !self.said_unmetered.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                backend = %self.name,
                "the backend cannot report its capacity and [capacity] sets none: orders are admitted without a capacity check (set cores, memory_mib and disk_gib in [capacity] to limit them)"
            );
        }
    }

    /// What the backend can do: asked once, then remembered (a failed ask is asked again).
    pub async fn capabilities(&self) -> Option<berth_core::Capabilities> {
        self.capabilities
            .get_or_try_init(|| self.provider.capabilities())
            .await
            .ok()
            .copied()
    }

    /// Operator input for this backend's waiting provisions goes to `manual`.
    pub fn with_manual(mut self, manual: Option<Arc<berth_manual::ManualProvider>>) -> Backend {
        self.manual = manual;
        self
    }

    pub fn with_capacity(mut self, capacity: Option<CapacitySection>) -> Backend {
        self.capacity = capacity;
        self
    }

    /// Says, when the backend's circuit breaker is open, why (for the heartbeat).
    pub fn with_circuit(mut self, f: Arc<dyn Fn() -> Option<String> + Send + Sync>) -> Backend {
        self.circuit = Some(f);
        self
    }

    /// Logs a change of the health this backend is reported with: a warning when it turns
    /// unhealthy (the control plane then refuses what only it could take), a note when it recovers.
    pub fn note_health(&self, healthy: bool, detail: Option<&str>) {
        let before = self.reported.lock().expect("health lock").replace(healthy);
        match health_change(before, healthy) {
            Some(HealthChange::Lost) => tracing::warn!(
                backend = %self.name,
                detail = detail.unwrap_or("-"),
                "backend unhealthy: it reports no capacity, so orders for it are refused (no_capacity) until it recovers"
            ),
            Some(HealthChange::Recovered) => tracing::info!(backend = %self.name, "backend healthy again"),
            None => {}
        }
    }

    pub fn health(&self) -> (bool, Option<String>) {
        self.health.lock().expect("health lock").clone()
    }

    pub(crate) fn set_health(&self, healthy: bool, detail: Option<String>) {
        *self.health.lock().expect("health lock") = (healthy, detail);
    }

    pub fn circuit_open(&self) -> Option<String> {
        self.circuit.as_ref().and_then(|f| f())
    }

    /// How many reservations were given back so far (see [`Backend::reserve`]).
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::SeqCst)
    }

    /// The provisions under way on this backend (a copy).
    pub(crate) fn reserved(&self) -> HashMap<String, Need> {
        self.reserved.lock().expect("reserved lock").clone()
    }

    /// Checks `need` against the host's thresholds as `reading` found them (counting the other
    /// provisions under way) and holds it for `instance_id` until the [`Reservation`] is
    /// dropped, however the work ends (finished, failed, or cancelled mid-create).
    pub(crate) fn reserve(
        &self,
        reading: Result<Reading, ProviderError>,
        cfg: &CapacitySection,
        instance_id: &str,
        need: Need,
    ) -> Result<Reservation<'_>, String> {
        let reading = reading.map_err(|e| format!("cannot check the host's capacity: {e}"))?;
        let mut res = self.reserved.lock().expect("reserved lock");
        res.remove(instance_id);
        crate::heartbeat::fits(&crate::heartbeat::report(&reading, &res), cfg, need)?;
        res.insert(instance_id.to_owned(), need);
        Ok(Reservation {
            backend: self,
            instance_id: instance_id.to_owned(),
        })
    }
}

/// A provision's hold on its backend's capacity; given back when dropped.
pub(crate) struct Reservation<'a> {
    backend: &'a Backend,
    instance_id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.backend
            .reserved
            .lock()
            .expect("reserved lock")
            .remove(&self.instance_id);
        self.backend.released.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct Agent {
    pub client: Client,
    pub agent_id: String,
    pub settings: AgentSettings,
    pub backends: Vec<Backend>,
    /// Work under way on this host, over all backends (`agent.concurrency`).
    pub slots: Arc<Semaphore>,
    pub journal: Journal,
    /// Stop claiming (SIGTERM).
    pub shutdown: CancellationToken,
    /// Stop working: checkpoint and release (the grace period is over).
    pub abort: CancellationToken,
    /// One task per operation at a time, even when a lease expired and the work came back.
    active: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tasks: TaskTracker,
    drift: Mutex<Vec<Drift>>,
    /// Which backend holds which instance, and what each backend's templates are.
    pub(crate) routes: crate::route::Routes,
    /// The scheduled site drift check, when `[drift]` configures one.
    pub site: std::sync::OnceLock<Arc<crate::site_drift::SiteWatch>>,
    /// The warm pools, when `[[pool]]` configures any.
    pub pools: std::sync::OnceLock<Arc<crate::pools::Pools>>,
}

impl Agent {
    pub fn new(
        client: Client,
        agent_id: String,
        settings: AgentSettings,
        backends: Vec<Backend>,
    ) -> anyhow::Result<Arc<Agent>> {
        anyhow::ensure!(!backends.is_empty(), "no backend configured");
        let journal = Journal::open(&settings.journal_dir())?;
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        if let Some(dup) = names
            .iter()
            .enumerate()
            .find_map(|(i, n)| names[..i].contains(n).then_some(n))
        {
            anyhow::bail!("two backends are called {dup:?}");
        }
        Ok(Arc::new(Agent {
            client,
            agent_id,
            slots: Arc::new(Semaphore::new(settings.agent.concurrency)),
            settings,
            backends,
            journal,
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            active: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            drift: Mutex::new(Vec::new()),
            routes: Default::default(),
            site: std::sync::OnceLock::new(),
            pools: std::sync::OnceLock::new(),
        }))
    }

    /// Runs until `shutdown` fires and the work has wound down.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        self.recover().await?;
        let hb = tokio::spawn(self.clone().heartbeat_loop());
        let rc = tokio::spawn(self.clone().reconcile_loop());
        let mut keepers = tokio::task::JoinSet::new();
        if let Some(pools) = self.pools.get() {
            crate::pools::keep::sweep_unknown_fills(&self, pools).await;
            for p in pools.all() {
                keepers.spawn(crate::pools::keep(self.clone(), pools.clone(), p.clone()));
            }
        }
        self.clone().claim_loop().await;
        tracing::info!(
            running = self.tasks.len(),
            "stopped claiming; letting running work finish"
        );
        self.tasks.close();
        let grace = Duration::from_secs(self.settings.agent.shutdown_grace_seconds);
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::info!("grace period over: checkpointing and releasing the remaining work");
            self.abort.cancel();
            self.tasks.wait().await;
        }
        // The pools' keepers stop with the claiming (emptying the pools configured so).
        if tokio::time::timeout(grace, async { while keepers.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            keepers.abort_all();
        }
        hb.abort();
        rc.abort();
        Ok(())
    }

    /// The backend an operation runs on: the one its journal entry names, if the configuration
    /// still has it.
    pub(crate) fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The totals and thresholds `b` is held to.
    pub(crate) fn capacity_of<'a>(&'a self, b: &'a Backend) -> &'a CapacitySection {
        b.capacity.as_ref().unwrap_or(&self.settings.capacity)
    }

    /// Claims while the host has a free slot. Which backend runs the work is known only once it
    /// is claimed (the control plane queues per provider), so the work then waits for a slot of
    /// its backend, lease kept; the host's slots bound what is claimed but not yet running.
    async fn claim_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let got = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = self.client.claim(self.settings.claim_wait()) => r,
            };
            match got {
                Ok(Some(c)) => {
                    backoff = Duration::from_millis(500);
                    metrics::counter!("berth_claims_total", "result" => "work").increment(1);
                    let lease = Lease::granted(
                        self.client.clone(),
                        &c.operation_id,
                        c.generation,
                        c.lease_ttl_ms,
                        c.lease_expires_at,
                    );
                    let me = self.clone();
                    self.tasks.spawn(async move {
                        me.take(c, lease).await;
                        drop(permit);
                    });
                }
                Ok(None) => metrics::counter!("berth_claims_total", "result" => "none").increment(1),
                Err(e) => {
                    metrics::counter!("berth_claims_total", "result" => "error").increment(1);
                    tracing::warn!(error = %e, "claim failed; retrying in {backoff:?}");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Claimed work: the journal's history of the same operation (a previous lease of ours) is
    /// kept, so stages and commands done before are not done again. It is read only once no
    /// other task of ours works on the operation (one whose lease ran out may still be winding
    /// down), so it is never older than what that task did.
    /// New work goes to the backend [`Agent::route`] picks; the choice is journaled with it.
    pub(crate) async fn take(self: &Arc<Self>, c: Claimed, lease: Arc<Lease>) {
        let _one_at_a_time = self.lock_op(&c.operation_id).await;
        let entry = match self.journal.load(&c.operation_id) {
            Loaded::Found(mut e) => {
                tracing::info!(operation = %c.operation_id, stages = ?e.stages, "resuming an operation this agent worked on before");
                e.generation = c.generation;
                e.body_limit_bytes = c.body_limit_bytes.or(e.body_limit_bytes);
                *e
            }
            found => {
                let mut e = Entry::new(
                    &c.operation_id,
                    &c.instance_id,
                    &c.kind,
                    c.generation,
                    c.payload.clone(),
                );
                e.body_limit_bytes = c.body_limit_bytes;
                if let Loaded::Unreadable(why) = found {
                    tracing::error!(operation = %c.operation_id, "the operation's history is lost: {why}");
                    e.history_lost = Some(why);
                }
                match self.route(&c.kind, &c.instance_id, &c.payload).await {
                    Ok(b) => e.backend = b,
                    Err(why) => {
                        e.backend = self.backends[0].name.clone();
                        e.outcome = Some(why);
                    }
                }
                e
            }
        };
        if let Err(e) = self.journal.save(&entry) {
            // Without a journal the work is not crash-safe: give it back rather than run it.
            tracing::error!(operation = %c.operation_id, error = %e, "cannot journal the claimed work; releasing it");
            let _ = self.client.release(&c.operation_id, c.generation).await;
            return;
        }
        self.operate_locked(entry, lease).await;
    }

    /// After a restart: work whose lease is still ours resumes; the rest waits in the journal
    /// for its operation to be claimed again (by us: resumed with its history), or for
    /// reconcile to find it finished elsewhere.
    async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        let entries = self.journal.load_all()?;
        for e in entries {
            match self.client.renew(&e.operation_id, e.generation).await {
                Ok(l) => {
                    tracing::info!(operation = %e.operation_id, kind = %e.kind, "resuming work after a restart");
                    let lease = Lease::granted(
                        self.client.clone(),
                        &e.operation_id,
                        e.generation,
                        l.ttl_ms,
                        l.expires_at,
                    );
                    let me = self.clone();
                    let permit = self.slots.clone().acquire_owned().await?;
                    self.tasks.spawn(async move {
                        let _one_at_a_time = me.lock_op(&e.operation_id).await;
                        me.operate_locked(e, lease).await;
                        drop(permit);
                    });
                }
                Err(err) if is_refusal(&err) => {
                    tracing::info!(operation = %e.operation_id, "lease gone after the restart; the operation will be claimed again");
                }
                Err(err) => {
                    // The control plane is away: try the lease again by claiming later; the
                    // entry stays.
                    tracing::warn!(operation = %e.operation_id, error = %err, "cannot reach the control plane to resume");
                }
            }
        }
        Ok(())
    }

    /// Waits until no other task of ours works on `operation_id`, and holds it until dropped.
    pub(crate) async fn lock_op(&self, operation_id: &str) -> OpGuard<'_> {
        let m = self.op_lock(operation_id);
        let guard = m.lock_owned().await;
        OpGuard {
            agent: self,
            operation_id: operation_id.to_owned(),
            guard: Some(guard),
        }
    }

    fn op_lock(&self, operation_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.active
            .lock()
            .expect("active lock")
            .entry(operation_id.to_owned())
            .or_default()
            .clone()
    }

    fn op_unlock(&self, operation_id: &str) {
        let mut a = self.active.lock().expect("active lock");
        if a.get(operation_id).is_some_and(|m| Arc::strong_count(m) == 1) {
            a.remove(operation_id);
        }
    }

    pub(crate) fn is_active(&self, operation_id: &str) -> bool {
        self.active.lock().expect("active lock").contains_key(operation_id)
    }

    pub(crate) fn set_drift(&self, d: Vec<Drift>) {
        *self.drift.lock().expect("drift lock") = d;
    }

    pub fn drift(&self) -> Vec<Drift> {
        self.drift.lock().expect("drift lock").clone()
    }
}

/// One operation's turn on this agent (see [`Agent::lock_op`]).
pub(crate) struct OpGuard<'a> {
    agent: &'a Agent,
    operation_id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        self.agent.op_unlock(&self.operation_id);
    }
}

/// A change of a backend's reported health worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealthChange {
    /// Unhealthy now (at start, or after being healthy): a warning.
    Lost,
    /// Healthy again after being unhealthy.
    Recovered,
}

/// What turning from `before` (`None`: nothing reported yet) to `now` is: each change is said
/// once, a steady state never.
fn health_change(before: Option<bool>, now: bool) -> Option<HealthChange> {
    match (before, now) {
        (Some(true) | None, false) => Some(HealthChange::Lost),
        (Some(false), true) => Some(HealthChange::Recovered),
        _ => None,
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn each_change_of_health_is_said_once() {
        let mut before = None;
        let mut said = Vec::new();
        for now in [true, true, false, false, false, true, true, false] {
            said.push(health_change(before, now));
            before = Some(now);
        }
        use HealthChange::*;
        assert_eq!(
            said,
            [None, None, Some(Lost), None, None, Some(Recovered), None, Some(Lost)]
        );
        // Unhealthy from the start is said too.
        assert_eq!(health_change(None, false), Some(Lost));
    }
}
