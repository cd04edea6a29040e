//! A provision taking a warm pool machine: which one (journaled before the take starts), and
//! the take itself, which falls back to a normal create when the machine left its pool.

use std::sync::Arc;

use berth_core::{ErrorCode, Instance, InstanceId, ProviderError, VmSpec};

use super::{Claim, Found, PoolTake};
use crate::agent::{Agent, Backend};
use crate::journal::Tracked;
use crate::lease::Reporter;
use crate::work::failpoint;

fn progress(reporter: &Reporter, message: String) {
    reporter.send(berth_api::wire::EventReport {
        stage: "clone_template".into(),
        phase: "progress".into(),
        percent: None,
        message: Some(message),
    });
}

impl Agent {
    /// The pool machine this provision takes: the one an earlier run of it journaled, else (for
    /// a machine not made yet) a ready one of a pool the order fits, journaled now.
    pub(crate) async fn pool_take(
        &self,
        b: &Backend,
        spec: &VmSpec,
        tracked: &Arc<Tracked>,
        exists: bool,
        reporter: &Reporter,
    ) -> Option<(PoolTake, Option<Claim>)> {
        if let Some(t) = tracked.get().pool_take {
            let claim = self.pools.get().and_then(|p| p.reclaim(&t));
            return Some((t, claim));
        }
        if exists {
            return None;
        }
        match self.pools.get()?.find(&b.name, spec) {
            Found::NoPool => None,
            Found::Miss(p) => {
                p.miss();
                progress(
                    reporter,
                    format!("pool {} has no machine ready: making one", p.cfg.name),
                );
                None
            }
            Found::Hit(claim) => {
                let t = claim.take();
                if let Err(e) = tracked.record(|e| e.pool_take = Some(t.clone())).await {
                    tracing::error!(error = %e, "cannot journal the take of a pool machine; creating instead");
                    return None;
                }
                failpoint("pool_take_recorded");
                Some((t, Some(claim)))
            }
        }
    }

    /// Takes the pool machine for `spec`; `None` when it is no longer in its pool (taken by
    /// another order, drained): nothing was changed, and the order is created instead.
    pub(crate) async fn take_from_pool(
        &self,
        b: &Backend,
        t: &PoolTake,
        spec: &VmSpec,
        reporter: &Reporter,
    ) -> Option<Result<Instance, ProviderError>> {
        let (Ok(from), Some(mark)) = (InstanceId::parse(&t.machine), t.mark()) else {
            return None;
        };
        let taken = self
            .retrying("take", || b.provider.take(&from, &mark, t.mode, spec, reporter))
            .await;
        failpoint("pool_taken");
        let pool = self.pools.get().and_then(|p| p.get(&t.pool));
        match taken {
            Ok(i) => {
                if let Some(p) = pool {
                    p.hit();
                }
                Some(Ok(i))
            }
            Err(e) if e.code() == ErrorCode::NotFound => {
                if let Some(p) = pool {
                    p.miss();
                }
                progress(reporter, format!("{e}: making a machine instead"));
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}
