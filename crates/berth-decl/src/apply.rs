//! Applying a plan: exactly its changes, only if every object it touches is still as it was when
//! planned (else refused, naming the field), storage first and backup jobs last, network edits
//! staged and reloaded once per node, deletes after everything else in reverse.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_proxmox::client::backup::BackupJob;
use berth_proxmox::client::network::NetworkInterface;
use berth_proxmox::client::propstring::PruneBackups;
use berth_proxmox::client::{Params, PveClient, PveError};

use crate::fields;
use crate::model::{Kind, Object};
use crate::observe::observe;
use crate::plan::{Action, Change, Plan, fingerprint};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan cannot be applied: {addr}: {reason}")]
    Impossible { addr: String, reason: String },
    #[error(
        "{addr} carries the API's own address {ip}: changing it could cut Berth (and you) off the node; \
         --allow-mgmt-network if that is what you want"
    )]
    Management { addr: String, ip: String },
    #[error("this plan was made against cluster {planned}, not {actual}: plan against this one")]
    OtherCluster { planned: String, actual: String },
    #[error("stale plan: {addr} changed since it was planned ({detail}); plan again")]
    Stale { addr: String, detail: String },
    #[error(
        "node {node} has network edits someone staged and did not reload; apply them (PUT /nodes/{node}/network) or revert them first"
    )]
    PendingNetwork { node: String },
    #[error("{addr}.{field}: {message}")]
    Secret {
        addr: String,
        field: String,
        message: String,
    },
    #[error("{addr}: no storage on {node} holds backups, and a guest is deleted only after one (or with --no-backup)")]
    NoBackup { addr: String, node: String },
    #[error("net.{node}: after its network was reloaded, {detail}")]
    AfterReload { node: String, detail: String },
    #[error("{addr}: {what} failed: {error}")]
    Pve {
        addr: String,
        what: String,
        error: Box<PveError>,
    },
    /// A rollback put back what it could; `lines` says what it did and what failed.
    #[error("the rollback is incomplete ({failed} checkpoint(s) failed):\n{}", lines.join("\n"))]
    RollbackIncomplete { failed: usize, lines: Vec<String> },
}

/// What an apply did, step by step, and what it kept to go back to.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub apply_id: String,
    pub steps: Vec<String>,
    pub checkpoints: Vec<crate::checkpoint::Checkpoint>,
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Names this apply's checkpoints (`berth-<id>`); made up when empty.
    pub apply_id: String,
    /// Delete VMs without a backup first.
    pub no_backup: bool,
    /// VMs changed at once (0: 8).
    pub vm_concurrency: usize,
    /// Apply even when a node has network edits someone else staged (they are reloaded too).
    pub adopt_pending_network: bool,
    /// Change even the interface that carries the API's address.
    pub allow_mgmt_network: bool,
    /// How long one task may take (default 30 minutes: clones and backups of big disks).
    pub task_timeout: Option<Duration>,
    /// What an earlier attempt of this apply kept (`berth apply --resume`): a VM backed up
    /// there before its delete is not backed up again.
    pub earlier: Vec<crate::checkpoint::Checkpoint>,
}

/// Maps a PVE error to this apply's error for `addr`, doing `what`.
pub(crate) fn pve(addr: &str, what: &str) -> impl FnOnce(PveError) -> ApplyError {
    let (addr, what) = (addr.to_owned(), what.to_owned());
    move |error| ApplyError::Pve {
        addr,
        what,
        error: Box::new(error),
    }
}

pub(crate) fn resolve(c: &Change, field: &str, reference: &str) -> Result<String, ApplyError> {
    let bad = |message: String| ApplyError::Secret {
        addr: c.addr.clone(),
        field: field.to_owned(),
        message,
    };
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| bad(format!("environment variable {name} is not set")));
    }
    if let Some(path) = reference.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end().to_owned())
            .map_err(|e| bad(format!("cannot read {path}: {e}")));
    }
    Err(bad("a secret is env:NAME or file:/path".into()))
}

