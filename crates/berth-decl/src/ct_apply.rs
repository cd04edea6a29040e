//! Applying a container's change: created from its OS template, moved to its node (a running
//! one restarts there: containers do not migrate live), its config changed (volumes and NICs
//! re-sent whole, with their volume and MAC), volumes grown or moved, its pool and power state
//! set; deleted stopped and purged.

use std::time::Duration;

use berth_proxmox::client::{GuestType, Params, PveClient};

use crate::apply::{ApplyError, pve};
use crate::ct::{is_net, is_volume, merge, unflatten};
use crate::plan::{Action, Change};
use crate::vm_apply::{creation, delete, finish, keys, relocate, vmid_of, wait};

const L: GuestType = GuestType::Lxc;

/// Brings container `vmid` on `node` to `ch.after` for the fields in `diff`.
async fn converge(
    c: &PveClient,
    ch: &Change,
    node: &str,
    diff: &[String],
    t: Duration,
    steps: &mut Vec<String>,
) -> Result<(), ApplyError> {
    let vmid = vmid_of(ch);
    let want = &ch.after;
    let cfg = c.guest_config(node, L, vmid).await.map_err(pve(&ch.addr, "read"))?;
    let mut params = Params::new();
    let (mut resizes, mut moves) = (Vec::new(), Vec::new());
    for key in keys(diff.iter().cloned()) {
        match cfg.get(&key) {
            Some(cur) if is_volume(&key) => {
                if diff.contains(&format!("{key}.size"))
                    && let Some(b) = want.get(&format!("{key}.size"))
                {
                    resizes.push((key.clone(), crate::vm::size_text(b.parse().unwrap_or(0))));
                }
                if diff.contains(&format!("{key}.storage"))
                    && let Some(s) = want.get(&format!("{key}.storage"))
                {
                    moves.push((key.clone(), s.clone()));
                }
                let merged = merge(&cur, &key, want);
                if merged != cur {
                    params.push(&key, merged);
                }
            }
            Some(cur) if is_net(&key) => params.push(&key, merge(&cur, &key, want)),
            _ => {
                if let Some(v) = unflatten(want, &key) {
                    params.push(&key, v);
                }
            }
        }
    }
    if !params.is_empty() {
        let params = match cfg.get("digest") {
            Some(d) => params.str("digest", d),
            None => params,
        };
        c.update_config(node, L, vmid, &params)
            .await
            .map_err(pve(&ch.addr, "update"))?;
        steps.push(format!("{}: config updated", ch.addr));
    }
    finish(c, ch, L, diff, (resizes, moves), t, steps).await
}

pub(crate) async fn apply_ct(c: &PveClient, ch: &Change, t: Duration) -> Result<Vec<String>, ApplyError> {
    let vmid = vmid_of(ch);
    let mut steps = Vec::new();
    let node = ch.after.get("node").cloned().unwrap_or_default();
    match &ch.action {
        Action::Create => {
            let mut p = Params::new().int("vmid", vmid);
            for key in keys(ch.after.keys().cloned()) {
                if let Some(v) = unflatten(&ch.after, &key) {
                    p.push(&key, v);
                }
            }
            creation(ch, &mut p)?;
            wait(c, c.create_container(&node, &p).await, &ch.addr, "create", t).await?;
            steps.push(format!("{}: created on {node}", ch.addr));
        }
        Action::Update | Action::UpdateRestart { .. } | Action::Move { .. } => {
            let diff = relocate(c, ch, L, t, &mut steps).await?;
            converge(c, ch, &node, &diff, t, &mut steps).await?;
        }
        Action::Delete => delete(c, ch, L, t).await?,
        Action::Replace { .. } | Action::Impossible { .. } => {}
    }
    Ok(steps)
}
