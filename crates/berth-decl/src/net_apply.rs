//! Node network changes: edits are staged, and each node reloads once. An edit that fails
//! reverts what this apply staged (the apply refused to start over anyone else's staged edits,
//! unless told to adopt them: then they are left as they are), so a node is never left with half a
//! change waiting for someone's next reload. After a reload the API must answer again with
//! nothing left staged; a node that does not is reported, never guessed past.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_proxmox::client::PveClient;

use crate::apply::{Applied, ApplyError, id_of, interface_from, pve};
use crate::plan::{Action, Change};

/// How long the API may take to answer again after a reload (a bridge that is rebuilt drops
/// connections for a moment).
const AFTER_RELOAD: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// Stages one interface change.
pub(crate) async fn edit(c: &PveClient, ch: &Change) -> Result<(), ApplyError> {
    let (node, iface) = id_of(ch).split_once('.').unwrap_or_default();
    let i = interface_from(iface, &ch.after);
    match &ch.action {
        Action::Create => c.create_interface(node, &i).await.map_err(pve(&ch.addr, "create")),
        Action::Update => c.update_interface(node, &i, &[]).await.map_err(pve(&ch.addr, "update")),
        Action::Replace { .. } => {
            c.delete_interface(node, iface).await.map_err(pve(&ch.addr, "delete"))?;
            c.create_interface(node, &i).await.map_err(pve(&ch.addr, "create"))
        }
        Action::Delete => c.delete_interface(node, iface).await.map_err(pve(&ch.addr, "delete")),
        Action::Impossible { .. } | Action::UpdateRestart { .. } | Action::Move { .. } => Ok(()),
    }
}

/// Drops the edits staged on `nodes` (best effort: a revert that fails is said in the steps).
pub(crate) async fn revert(c: &PveClient, nodes: &BTreeSet<String>, done: &mut Applied) {
    for node in nodes {
        match c.revert_network(node).await {
            Ok(()) => done
                .steps
                .push(format!("reverted the network edits staged on {node} (none was reloaded)")),
            Err(e) => done.steps.push(format!(
                "could not revert the network edits staged on {node} ({e}); revert them (DELETE /nodes/{node}/network) before applying again"
            )),
        }
    }
}

/// Reloads `node`'s network and waits until the API answers again with nothing left staged.
pub(crate) async fn reload(c: &PveClient, node: &str, timeout: Duration, done: &mut Applied) -> Result<(), ApplyError> {
    let addr = format!("net.{node}");
    let upid = c.reload_network(node).await.map_err(pve(&addr, "reload"))?;
    c.wait_task(&upid, timeout).await.map_err(pve(&addr, "reload"))?;
    let started = Instant::now();
    loop {
        let last = match c.network(node, None).await {
            Ok(net) => match net.changes {
                None => break,
                Some(diff) => {
                    return Err(ApplyError::AfterReload {
                        node: node.to_owned(),
                        detail: format!("edits are still staged (the reload did not take them):\n{diff}"),
                    });
                }
            },
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= AFTER_RELOAD {
            return Err(ApplyError::AfterReload {
                node: node.to_owned(),
                detail: format!(
                    "the API did not answer for {} s (last: {last}): the new network may have cut the node off; \
                     check its console, then `berth apply --resume` goes on",
                    AFTER_RELOAD.as_secs()
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
    done.steps.push(format!("reloaded the network of {node}"));
    Ok(())
}