/// Re-reads the cluster and refuses when a touched object is not as planned.
/// Re-reads the cluster and refuses when a touched object is not as planned; answers the
/// cluster's PVE major release.
async fn check_fresh(c: &PveClient, plan: &Plan, opts: &ApplyOptions) -> Result<crate::Observed, ApplyError> {
    if let Some(ch) = plan.impossible().next() {
        let Action::Impossible { reason } = &ch.action else {
            unreachable!()
        };
        return Err(ApplyError::Impossible {
            addr: ch.addr.clone(),
            reason: reason.clone(),
        });
    }
    let now = observe(c).await.map_err(pve("cluster", "reading"))?;
    if (now.cluster_name.as_ref(), &now.nodes) != (plan.cluster.as_ref(), &plan.nodes) {
        let who = |name: Option<&String>, nodes: &[String]| {
            format!("{} ({})", name.map_or("(no cluster)", String::as_str), nodes.join(", "))
        };
        return Err(ApplyError::OtherCluster {
            planned: who(plan.cluster.as_ref(), &plan.nodes),
            actual: who(now.cluster_name.as_ref(), &now.nodes),
        });
    }
    for ch in &plan.changes {
        let Some(want) = plan.fingerprints.get(&ch.addr) else {
            continue;
        };
        let cur = now.find(&ch.addr);
        if fingerprint(cur) != *want {
            let detail = match (cur, &ch.before) {
                (None, _) => "it is gone".to_owned(),
                (Some(_), None) => "it exists now".to_owned(),
                (Some(o), Some(before)) => {
                    let keys: BTreeSet<&String> = o.fields.keys().chain(before.keys()).collect();
                    let changed: Vec<String> = keys
                        .into_iter()
                        .filter(|k| o.fields.get(*k) != before.get(*k))
                        .map(|k| format!("{k}: {} → {}", show(before.get(k)), show(o.fields.get(k))))
                        .collect();
                    changed.join(", ")
                }
            };
            return Err(ApplyError::Stale {
                addr: ch.addr.clone(),
                detail,
            });
        }
    }
    if !opts.allow_mgmt_network
        && let Some(ip) = c.host().and_then(|h| h.parse::<std::net::IpAddr>().ok())
    {
        let touched = plan
            .changes
            .iter()
            .filter(|c| c.kind == Kind::Interface && c.action != Action::Create);
        for ch in touched {
            if ch.before.as_ref().is_some_and(|b| carries(b, ip)) {
                return Err(ApplyError::Management {
                    addr: ch.addr.clone(),
                    ip: ip.to_string(),
                });
            }
        }
    }
    if !opts.adopt_pending_network {
        for ch in plan.changes.iter().filter(|c| c.kind == Kind::Interface) {
            let node = ch.addr.split('.').nth(1).unwrap_or_default();
            if now.pending_network.contains_key(node) {
                return Err(ApplyError::PendingNetwork { node: node.to_owned() });
            }
        }
    }
    Ok(now)
}

/// Whether an interface's addresses include `ip`.
fn carries(fields: &BTreeMap<String, String>, ip: std::net::IpAddr) -> bool {
    ["cidr", "cidr6"].iter().filter_map(|k| fields.get(*k)).any(|c| {
        c.split_once('/')
            .and_then(|(a, _)| a.parse::<std::net::IpAddr>().ok())
            .is_some_and(|a| a == ip)
    })
}

fn show(v: Option<&String>) -> &str {
    v.map_or("(unset)", String::as_str)
}

/// Applies `plan` to the cluster behind `c`.
/// An apply that stopped part-way: what it had done (and kept) by then, and why it stopped.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failed {
    pub done: Applied,
    pub error: ApplyError,
}

/// Applies `plan`; on a failure, what was done by then comes back with the error.
pub async fn apply(c: &PveClient, plan: &Plan, opts: ApplyOptions) -> Result<Applied, Box<Failed>> {
    let apply_id = match opts.apply_id.is_empty() {
        true => format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        ),
        false => opts.apply_id.clone(),
    };
    let mut done = Applied {
        apply_id: apply_id.clone(),
        ..Applied::default()
    };
    match run(c, plan, &opts, &mut done).await {
        Ok(()) => Ok(done),
        Err(error) => Err(Box::new(Failed { done, error })),
    }
}

