//! Guest changes (VMs and containers) side by side, several at once: each refused if its config
//! changed after the apply's freshness check, then its checkpoint, then the change.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proxmox::client::PveClient;

use crate::apply::{ApplyError, ApplyOptions, pve};
use crate::model::Kind;
use crate::plan::{Action, Change};

/// Refuses a guest whose config changed after the freshness check read it (`checked`, its
/// digest then): the check compared fields, this the whole config. From here on, each write is
/// compare-and-set on the digest it read.
async fn unchanged_since_check(c: &PveClient, ch: &Change, checked: Option<&String>) -> Result<(), ApplyError> {
    let Some(checked) = checked else {
        return Ok(());
    };
    let node = ch
        .before
        .as_ref()
        .and_then(|b| b.get("node"))
        .cloned()
        .unwrap_or_default();
    let ty = crate::checkpoint::guest_type(&ch.addr);
    let cfg = c
        .guest_config(&node, ty, crate::vm_apply::vmid_of(ch))
        .await
        .map_err(pve(&ch.addr, "read"))?;
    if cfg.get("digest").as_ref() == Some(checked) {
        return Ok(());
    }
    Err(ApplyError::Stale {
        addr: ch.addr.clone(),
        detail: "its config changed while this apply ran (PVE's digest moved)".into(),
    })
}

pub(crate) fn is_guest(kind: Kind) -> bool {
    matches!(kind, Kind::Vm | Kind::Ct)
}

/// One guest change: its checkpoint (kept even when the change then failed), what was done, and
/// how it ended.
pub(crate) struct GuestDone {
    pub checkpoint: Option<crate::checkpoint::Checkpoint>,
    pub steps: Vec<String>,
    pub outcome: Result<(), ApplyError>,
}

/// A run of VM changes, each with its checkpoint first, several at once; results in order.
pub(crate) async fn run(
    c: &PveClient,
    run: &[&Change],
    apply_id: &str,
    opts: &ApplyOptions,
    timeout: Duration,
    checked: &BTreeMap<String, String>,
) -> Vec<GuestDone> {
    use futures::StreamExt as _;
    let one = |ch: &Change| {
        let ch = ch.clone();
        async move {
            let mut done = GuestDone {
                checkpoint: None,
                steps: Vec::new(),
                outcome: Ok(()),
            };
            if ch.action != Action::Create
                && let Err(e) = unchanged_since_check(c, &ch, checked.get(&ch.addr)).await
            {
                done.outcome = Err(e);
                return done;
            }
            if ch.action != Action::Create && crate::checkpoint::needed(&ch) {
                match crate::checkpoint::take(c, &ch, apply_id, opts, timeout).await {
                    Ok((taken, step)) => {
                        done.checkpoint = taken;
                        done.steps.extend(step);
                    }
                    Err(e) => {
                        done.outcome = Err(e);
                        return done;
                    }
                }
            }
            let applied = match ch.kind {
                Kind::Ct => crate::ct_apply::apply_ct(c, &ch, timeout).await,
                _ => crate::vm_apply::apply_vm(c, &ch, timeout).await,
            };
            match applied {
                Ok(steps) => done.steps.extend(steps),
                Err(e) => done.outcome = Err(e),
            }
            done
        }
    };
    futures::stream::iter(run.iter().map(|ch| one(ch)))
        .buffered(if opts.vm_concurrency == 0 {
            8
        } else {
            opts.vm_concurrency
        })
        .collect()
        .await
}
