//! The keeper of one pool: lists its machines, drains those of another definition (and those
//! above the target), refills one machine at a time while below it. A fill runs only with a free
//! backend slot (an order waiting for one goes first) and within the host's thresholds; it is
//! recorded on disk before it starts, so a fill cut off by a crash is finished after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::{GuestKind, InstanceId, InstanceRef, ListFilter, NoProgress, PoolMode, PowerState, VmSpec};
use serde::{Deserialize, Serialize};

use super::{Pool, Pools, drained, lock};
use crate::agent::{Agent, Backend};
use crate::heartbeat::Need;
use crate::work::failpoint;

/// How often a pool is listed again without a reason to.
const REFRESH: Duration = Duration::from_secs(30);
/// How soon to look again when every backend slot was busy with orders.
const BUSY: Duration = Duration::from_secs(1);
/// How often the drain request (`berth agent drain`) is looked at between passes.
const DRAIN_LOOK: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A fill under way, on disk from before it starts until its machine is in the pool.
#[derive(Debug, Serialize, Deserialize)]
struct FillRecord {
    machine: String,
    pool: String,
    key: String,
    mode: PoolMode,
}

/// How a pass ended.
enum Next {
    /// The pool is as it should be (or is being made so): look again later.
    Settled,
    /// Below its target, but the backend's slots were all busy with orders.
    Busy,
}

impl Pool {
    /// A new pool machine's spec: its own id as its name, the pool's template and size, no keys.
    fn spec(&self, id: &InstanceId) -> VmSpec {
        VmSpec {
            instance_id: id.clone(),
            name: id.to_string(),
            kind: GuestKind::Vm,
            cores: self.cfg.cores,
            memory_mib: self.cfg.memory_mib,
            disk_gib: self.cfg.disk_gib,
            template: self.cfg.template.clone(),
            ssh_keys: Vec::new(),
            user: None,
            network: Default::default(),
        }
    }

    fn say(&self, detail: Option<String>) {
        lock(&self.state).detail = detail;
    }
}

