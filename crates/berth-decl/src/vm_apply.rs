//! Applying a VM's change: created by cloning a template or from scratch, moved to its node,
//! its config changed (drives and NICs re-sent whole, with their volume and MAC), disks grown or
//! moved, its pool and power state set; deleted stopped and purged.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proxmox::client::propstring::PropertyString;
use berth_proxmox::client::{GuestType, Params, PowerAction, PveClient, PveError, Upid};

use crate::apply::{ApplyError, pve};
use crate::fields;
use crate::model::Kind;
use crate::plan::{Action, Change};
use crate::vm::{is_disk, is_meta, is_net, key_of, unflatten};

const Q: GuestType = GuestType::Qemu;

pub(crate) async fn wait(
    c: &PveClient,
    upid: Result<Upid, PveError>,
    addr: &str,
    what: &str,
    t: Duration,
) -> Result<(), ApplyError> {
    let upid = upid.map_err(pve(addr, what))?;
    c.wait_task(&upid, t).await.map(|_| ()).map_err(pve(addr, what))
}

/// The VMID of a guest's change (`vm.150`, `ct.200`).
pub(crate) fn vmid_of(ch: &Change) -> u32 {
    ch.addr.split_once('.').and_then(|(_, id)| id.parse().ok()).unwrap_or(0)
}

/// The config keys `fields` touch (drives and NICs once each), without node/state/pool/clone.
pub(crate) fn keys(fields: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = fields.filter(|f| !is_meta(f)).map(|f| key_of(&f).to_owned()).collect();
    out.sort();
    out.dedup();
    out
}

/// An existing drive or NIC with the file's options over it (volume and MAC kept).
fn merge(current: &str, key: &str, desired: &BTreeMap<String, String>) -> String {
    let mut ps = PropertyString::parse(current);
    let prefix = format!("{key}.");
    for (field, v) in desired.iter().filter(|(f, _)| f.starts_with(&prefix)) {
        let opt = &field[prefix.len()..];
        if matches!(opt, "storage" | "size" | "cloudinit") {
            continue;
        }
        if opt == "macaddr" {
            // `model=MAC`: the MAC is the value of the first keyed part.
            if let Some(first) = ps.0.iter_mut().find(|(k, _)| k.is_some()) {
                first.1 = v.clone();
            }
            continue;
        }
        if opt == "model" {
            // `virtio=MAC`: the model is the key of the first part.
            if let Some(first) = ps.0.iter_mut().find(|(k, _)| k.is_some()) {
                first.0 = Some(v.clone());
            }
            continue;
        }
        match ps.0.iter_mut().find(|(k, _)| k.as_deref() == Some(opt)) {
            Some(slot) => slot.1 = v.clone(),
            None => ps.0.push((Some(opt.to_owned()), v.clone())),
        }
    }
    ps.to_string()
}

/// A value as PVE takes it (`sshkeys` URL-encoded).
fn wire_value(key: &str, v: &str) -> String {
    match key {
        "sshkeys" => berth_proxmox::client::pve_urlencode(v),
        _ => v.to_owned(),
    }
}

/// Brings VM `vmid` on `node` from `current` (its config now) to `want` for the fields in `diff`.
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
    let cfg = c.guest_config(node, Q, vmid).await.map_err(pve(&ch.addr, "read"))?;
    let digest = cfg.get("digest");
    let mut params = Params::new();
    let mut resizes = Vec::new();
    let mut moves = Vec::new();
    for key in keys(diff.iter().cloned()) {
        let current = cfg.get(&key);
        match (current, is_disk(&key), is_net(&key)) {
            (Some(cur), true, _) => {
                let grow = diff.iter().any(|f| *f == format!("{key}.size"));
                let storage = want.get(&format!("{key}.storage"));
                let moved = diff.iter().any(|f| *f == format!("{key}.storage"));
                if grow && let Some(b) = want.get(&format!("{key}.size")) {
                    resizes.push((key.clone(), crate::vm::size_text(b.parse().unwrap_or(0))));
                }
                if moved && let Some(s) = storage {
                    moves.push((key.clone(), s.clone()));
                }
                let merged = merge(&cur, &key, want);
                if merged != cur {
                    params.push(&key, merged);
                }
            }
            (Some(cur), _, true) => params.push(&key, merge(&cur, &key, want)),
            (None, true, _) | (None, _, true) => {
                if let Some(v) = unflatten(want, &[key.as_str()]).remove(&key) {
                    params.push(&key, v);
                }
            }
            _ => {
                if let Some(v) = want.get(&key) {
                    params.push(&key, wire_value(&key, v));
                }
            }
        }
    }
    if !params.is_empty() {
        let params = match &digest {
            Some(d) => params.str("digest", d.clone()),
            None => params,
        };
        c.update_config(node, Q, vmid, &params)
            .await
            .map_err(pve(&ch.addr, "update"))?;
        steps.push(format!("{}: config updated", ch.addr));
    }
    finish(c, ch, Q, diff, (resizes, moves), t, steps).await
}

