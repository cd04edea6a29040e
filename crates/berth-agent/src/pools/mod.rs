//! Warm pools on the agent (`[[pool]]`): each pool keeps `ready` machines of one template and
//! size made ahead of orders on one backend. An order that fits a pool takes a ready machine
//! (`Provider::take`: the marker moves from the pool machine to the instance, the commit point);
//! a miss falls back to a normal create. Each pool is kept by one task ([`keep`]) that lists its
//! machines, drains those of another definition, and refills one machine at a time, only with a
//! free backend slot (orders come first) and within the host's thresholds.
//!
//! Crash safety: a fill is recorded on disk before it starts and forgotten once its machine is
//! in the pool, so a machine cut off mid-fill is finished (or deleted) after a restart; a take is
//! journaled with its operation before it starts, so the resumed operation finishes that take
//! (`take` is idempotent by the instance) or, when the machine is gone, creates normally. A
//! machine is thus either in its pool (its own marker) or its instance's, never both, never lost.

pub mod keep;
mod take;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::wire::PoolReport;
use berth_core::{InstanceId, PoolMark, VmSpec};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::PoolSettings;

pub use keep::keep;

/// A take, as journaled with its operation before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolTake {
    /// The pool machine's id.
    pub machine: String,
    pub pool: String,
    pub key: String,
    pub mode: berth_core::PoolMode,
}

impl PoolTake {
    pub fn mark(&self) -> Option<PoolMark> {
        PoolMark::new(&self.pool, &self.key).ok()
    }
}

/// One pool and what is known of its machines.
pub struct Pool {
    pub cfg: PoolSettings,
    pub mark: PoolMark,
    state: Mutex<State>,
    /// Wakes the keeper (a machine was taken, a drain was asked for).
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Machines ready to take, oldest first.
    ready: Vec<InstanceId>,
    /// Machines handed to an order and not yet taken: never offered twice.
    claimed: HashSet<InstanceId>,
    filling: u32,
    target: u32,
    hits: u64,
    misses: u64,
    last_fill_ms: Option<u64>,
    detail: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    fn new(cfg: PoolSettings) -> Pool {
        Pool {
            mark: cfg.mark(),
            state: Mutex::new(State {
                target: cfg.ready,
                ..State::default()
            }),
            cfg,
            wake: Notify::new(),
        }
    }

    /// An order found a ready machine; the machine leaves the ready list (and is not listed as
    /// ready again while the order holds it).
    fn claim(self: &Arc<Self>) -> Option<Claim> {
        let mut s = lock(&self.state);
        if s.ready.is_empty() {
            return None;
        }
        let machine = s.ready.remove(0);
        s.claimed.insert(machine.clone());
        metrics::gauge!("berth_pool_ready", "pool" => self.cfg.name.clone()).set(s.ready.len() as f64);
        drop(s);
        self.wake.notify_one();
        Some(Claim {
            pool: self.clone(),
            machine,
        })
    }

    pub fn hit(&self) {
        lock(&self.state).hits += 1;
        metrics::counter!("berth_pool_hits_total", "pool" => self.cfg.name.clone()).increment(1);
    }

    pub fn miss(&self) {
        lock(&self.state).misses += 1;
        metrics::counter!("berth_pool_misses_total", "pool" => self.cfg.name.clone()).increment(1);
    }

    pub fn report(&self) -> PoolReport {
        let s = lock(&self.state);
        PoolReport {
            name: self.cfg.name.clone(),
            backend: self.cfg.backend.clone(),
            template: self.cfg.template.clone(),
            cores: self.cfg.cores,
            memory_mib: self.cfg.memory_mib,
            disk_gib: self.cfg.disk_gib,
            mode: self.cfg.mode.to_string(),
            target: s.target,
            ready: u32::try_from(s.ready.len()).unwrap_or(u32::MAX),
            filling: s.filling,
            hits: s.hits,
            misses: s.misses,
            last_fill_ms: s.last_fill_ms,
            detail: s.detail.clone(),
        }
    }
}

/// A ready machine handed to one order; given back to the keeper's view when dropped (taken
/// by then, or still in the pool for the next listing to find).
pub struct Claim {
    pub pool: Arc<Pool>,
    pub machine: InstanceId,
}

impl Claim {
    pub fn take(&self) -> PoolTake {
        PoolTake {
            machine: self.machine.to_string(),
            pool: self.pool.cfg.name.clone(),
            key: self.pool.mark.key.clone(),
            mode: self.pool.cfg.mode,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.pool.state).claimed.remove(&self.machine);
        self.pool.wake.notify_one();
    }
}

/// The agent's pools.
pub struct Pools {
    pools: Vec<Arc<Pool>>,
    /// `<state_dir>/pools`: fill records and the drain request.
    dir: PathBuf,
}

/// What an order found.
pub enum Found {
    /// A ready machine, now the order's to take.
    Hit(Claim),
    /// The order fits this pool, but nothing is ready.
    Miss(Arc<Pool>),
    /// No pool makes this kind of machine.
    NoPool,
}