/// Keeps `pool` until the agent shuts down (then empties it if `drain_on_shutdown`).
pub async fn keep(agent: Arc<Agent>, pools: Arc<Pools>, pool: Arc<Pool>) {
    let name = pool.cfg.name.clone();
    let Some(b) = agent.backend(&pool.cfg.backend) else {
        pool.say(Some(format!("its backend {} is not configured", pool.cfg.backend)));
        return;
    };
    // Whether the backend can keep pools at all, asked until it answers.
    loop {
        match b.capabilities().await {
            Some(c) if c.pools => break,
            Some(_) => {
                let why = format!("the {} backend cannot keep warm pools", b.provider.backend());
                tracing::error!(pool = %name, backend = %b.name, "{why}; orders for it are always created");
                pool.say(Some(why));
                return;
            }
            None => {
                pool.say(Some(format!("waiting for backend {} to answer", b.name)));
                tokio::select! {
                    _ = agent.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
    finish_cut_off_fills(&pools, &pool, b).await;
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match pass(&agent, &pools, &pool, b).await {
            Ok(next) => {
                backoff = Duration::from_secs(1);
                pool.say(None);
                match next {
                    Next::Settled => REFRESH,
                    Next::Busy => BUSY,
                }
            }
            Err(e) => {
                tracing::warn!(pool = %name, error = %e, "warm pool not kept; trying again in {backoff:?}");
                pool.say(Some(e));
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
        };
        let drained_now = is_drained(&pools, &pool);
        tokio::select! {
            _ = agent.shutdown.cancelled() => break,
            _ = pool.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = drain_changes(&pools, &pool, drained_now) => {}
        }
    }
    if pool.cfg.drain_on_shutdown {
        let ready = std::mem::take(&mut lock(&pool.state).ready);
        for id in ready {
            if let Err(e) = remove(b, &pool, &id, "the agent stops (drain_on_shutdown)").await {
                tracing::warn!(pool = %name, error = %e, "a pool machine is left; the next start deletes or keeps it");
            }
        }
    }
}

fn is_drained(pools: &Pools, pool: &Pool) -> bool {
    drained(&pools.drain_file())
        .iter()
        .any(|p| p == "*" || *p == pool.cfg.name)
}

/// Returns once the drain request for `pool` differs from `was`.
async fn drain_changes(pools: &Pools, pool: &Pool, was: bool) {
    while is_drained(pools, pool) == was {
        tokio::time::sleep(DRAIN_LOOK).await;
    }
}

/// One look at the pool and what follows from it.
async fn pass(agent: &Agent, pools: &Pools, pool: &Pool, b: &Backend) -> Result<Next, String> {
    let name = &pool.cfg.name;
    let target = if is_drained(pools, pool) { 0 } else { pool.cfg.ready };
    let filter = ListFilter {
        kind: Some(GuestKind::Vm),
        without_addresses: true,
        ..Default::default()
    };
    let listed = b
        .provider
        .list(filter)
        .await
        .map_err(|e| format!("listing its machines: {e}"))?;
    let usable = pool.cfg.mode.power_state();
    // Ready; or to delete, with why: made to another definition, or not in the state the pool
    // keeps (a running machine after a host restart, a stopped one someone started).
    let (mut ready, mut stale) = (Vec::new(), Vec::new());
    for i in listed {
        let (Some(m), Some(id)) = (i.pool, i.instance_id) else {
            continue;
        };
        if &m.pool != name {
            continue;
        }
        if m.key != pool.mark.key {
            stale.push((id, "it was made to an earlier definition of the pool".to_owned()));
        } else if i.state == usable {
            ready.push(id);
        } else if !matches!(i.state, PowerState::Provisioning | PowerState::Unknown) {
            stale.push((id, format!("it is {}, not {usable} as the pool keeps it", i.state)));
        }
    }
    {
        let mut s = lock(&pool.state);
        s.target = target;
        // A machine an order holds is the order's to take (even one of an earlier definition,
        // journaled before a restart): neither offered nor deleted.
        ready.retain(|id| !s.claimed.contains(id));
        stale.retain(|(id, _)| !s.claimed.contains(id));
        // Oldest first, as known; new ones after.
        let mut ordered: Vec<InstanceId> = s.ready.iter().filter(|id| ready.contains(id)).cloned().collect();
        ordered.extend(ready.into_iter().filter(|id| !s.ready.contains(id)));
        s.ready = ordered;
        metrics::gauge!("berth_pool_ready", "pool" => name.clone()).set(s.ready.len() as f64);
    }
    for (id, why) in stale {
        remove(b, pool, &id, &why).await?;
    }
    // Above the target (drained, or fewer wanted): the newest go first.
    loop {
        let extra = {
            let mut s = lock(&pool.state);
            (s.ready.len() > target as usize).then(|| s.ready.pop()).flatten()
        };
        let Some(id) = extra else { break };
        remove(b, pool, &id, "the pool keeps fewer").await?;
    }
    loop {
        let short = {
            let s = lock(&pool.state);
            (s.ready.len() as u32 + s.filling) < s.target
        };
        // A drain asked for meanwhile stops the refill at once (the next pass empties it).
        if !short || agent.shutdown.is_cancelled() || (target > 0 && is_drained(pools, pool)) {
            return Ok(Next::Settled);
        }
        // Orders first: a fill takes a slot only when one is free.
        let Ok(_slot) = b.slots.clone().try_acquire_owned() else {
            return Ok(Next::Busy);
        };
        fill_one(agent, pools, pool, b).await?;
    }
}

/// Counts a fill under way for as long as it runs.
struct Filling<'a>(&'a Pool);

impl<'a> Filling<'a> {
    fn start(p: &'a Pool) -> Filling<'a> {
        lock(&p.state).filling += 1;
        Filling(p)
    }
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).filling -= 1;
    }
}

/// Makes one machine for the pool: held against the host's thresholds like an order, recorded
/// before it starts, forgotten once it is in the pool (deleted if it failed).
async fn fill_one(agent: &Agent, pools: &Pools, pool: &Pool, b: &Backend) -> Result<(), String> {
    let id = berth_core::pool::pool_machine_id();
    let need = Need {
        cores: u64::from(pool.cfg.cores),
        memory_mib: pool.cfg.memory_mib,
        disk_gib: pool.cfg.disk_gib,
    };
    let reading = crate::heartbeat::read(b, agent.capacity_of(b)).await;
    let _held = b
        .reserve(reading, agent.capacity_of(b), id.as_str(), need)
        .map_err(|full| format!("no room for another machine: {full}"))?;
    let record = FillRecord {
        machine: id.to_string(),
        pool: pool.cfg.name.clone(),
        key: pool.mark.key.clone(),
        mode: pool.cfg.mode,
    };
    let path = pools.fills_dir().join(format!("{id}.json"));
    let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    crate::fsutil::write_atomic(&path, &bytes, 0o600).map_err(|e| format!("recording the fill: {e}"))?;
    failpoint("pool_fill_recorded");
    let filling = Filling::start(pool);
    let started = Instant::now();
    let spec = pool.spec(&id);
    let made = agent
        .retrying("fill", || {
            b.provider.fill(&spec, &pool.mark, pool.cfg.mode, &NoProgress)
        })
        .await;
    drop(filling);
    match made {
        Ok(_) => {
            failpoint("pool_filled");
            let took = started.elapsed();
            metrics::histogram!("berth_pool_fill_seconds", "pool" => pool.cfg.name.clone()).record(took.as_secs_f64());
            {
                let mut s = lock(&pool.state);
                s.ready.push(id.clone());
                s.last_fill_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
                metrics::gauge!("berth_pool_ready", "pool" => pool.cfg.name.clone()).set(s.ready.len() as f64);
            }
            crate::fsutil::remove_durable(&path).ok();
            tracing::info!(pool = %pool.cfg.name, machine = %id, ms = took.as_millis(), "warm pool machine ready");
            Ok(())
        }
        Err(e) => {
            // The record stays until what the fill left is gone.
            if remove(b, pool, &id, "its fill failed").await.is_ok() {
                crate::fsutil::remove_durable(&path).ok();
            }
            Err(format!("making a machine: {e}"))
        }
    }
}

/// Deletes pool machine `id` (idempotent).
async fn remove(b: &Backend, pool: &Pool, id: &InstanceId, why: &str) -> Result<(), String> {
    match b.provider.delete(&InstanceRef::Id(id.clone())).await {
        Ok(_) => {
            tracing::info!(pool = %pool.cfg.name, machine = %id, "warm pool machine deleted: {why}");
            Ok(())
        }
        Err(e) => Err(format!("deleting {id} ({why}): {e}")),
    }
}

/// Fills of this pool a crash cut off: finished when the pool's definition is unchanged (the
/// fill is idempotent), else deleted.
async fn finish_cut_off_fills(pools: &Pools, pool: &Pool, b: &Backend) {
    for (path, rec) in records(pools) {
        if rec.pool != pool.cfg.name {
            continue;
        }
        let Ok(id) = InstanceId::parse(&rec.machine) else {
            crate::fsutil::remove_durable(&path).ok();
            continue;
        };
        let done = if rec.key == pool.mark.key && rec.mode == pool.cfg.mode {
            let spec = pool.spec(&id);
            match b.provider.fill(&spec, &pool.mark, pool.cfg.mode, &NoProgress).await {
                Ok(_) => {
                    lock(&pool.state).ready.push(id.clone());
                    tracing::info!(pool = %pool.cfg.name, machine = %id, "a fill cut off by a restart is finished");
                    true
                }
                Err(e) => {
                    tracing::warn!(pool = %pool.cfg.name, machine = %id, error = %e, "a fill cut off by a restart failed; deleting it");
                    remove(b, pool, &id, "its fill was cut off and failed").await.is_ok()
                }
            }
        } else {
            remove(b, pool, &id, "its fill was cut off under an earlier definition")
                .await
                .is_ok()
        };
        if done {
            crate::fsutil::remove_durable(&path).ok();
        }
    }
}

/// The fill records on disk.
fn records(pools: &Pools) -> Vec<(std::path::PathBuf, FillRecord)> {
    let Ok(dir) = std::fs::read_dir(pools.fills_dir()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let path = e.path();
            let rec = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            Some((path, rec))
        })
        .collect()
}

/// Fills of pools no longer configured, cut off by a crash: their machines are deleted.
pub async fn sweep_unknown_fills(agent: &Agent, pools: &Pools) {
    for (path, rec) in records(pools) {
        if pools.get(&rec.pool).is_some() {
            continue;
        }
        let Ok(id) = InstanceId::parse(&rec.machine) else {
            crate::fsutil::remove_durable(&path).ok();
            continue;
        };
        // The record goes once every backend said the machine is gone (or deleted it).
        let mut gone = true;
        for b in &agent.backends {
            match b.provider.delete(&InstanceRef::Id(id.clone())).await {
                Ok(_) => {}
                Err(e) => {
                    gone = false;
                    tracing::warn!(pool = %rec.pool, machine = %id, backend = %b.name, error = %e,
                        "the machine of a fill cut off under a pool no longer configured is not deleted yet; the next start tries again");
                }
            }
        }
        if gone {
            crate::fsutil::remove_durable(&path).ok();
        }
    }
}