/// Disks (volumes) to grow, `(key, size)`, and to move, `(key, storage)`.
pub(crate) type DiskWork = (Vec<(String, String)>, Vec<(String, String)>);

/// The end of a guest's change, after its config: a guest to stop is shut down first (a
/// container's volume moves only while it is stopped), then disks grow and move, the pool is
/// set, a guest to start starts, and what PVE keeps pending for the restart is reported (the
/// plan's prediction, checked).
pub(crate) async fn finish(
    c: &PveClient,
    ch: &Change,
    ty: GuestType,
    diff: &[String],
    (resizes, moves): DiskWork,
    t: Duration,
    steps: &mut Vec<String>,
) -> Result<(), ApplyError> {
    let vmid = vmid_of(ch);
    let node = ch.after.get("node").map(String::as_str).unwrap_or_default();
    let power = diff
        .iter()
        .any(|f| f == "state")
        .then(|| ch.after.get("state").map(String::as_str).unwrap_or("running"));
    if power == Some("stopped") {
        // A guest is shut down cleanly (its guest agent, ACPI, or its init), not pulled from the power.
        let upid = c.power(node, ty, vmid, PowerAction::Shutdown, &Params::new()).await;
        wait(c, upid, &ch.addr, "shut down", t).await?;
        steps.push(format!("{}: shut down", ch.addr));
    }
    for (disk, size) in resizes {
        // A resize answers a task on PVE 8+, nothing on older releases.
        if let Some(upid) = c
            .resize_disk(node, ty, vmid, &disk, &size)
            .await
            .map_err(pve(&ch.addr, "resize"))?
        {
            wait(c, Ok(upid), &ch.addr, "resize", t).await?;
        }
        steps.push(format!("{}: {disk} grown to {size}", ch.addr));
    }
    for (disk, storage) in moves {
        // The source goes once the copy is done (PVE removes it only after a successful move).
        let upid = c.move_disk(node, ty, vmid, &disk, &storage, true).await;
        wait(c, upid, &ch.addr, "move disk", t).await?;
        steps.push(format!("{}: {disk} moved to {storage}", ch.addr));
    }
    if diff.iter().any(|f| f == "pool")
        && let Some(p) = ch.after.get("pool")
    {
        c.update_pool(p, &[vmid], &[], false, true)
            .await
            .map_err(pve(&ch.addr, "pool"))?;
    }
    if power == Some("running") {
        let upid = c.power(node, ty, vmid, PowerAction::Start, &Params::new()).await;
        wait(c, upid, &ch.addr, "started", t).await?;
        steps.push(format!("{}: started", ch.addr));
    }
    if let Action::UpdateRestart { restart } = &ch.action {
        let pending = c.pending(node, ty, vmid).await.map_err(pve(&ch.addr, "read pending"))?;
        let mut waiting: Vec<&str> = restart
            .iter()
            .map(|f| key_of(f))
            .filter(|k| pending.iter().any(|p| p.key == *k && p.pending.is_some()))
            .collect();
        waiting.dedup();
        steps.push(format!("{}: waits for a restart: {}", ch.addr, waiting.join(", ")));
    }
    Ok(())
}

/// Moves a guest to the node its change names (a running VM live, with its local disks; a
/// running container by a restart there: containers do not migrate live), and returns the
/// fields left to converge.
pub(crate) async fn relocate(
    c: &PveClient,
    ch: &Change,
    ty: GuestType,
    t: Duration,
    steps: &mut Vec<String>,
) -> Result<Vec<String>, ApplyError> {
    if let Action::Move { to } = &ch.action {
        let before = |k: &str| ch.before.as_ref().and_then(|b| b.get(k)).cloned();
        let from = before("node").unwrap_or_default();
        let running = before("state").is_some_and(|s| s == "running");
        let vm = ty == GuestType::Qemu;
        let o = berth_proxmox::client::migrate::MigrateOptions {
            online: running && vm,
            restart: running && !vm,
            with_local_disks: running && vm,
        };
        let upid = c.migrate(&from, ty, vmid_of(ch), to, o).await;
        wait(c, upid, &ch.addr, "migrate", t).await?;
        let how = if running && !vm { " (restarted there)" } else { "" };
        steps.push(format!("{}: moved from {from} to {to}{how}", ch.addr));
    }
    Ok(ch
        .fields
        .iter()
        .map(|f| f.field.clone())
        .filter(|f| f != "node")
        .collect())
}