async fn run(c: &PveClient, plan: &Plan, opts: &ApplyOptions, done: &mut Applied) -> Result<(), ApplyError> {
    let now = check_fresh(c, plan, opts).await?;
    let pve_major = now.pve_major;
    let timeout = opts.task_timeout.unwrap_or(Duration::from_secs(1800));
    let apply_id = done.apply_id.clone();
    let mut reload: BTreeSet<String> = BTreeSet::new();
    let mut i = 0;
    while i < plan.changes.len() {
        let ch = &plan.changes[i];
        // Guests run side by side (each on its own tasks), up to `vm_concurrency` at once.
        if crate::guests::is_guest(ch.kind) {
            let run: Vec<&Change> = plan.changes[i..]
                .iter()
                .take_while(|x| {
                    crate::guests::is_guest(x.kind) && (x.action == Action::Delete) == (ch.action == Action::Delete)
                })
                .collect();
            i += run.len();
            let results = crate::guests::run(c, &run, &apply_id, opts, timeout, &now.digests).await;
            let mut first_error = None;
            for (r, ch) in results.into_iter().zip(&run) {
                // A checkpoint taken before a change that then failed is kept all the same.
                done.checkpoints.extend(r.checkpoint);
                done.steps.extend(r.steps);
                match r.outcome {
                    Ok(()) => done.steps.push(format!("{} {}", verb(&ch.action), ch.addr)),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            continue;
        }
        i += 1;
        match ch.kind {
            Kind::Cluster => {}
            Kind::Storage => storage(c, ch).await?,
            Kind::Pool => pool(c, ch).await?,
            Kind::Interface => {
                reload.insert(ch.addr.split('.').nth(1).unwrap_or_default().to_owned());
                if let Err(e) = crate::net_apply::edit(c, ch).await {
                    // Staged edits of this apply's are not left for someone's next reload; edits
                    // someone else staged (adopted) are left as they are.
                    if !opts.adopt_pending_network {
                        crate::net_apply::revert(c, &reload, done).await;
                    }
                    return Err(e);
                }
            }
            Kind::Backup => backup(c, ch).await?,
            Kind::Ha => crate::ha::apply(c, ch, pve_major >= 9).await?,
            Kind::Vm | Kind::Ct => {}
        }
        done.steps.push(format!("{} {}", verb(&ch.action), ch.addr));
        // Network edits are staged; each node reloads once, before what depends on them.
        let next_not_net = plan.changes.get(i).is_none_or(|x| x.kind != Kind::Interface);
        if !reload.is_empty() && next_not_net {
            let nodes = std::mem::take(&mut reload);
            for (n, node) in nodes.iter().enumerate() {
                if let Err(e) = crate::net_apply::reload(c, node, timeout, done).await {
                    // This node's edits (if its reload failed before taking them) and the
                    // nodes not reloaded yet are not left for someone's next reload.
                    if !opts.adopt_pending_network {
                        let rest = nodes.iter().skip(n).cloned().collect();
                        crate::net_apply::revert(c, &rest, done).await;
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

fn verb(a: &Action) -> &'static str {
    match a {
        Action::Create => "created",
        Action::Update | Action::UpdateRestart { .. } => "updated",
        Action::Move { .. } => "moved",
        Action::Replace { .. } => "replaced",
        Action::Delete => "deleted",
        Action::Impossible { .. } => "skipped",
    }
}

pub(crate) fn id_of(ch: &Change) -> &str {
    ch.addr.split_once('.').map_or("", |(_, id)| id)
}

/// A storage definition's parameters (lists comma-joined, secrets resolved), without `type`.
fn storage_params(ch: &Change, keys: impl Iterator<Item = String>) -> Result<Params, ApplyError> {
    let mut p = Params::new();
    for k in keys {
        if k == "type" {
            continue;
        }
        if let Some(v) = ch.after.get(&k) {
            p.push(&k, v.clone());
        }
    }
    Ok(p)
}

async fn storage(c: &PveClient, ch: &Change) -> Result<(), ApplyError> {
    let id = id_of(ch);
    // Everything a (re)create sends, secrets included, is ready before anything is removed.
    let full = || -> Result<Params, ApplyError> {
        let mut p = storage_params(ch, ch.after.keys().cloned())?;
        for (field, reference) in &ch.secrets {
            p.push(field, resolve(ch, field, reference)?);
        }
        Ok(p)
    };
    let kind = ch.after.get("type").cloned().unwrap_or_default();
    match &ch.action {
        Action::Create => {
            let p = full()?;
            c.create_storage(id, &kind, &p)
                .await
                .map(|_| ())
                .map_err(pve(&ch.addr, "create"))
        }
        Action::Update => {
            let keys = ch.fields.iter().map(|f| f.field.clone());
            let p = storage_params(ch, keys)?;
            // Compare-and-set on the file's digest, read just now.
            let digest = c.storage_config(id).await.map_err(pve(&ch.addr, "read"))?.digest;
            c.update_storage(id, &p, &[], digest.as_deref())
                .await
                .map_err(pve(&ch.addr, "update"))
        }
        Action::Replace { .. } => {
            let p = full()?;
            c.delete_storage(id).await.map_err(pve(&ch.addr, "delete"))?;
            c.create_storage(id, &kind, &p)
                .await
                .map(|_| ())
                .map_err(pve(&ch.addr, "create"))
        }
        Action::Delete => c.delete_storage(id).await.map_err(pve(&ch.addr, "delete")),
        Action::Impossible { .. } | Action::UpdateRestart { .. } | Action::Move { .. } => Ok(()),
    }
}

async fn pool(c: &PveClient, ch: &Change) -> Result<(), ApplyError> {
    let id = id_of(ch);
    let comment = ch.after.get("comment").map(String::as_str);
    match &ch.action {
        Action::Create => c.create_pool(id, comment).await.map_err(pve(&ch.addr, "create")),
        Action::Update | Action::Replace { .. } => c
            .set_pool_comment(id, comment.unwrap_or_default())
            .await
            .map_err(pve(&ch.addr, "update")),
        Action::Delete => c.delete_pool(id).await.map_err(pve(&ch.addr, "delete")),
        Action::Impossible { .. } | Action::UpdateRestart { .. } | Action::Move { .. } => Ok(()),
    }
}

/// The whole interface from its fields (PVE recomputes `method` from each call, so an update
/// always carries everything).
pub(crate) fn interface_from(iface: &str, f: &BTreeMap<String, String>) -> NetworkInterface {
    let get = |k: &str| f.get(k).cloned();
    let list = |k: &str| {
        f.get(k)
            .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let flag = |k: &str| f.get(k).is_some_and(|v| v == "1");
    NetworkInterface {
        iface: iface.to_owned(),
        kind: get("type").unwrap_or_default(),
        method: None,
        cidr: get("cidr"),
        gateway: get("gateway"),
        cidr6: get("cidr6"),
        gateway6: get("gateway6"),
        bridge_ports: list("bridge_ports"),
        bridge_vlan_aware: flag("bridge_vlan_aware"),
        bridge_vids: get("bridge_vids"),
        slaves: list("slaves"),
        bond_mode: get("bond_mode"),
        vlan_id: get("vlan-id").and_then(|v| v.parse().ok()),
        vlan_raw_device: get("vlan-raw-device"),
        autostart: flag("autostart"),
        mtu: get("mtu").and_then(|v| v.parse().ok()),
        comments: get("comments"),
        active: false,
        exists: false,
        options: f
            .iter()
            .filter(|(k, _)| !crate::site::MODELLED_NET.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub(crate) fn job_from(id: &str, f: &BTreeMap<String, String>) -> BackupJob {
    let get = |k: &str| f.get(k).cloned();
    let ids = |k: &str| {
        f.get(k)
            .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_default()
    };
    let known = [
        "schedule",
        "enabled",
        "storage",
        "mode",
        "compress",
        "all",
        "vmid",
        "pool",
        "exclude",
        "prune-backups",
        "comment",
        "node",
    ];
    BackupJob {
        id: id.to_owned(),
        schedule: get("schedule"),
        enabled: f.get("enabled").is_none_or(|v| v == "1"),
        storage: get("storage"),
        mode: get("mode"),
        compress: get("compress"),
        all: f.get("all").is_some_and(|v| v == "1"),
        vmid: ids("vmid"),
        pool: get("pool"),
        exclude: ids("exclude"),
        prune_backups: get("prune-backups").and_then(|p| PruneBackups::parse(&p).ok()),
        comment: get("comment"),
        node: get("node"),
        next_run: None,
        options: f
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

async fn backup(c: &PveClient, ch: &Change) -> Result<(), ApplyError> {
    let id = id_of(ch);
    // A new selection (vmid, all, pool) replaces the old one: the others are removed.
    let mut after = ch.after.clone();
    let changed = |f: &str| ch.fields.iter().any(|c| c.field == f);
    let drop: &[&str] = if changed("vmid") {
        &["all", "exclude", "pool"]
    } else if changed("pool") {
        &["all", "exclude", "vmid"]
    } else if changed("all") || changed("exclude") {
        &["vmid", "pool"]
    } else {
        &[]
    };
    let before = ch.before.clone().unwrap_or_default();
    let delete: Vec<&str> = drop.iter().copied().filter(|k| before.contains_key(*k)).collect();
    for k in drop {
        after.remove(*k);
    }
    let job = job_from(id, &after);
    match &ch.action {
        Action::Create => c.create_backup_job(&job).await.map_err(pve(&ch.addr, "create")),
        Action::Update | Action::Replace { .. } => {
            // Options the file never set are left as they are (only the file's fields are managed).
            c.update_backup_job(&job, &delete)
                .await
                .map_err(pve(&ch.addr, "update"))
        }
        Action::Delete => c.delete_backup_job(id).await.map_err(pve(&ch.addr, "delete")),
        Action::Impossible { .. } | Action::UpdateRestart { .. } | Action::Move { .. } => Ok(()),
    }
}

/// The object as the plan expects it after apply (for tests comparing with the cluster).
pub fn expected(ch: &Change) -> Option<Object> {
    match ch.action {
        Action::Delete | Action::Impossible { .. } => None,
        _ => {
            let mut o = Object::new(ch.kind, ch.addr.clone());
            o.fields = ch
                .after
                .iter()
                .map(|(k, v)| (k.clone(), fields::normalize(ch.kind, k, v)))
                .collect();
            Some(o)
        }
    }
}
