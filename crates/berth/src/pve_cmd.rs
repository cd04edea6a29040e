//! `berth pve`: Proxmox VE objects beyond guests (pools, storage), read through the same client
//! and credentials as the backend the configuration names.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_agent::config::BackendSettings;
use berth_proxmox::client::storage_cfg::StorageConfig;
use berth_proxmox::client::types::{PoolInfo, StorageInfo};
use serde::Serialize;

use crate::api_cmd::show;
use crate::cli::{
    OutputFormat, PveAction, PveArgs, PveBackupAction, PveHaAction, PveNetworkAction, PvePoolAction, PveStorageAction,
};
use crate::pve_backup::{self, BackupOverview};
use crate::pve_ha::{self, HaOverview};
use crate::pve_network;

fn gib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".into(), |b| format!("{}", b / (1 << 30)))
}

fn pools_table(list: &[PoolInfo]) -> String {
    if list.is_empty() {
        return "no pools".into();
    }
    std::iter::once(format!("{:<24} COMMENT", "POOL"))
        .chain(list.iter().map(|p| {
            format!("{:<24} {}", p.poolid, p.comment.as_deref().unwrap_or("-"))
                .trim_end()
                .to_owned()
        }))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pool_detail(p: &PoolInfo) -> String {
    let mut lines = vec![
        format!("pool         {}", p.poolid),
        format!("comment      {}", p.comment.as_deref().unwrap_or("-")),
    ];
    if p.members.is_empty() {
        lines.push("members      none".into());
    }
    for (i, m) in p.members.iter().enumerate() {
        let what = match (m.kind.as_deref(), m.vmid, m.storage.as_deref()) {
            (Some("storage"), _, Some(s)) => format!("storage {s} on {}", m.node.as_deref().unwrap_or("?")),
            (Some(k), Some(v), _) => format!(
                "{} {v} ({}) on {}",
                if k == "lxc" { "CT" } else { "VM" },
                m.name.as_deref().unwrap_or("-"),
                m.node.as_deref().unwrap_or("?")
            ),
            _ => "?".into(),
        };
        lines.push(format!("{:<12} {what}", if i == 0 { "members" } else { "" }));
    }
    lines.join("\n")
}

fn storage_table(list: &[StorageInfo]) -> String {
    if list.is_empty() {
        return "no storage".into();
    }
    let row =
        |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str| format!("{a:<16} {b:<8} {c:<32} {d:<6} {e:>14} {f}");
    std::iter::once(row("STORAGE", "TYPE", "CONTENT", "SHARED", "USED/TOTAL GiB", "STATE"))
        .chain(list.iter().map(|s| {
            let state = match (s.enabled, s.active) {
                (false, _) => "disabled",
                (true, false) => "inactive",
                (true, true) => "active",
            };
            row(
                s.storage.as_deref().unwrap_or("?"),
                s.kind.as_deref().unwrap_or("?"),
                s.content.as_deref().unwrap_or("-"),
                if s.shared { "yes" } else { "no" },
                &format!("{}/{}", gib(s.used), gib(s.total)),
                state,
            )
        }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `pve storage show`: the definition and, when the node has it, its state there.
#[derive(Serialize)]
struct StorageView {
    config: StorageConfig,
    node: String,
    status: Option<StorageInfo>,
}

fn storage_detail(v: &StorageView) -> String {
    let c = &v.config;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut lines = vec![
        ("storage", c.storage.clone()),
        ("type", c.kind.clone()),
        (
            "content",
            if c.content.is_empty() {
                "none".into()
            } else {
                c.content.join(",")
            },
        ),
        (
            "nodes",
            if c.nodes.is_empty() {
                "all".into()
            } else {
                c.nodes.join(",")
            },
        ),
        (
            "shared",
            yes(c.shared || v.status.as_ref().is_some_and(|s| s.shared)).into(),
        ),
        ("disabled", yes(c.disable).into()),
    ];
    lines.push((
        "on node",
        match &v.status {
            None => format!("{}: not available there", v.node),
            Some(s) if !s.enabled => format!("{}: disabled", v.node),
            Some(s) => format!(
                "{}: {}, {}/{} GiB used",
                v.node,
                if s.active { "active" } else { "inactive" },
                gib(s.used),
                gib(s.total)
            ),
        },
    ));
    if let Some(p) = &c.prune_backups {
        lines.push(("retention", p.to_string()));
    }
    let mut out: Vec<String> = lines.into_iter().map(|(k, v)| format!("{k:<12} {v}")).collect();
    out.extend(c.options.iter().map(|(k, v)| format!("{k:<12} {v}")));
    out.join("\n")
}

/// The PVE client (and configured node) of the proxmox backend `backend` of the configuration.
pub fn pve_client(
    config: &std::path::Path,
    backend: Option<&str>,
    what: &str,
) -> anyhow::Result<(berth_proxmox::PveClient, String, String)> {
    let config = berth_agent::load_config(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let b = config.backend(backend).map_err(|e| anyhow::anyhow!("{e}"))?;
    let BackendSettings::Proxmox(cfg) = &b.settings else {
        bail!(
            "backend {} is {}: `{what}` needs a proxmox backend (--backend NAME)",
            b.name,
            b.kind().as_str()
        );
    };
    let provider = berth_proxmox::ProxmoxProvider::new(cfg.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((provider.client().clone(), cfg.node.clone(), b.name.clone()))
}

pub async fn run(args: PveArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let (client, node, _) = pve_client(&args.config.config, args.backend.as_deref(), "berth pve")?;
    let c = &client;
    match args.action {
        PveAction::Pool(PvePoolAction::List) => {
            let all = c.pools(None).await.context("listing pools")?;
            show(out, &all, |l| pools_table(l))
        }
        PveAction::Pool(PvePoolAction::Show { name }) => {
            let one = c
                .pools(Some(&name))
                .await
                .with_context(|| format!("reading pool {name}"))?
                .into_iter()
                .next()
                .with_context(|| format!("no pool {name}"))?;
            show(out, &one, pool_detail)
        }
        PveAction::Storage(PveStorageAction::List { node: n }) => {
            let n = n.unwrap_or(node);
            let all = c
                .storages(&n, None)
                .await
                .with_context(|| format!("listing the storage of node {n}"))?;
            show(out, &all, |l| storage_table(l))
        }
        PveAction::Storage(PveStorageAction::Show { name, node: n }) => {
            let n = n.unwrap_or(node);
            let config = c
                .storage_config(&name)
                .await
                .with_context(|| format!("reading storage {name}"))?;
            let status = c
                .storages(&n, None)
                .await
                .with_context(|| format!("listing the storage of node {n}"))?
                .into_iter()
                .find(|s| s.storage.as_deref() == Some(name.as_str()));
            let view = StorageView {
                config,
                node: n,
                status,
            };
            show(out, &view, storage_detail)
        }
        PveAction::Network(PveNetworkAction::List { node: n }) => {
            let n = n.unwrap_or(node);
            let net = c
                .network(&n, None)
                .await
                .with_context(|| format!("listing the network of node {n}"))?;
            show(out, &net, pve_network::table)
        }
        PveAction::Network(PveNetworkAction::Show { name, node: n }) => {
            let n = n.unwrap_or(node);
            let one = c
                .network_interface(&n, &name)
                .await
                .with_context(|| format!("reading interface {name} of node {n}"))?;
            show(out, &one, pve_network::detail)
        }
        PveAction::Backup(PveBackupAction::List) => {
            let jobs = c.backup_jobs().await.context("listing backup jobs")?;
            let not_backed_up = c.not_backed_up().await.context("listing guests no backup job covers")?;
            show(out, &BackupOverview { jobs, not_backed_up }, pve_backup::table)
        }
        PveAction::Backup(PveBackupAction::Show { id }) => {
            let job = c
                .backup_job(&id)
                .await
                .with_context(|| format!("reading backup job {id}"))?;
            show(out, &job, pve_backup::detail)
        }
        PveAction::Ha(PveHaAction::List) => {
            let resources = c.ha_resources().await.context("listing HA resources")?;
            let status = c.ha_status().await.context("reading the HA status")?;
            // PVE 9 places resources with rules, PVE 8 with groups.
            let nine = c.version().await.context("reading the PVE version")?.major() >= Some(9);
            let (rules, groups) = match nine {
                true => (Some(c.ha_rules().await.context("listing HA rules")?), None),
                false => (None, Some(c.ha_groups().await.context("listing HA groups")?)),
            };
            let o = HaOverview {
                resources,
                rules,
                groups,
                status,
            };
            show(out, &o, pve_ha::table)
        }
        PveAction::Ha(PveHaAction::Show { sid }) => {
            let r = c
                .ha_resource(&sid)
                .await
                .with_context(|| format!("reading HA resource {sid}"))?;
            show(out, &r, pve_ha::detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: pools, one pool with its members, a node's storage.
    #[test]
    fn pools_and_storage_read_as_tables() {
        let p: PoolInfo = serde_json::from_value(serde_json::json!({
            "poolid": "web", "comment": "front ends",
            "members": [
                {"type": "qemu", "vmid": 101, "name": "web1", "node": "pve1"},
                {"type": "storage", "storage": "shared", "node": "pve1"}
            ]
        }))
        .unwrap();
        assert_eq!(
            pools_table(std::slice::from_ref(&p)),
            "POOL                     COMMENT\nweb                      front ends"
        );
        assert_eq!(
            pool_detail(&p),
            "\
pool         web
comment      front ends
members      VM 101 (web1) on pve1
             storage shared on pve1"
        );
        let s: StorageInfo = serde_json::from_value(serde_json::json!({
            "storage": "local-lvm", "type": "lvmthin", "content": "images,rootdir", "shared": 0,
            "total": 429_496_729_600_u64, "used": 21_474_836_480_u64, "active": 1, "enabled": 1
        }))
        .unwrap();
        assert_eq!(
            storage_table(&[s]),
            "\
STORAGE          TYPE     CONTENT                          SHARED USED/TOTAL GiB STATE
local-lvm        lvmthin  images,rootdir                   no             20/400 active"
        );
        assert_eq!(pools_table(&[]), "no pools");
    }

    /// Golden: one storage's definition with its state on the node.
    #[test]
    fn a_storage_reads_as_its_options() {
        let config: StorageConfig = serde_json::from_value(serde_json::json!({
            "storage": "nas", "type": "nfs", "content": "images,backup", "server": "10.0.0.9",
            "export": "/tank", "path": "/mnt/pve/nas", "prune-backups": "keep-last=3,keep-daily=7",
            "digest": "d1"
        }))
        .unwrap();
        let status: StorageInfo = serde_json::from_value(serde_json::json!({
            "storage": "nas", "type": "nfs", "shared": 1, "total": 2_199_023_255_552_u64,
            "used": 10_737_418_240_u64, "active": 1, "enabled": 1
        }))
        .unwrap();
        let view = StorageView {
            config,
            node: "pve1".into(),
            status: Some(status),
        };
        assert_eq!(
            storage_detail(&view),
            "\
storage      nas
type         nfs
content      images,backup
nodes        all
shared       yes
disabled     no
on node      pve1: active, 10/2048 GiB used
retention    keep-daily=7,keep-last=3
export       /tank
path         /mnt/pve/nas
server       10.0.0.9"
        );
    }
}