/// What every guest's create call carries besides its config: secrets resolved, its pool, and
/// `start` unless the file keeps it stopped.
pub(crate) fn creation(ch: &Change, p: &mut Params) -> Result<(), ApplyError> {
    for (field, reference) in &ch.secrets {
        p.push(field, crate::apply::resolve(ch, field, reference)?);
    }
    if let Some(pool) = ch.after.get("pool") {
        p.push("pool", pool.clone());
    }
    if ch.after.get("state").is_none_or(|s| s == "running") {
        p.push("start", "1");
    }
    Ok(())
}

/// Deletes a guest: stopped first when it runs, then purged.
pub(crate) async fn delete(c: &PveClient, ch: &Change, ty: GuestType, t: Duration) -> Result<(), ApplyError> {
    let before = |k: &str| ch.before.as_ref().and_then(|b| b.get(k)).cloned();
    let at = before("node").unwrap_or_default();
    let vmid = vmid_of(ch);
    if before("state").is_some_and(|s| s == "running") {
        let upid = c.power(&at, ty, vmid, PowerAction::Stop, &Params::new()).await;
        wait(c, upid, &ch.addr, "stop", t).await?;
    }
    wait(c, c.delete_guest(&at, ty, vmid).await, &ch.addr, "delete", t).await
}

/// Where a template lives.
async fn template_node(c: &PveClient, vmid: u32) -> Option<String> {
    c.cluster_resources(Some("vm"))
        .await
        .ok()?
        .into_iter()
        .find(|r| r.vmid == Some(vmid))
        .and_then(|r| r.node)
}

pub(crate) async fn apply_vm(c: &PveClient, ch: &Change, t: Duration) -> Result<Vec<String>, ApplyError> {
    let vmid = vmid_of(ch);
    let mut steps = Vec::new();
    let node = ch.after.get("node").cloned().unwrap_or_default();
    match &ch.action {
        Action::Create if ch.after.contains_key("clone") => {
            let tpl: u32 = ch.after["clone"].parse().unwrap_or(0);
            let src = template_node(c, tpl).await.unwrap_or_else(|| node.clone());
            let mut p = Params::new().int("newid", vmid).bool("full", true);
            if let Some(name) = ch.after.get("name") {
                p = p.str("name", name.clone());
            }
            if src != node {
                p = p.str("target", node.clone());
            }
            if let Some(pool) = ch.after.get("pool") {
                p = p.str("pool", pool.clone());
            }
            if let Some(s) = ch.after.get("scsi0.storage") {
                p = p.str("storage", s.clone());
            }
            wait(c, c.clone_vm(&src, tpl, &p).await, &ch.addr, "clone", t).await?;
            steps.push(format!("{}: cloned from template {tpl}", ch.addr));
            // What the template did not already give it.
            let cfg = c.guest_config(&node, Q, vmid).await.map_err(pve(&ch.addr, "read"))?;
            let config: BTreeMap<String, String> =
                cfg.keys().filter_map(|k| Some((k.to_owned(), cfg.get(k)?))).collect();
            let now = crate::vm::observed(vmid, &node, false, ch.after.get("pool").map(String::as_str), &config);
            let diff: Vec<String> = ch
                .after
                .iter()
                .filter(|(k, v)| k.as_str() != "clone" && !fields::same(Kind::Vm, k, Some(v), now.get(k)))
                .map(|(k, _)| k.clone())
                .collect();
            converge(c, ch, &node, &diff, t, &mut steps).await?;
        }
        Action::Create => {
            let config_keys = keys(ch.after.keys().cloned());
            let refs: Vec<&str> = config_keys.iter().map(String::as_str).collect();
            let mut p = Params::new().int("vmid", vmid);
            for (k, v) in unflatten(&ch.after, &refs) {
                p.push(&k, wire_value(&k, &v));
            }
            creation(ch, &mut p)?;
            wait(c, c.create_vm(&node, &p).await, &ch.addr, "create", t).await?;
            steps.push(format!("{}: created on {node}", ch.addr));
        }
        Action::Update | Action::UpdateRestart { .. } | Action::Move { .. } => {
            let diff = relocate(c, ch, Q, t, &mut steps).await?;
            converge(c, ch, &node, &diff, t, &mut steps).await?;
        }
        Action::Delete => delete(c, ch, Q, t).await?,
        Action::Replace { .. } | Action::Impossible { .. } => {}
    }
    Ok(steps)
}