impl Pools {
    /// `taking`: the machines journaled operations are taking (never offered to another order).
    pub fn new(settings: Vec<PoolSettings>, state_dir: &Path, taking: &[PoolTake]) -> anyhow::Result<Pools> {
        let dir = state_dir.join("pools");
        crate::fsutil::ensure_private_dir(&dir.join("fills"))?;
        let pools: Vec<Arc<Pool>> = settings.into_iter().map(|c| Arc::new(Pool::new(c))).collect();
        for t in taking {
            if let (Some(p), Ok(id)) = (
                pools.iter().find(|p| p.cfg.name == t.pool),
                InstanceId::parse(&t.machine),
            ) {
                lock(&p.state).claimed.insert(id);
            }
        }
        Ok(Pools { pools, dir })
    }

    pub fn all(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.cfg.name == name)
    }

    /// The pool an order for `spec` on `backend` fits, and a ready machine of it if there is one.
    pub fn find(&self, backend: &str, spec: &VmSpec) -> Found {
        let fitting: Vec<&Arc<Pool>> = self
            .pools
            .iter()
            .filter(|p| p.cfg.backend == backend && p.cfg.fits(spec))
            .collect();
        // The smallest disk first: the least to resize.
        let mut by_disk = fitting;
        by_disk.sort_by_key(|p| p.cfg.disk_gib);
        for p in &by_disk {
            if let Some(c) = p.claim() {
                return Found::Hit(c);
            }
        }
        match by_disk.first() {
            Some(p) => Found::Miss((*p).clone()),
            None => Found::NoPool,
        }
    }

    /// The machine a journaled take names, held for that operation while it finishes.
    pub fn reclaim(&self, t: &PoolTake) -> Option<Claim> {
        let pool = self.get(&t.pool)?.clone();
        let machine = InstanceId::parse(&t.machine).ok()?;
        lock(&pool.state).claimed.insert(machine.clone());
        Some(Claim { pool, machine })
    }

    pub fn reports(&self) -> Vec<PoolReport> {
        self.pools.iter().map(|p| p.report()).collect()
    }

    fn drain_file(&self) -> PathBuf {
        self.dir.join("drain")
    }

    fn fills_dir(&self) -> PathBuf {
        self.dir.join("fills")
    }
}

/// The pools a drain request names (`*`: all), as `berth agent drain` wrote it.
fn drained(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `berth agent drain`: asks the running agent (or the next one to start) to empty `pools`
/// (none named: all) and keep them empty, until `undo`. `configured`: every pool's name (undoing
/// one pool of an all-pools drain leaves the others drained).
pub fn request_drain(
    state_dir: &Path,
    pools: &[String],
    undo: bool,
    configured: &[String],
) -> anyhow::Result<Vec<String>> {
    let dir = state_dir.join("pools");
    crate::fsutil::ensure_private_dir(&dir)?;
    let path = dir.join("drain");
    let mut now = drained(&path);
    let named: Vec<String> = if pools.is_empty() {
        vec!["*".into()]
    } else {
        pools.to_vec()
    };
    if undo {
        if pools.is_empty() {
            now.clear();
        } else {
            if now.iter().any(|p| p == "*") {
                now = configured.to_vec();
            }
            now.retain(|p| !named.contains(p));
        }
    } else {
        for p in named {
            if !now.contains(&p) {
                now.push(p);
            }
        }
    }
    if now.is_empty() {
        crate::fsutil::remove_durable(&path)?;
    } else {
        crate::fsutil::write_atomic(&path, format!("{}\n", now.join("\n")).as_bytes(), 0o600)?;
    }
    Ok(now)
}

/// Registers the pool metrics, at zero for each configured pool.
pub fn describe_metrics(pools: &[PoolSettings]) {
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
    describe_counter!("berth_pool_hits_total", "Orders that took a warm pool machine");
    describe_counter!(
        "berth_pool_misses_total",
        "Orders that fit a warm pool but found no machine ready"
    );
    describe_gauge!("berth_pool_ready", "Warm pool machines ready to take");
    describe_histogram!(
        "berth_pool_fill_seconds",
        Unit::Seconds,
        "How long making one warm pool machine took"
    );
    for p in pools {
        counter!("berth_pool_hits_total", "pool" => p.name.clone()).increment(0);
        counter!("berth_pool_misses_total", "pool" => p.name.clone()).increment(0);
        gauge!("berth_pool_ready", "pool" => p.name.clone()).set(0.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_drain_names_pools_and_undoing_one_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let all = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let drain = |pools: &[&str], undo: bool| {
            let pools: Vec<String> = pools.iter().map(|p| p.to_string()).collect();
            super::request_drain(dir.path(), &pools, undo, &all).unwrap()
        };
        assert_eq!(drain(&[], false), ["*"]);
        assert_eq!(drain(&["b"], true), ["a", "c"], "all but b stay drained");
        assert_eq!(drain(&["b"], false), ["a", "c", "b"]);
        assert!(drain(&[], true).is_empty());
        assert!(
            !dir.path().join("pools/drain").exists(),
            "nothing drained: no request file"
        );
        assert_eq!(drain(&["c"], false), ["c"]);
        assert_eq!(super::drained(&dir.path().join("pools/drain")), ["c"]);
    }
}
