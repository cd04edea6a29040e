//! Reading the cluster into observed objects: every field PVE stores that its create call takes
//! (read-only ones such as `digest`, `active` or `next-run` are left out), normalized as the file's.

use std::collections::BTreeMap;

use berth_proxmox::client::backup::BackupJob;
use berth_proxmox::client::network::NetworkInterface;
use berth_proxmox::client::storage_cfg::StorageConfig;
use berth_proxmox::client::{PveClient, PveError};

use crate::fields;
use crate::model::{Kind, Object, Observed};

fn object(kind: Kind, addr: String, raw: BTreeMap<String, String>) -> Object {
    let mut o = Object::new(kind, addr);
    for (k, v) in raw {
        if (fields::settable(kind, &k) || fields::is_boolean(kind, &k)) && !fields::is_secret(kind, &k) {
            o.fields.insert(k.clone(), fields::normalize(kind, &k, &v));
        }
    }
    o
}

fn flag(b: bool) -> Option<String> {
    Some(if b { "1" } else { "0" }.to_owned())
}

pub(crate) fn storage_object(s: &StorageConfig) -> Object {
    let mut raw = s.options.clone();
    raw.insert("type".into(), s.kind.clone());
    raw.insert("content".into(), s.content.join(","));
    if !s.nodes.is_empty() {
        raw.insert("nodes".into(), s.nodes.join(","));
    }
    raw.extend(s.shared.then(|| ("shared".to_owned(), "1".to_owned())));
    raw.extend(s.disable.then(|| ("disable".to_owned(), "1".to_owned())));
    raw.extend(s.prune_backups.map(|p| ("prune-backups".to_owned(), p.to_string())));
    object(Kind::Storage, format!("storage.{}", s.storage), raw)
}

pub(crate) fn interface_object(node: &str, i: &NetworkInterface) -> Object {
    let mut raw = i.options.clone();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            raw.insert(k.to_owned(), v);
        }
    };
    put("type", Some(i.kind.clone()));
    put("cidr", i.cidr.clone());
    put("gateway", i.gateway.clone());
    put("cidr6", i.cidr6.clone());
    put("gateway6", i.gateway6.clone());
    put(
        "bridge_ports",
        (!i.bridge_ports.is_empty()).then(|| i.bridge_ports.join(",")),
    );
    put("slaves", (!i.slaves.is_empty()).then(|| i.slaves.join(",")));
    put("bridge_vids", i.bridge_vids.clone());
    put("bond_mode", i.bond_mode.clone());
    put("vlan-id", i.vlan_id.map(|v| v.to_string()));
    put("vlan-raw-device", i.vlan_raw_device.clone());
    put("mtu", i.mtu.map(|v| v.to_string()));
    put("comments", i.comments.clone());
    put("autostart", flag(i.autostart));
    if i.kind == "bridge" {
        put("bridge_vlan_aware", flag(i.bridge_vlan_aware));
    }
    // address/netmask are the same fact as cidr.
    for k in ["address", "netmask", "address6", "netmask6"] {
        raw.remove(k);
    }
    object(Kind::Interface, format!("net.{node}.{}", i.iface), raw)
}

pub(crate) fn backup_object(j: &BackupJob) -> Object {
    let mut raw = j.options.clone();
    let ids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            raw.insert(k.to_owned(), v);
        }
    };
    put("schedule", j.schedule.clone());
    put("enabled", flag(j.enabled));
    put("storage", j.storage.clone());
    put("mode", j.mode.clone());
    put("compress", j.compress.clone());
    put("all", j.all.then(|| "1".to_owned()));
    put("vmid", (!j.vmid.is_empty()).then(|| ids(&j.vmid)));
    put("exclude", (!j.exclude.is_empty()).then(|| ids(&j.exclude)));
    put("pool", j.pool.clone());
    put("prune-backups", j.prune_backups.map(|p| p.to_string()));
    put("comment", j.comment.clone());
    put("node", j.node.clone());
    object(Kind::Backup, format!("backup.{}", j.id), raw)
}

/// Every guest (VM or container) that is not a template, with its config and the config's digest
/// (16 reads at a time).
async fn observe_vms(c: &PveClient) -> Result<Vec<(Object, Option<String>)>, PveError> {
    use futures::StreamExt as _;
    let vms: Vec<_> = c
        .cluster_resources(Some("vm"))
        .await?
        .into_iter()
        .filter(|r| matches!(r.kind.as_deref(), Some("qemu" | "lxc")) && !r.template)
        .collect();
    let read = vms.into_iter().map(|r| async move {
        use berth_proxmox::client::GuestType;
        let (vmid, node) = (r.vmid.unwrap_or_default(), r.node.clone().unwrap_or_default());
        let ct = r.kind.as_deref() == Some("lxc");
        let ty = if ct { GuestType::Lxc } else { GuestType::Qemu };
        let cfg = c.guest_config(&node, ty, vmid).await?;
        let config: BTreeMap<String, String> = cfg.keys().filter_map(|k| Some((k.to_owned(), cfg.get(k)?))).collect();
        let running = r.status.as_deref() == Some("running");
        let observed = if ct { crate::ct::observed } else { crate::vm::observed };
        let o = observed(vmid, &node, running, r.pool.as_deref(), &config);
        Ok::<(Object, Option<String>), PveError>((o, cfg.get("digest")))
    });
    let mut out: Vec<(Object, Option<String>)> = futures::stream::iter(read)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    out.sort_by_key(|(o, _)| o.id().parse::<u32>().unwrap_or(0));
    Ok(out)
}

/// Everything this slice manages, read from the cluster.
pub async fn observe(c: &PveClient) -> Result<Observed, PveError> {
    let mut out = Observed::default();
    let status = c.cluster_status().await?;
    out.cluster_name = status
        .iter()
        .find(|m| m.kind.as_deref() == Some("cluster"))
        .and_then(|m| m.name.clone());
    out.nodes = status
        .iter()
        .filter(|m| m.kind.as_deref() == Some("node"))
        .filter_map(|m| m.name.clone())
        .collect();
    if out.nodes.is_empty() {
        // A single node outside a cluster has no member lines.
        out.nodes = c.nodes().await?.into_iter().map(|n| n.node).collect();
    }
    out.nodes.sort();
    out.pve_major = c.version().await?.major().unwrap_or(0);
    for s in c.storage_configs(None).await? {
        out.objects.push(storage_object(&s));
    }
    for p in c.pools(None).await? {
        let mut o = Object::new(Kind::Pool, format!("pool.{}", p.poolid));
        if let Some(comment) = p.comment.filter(|c| !c.is_empty()) {
            o.fields.insert("comment".into(), comment);
        }
        out.objects.push(o);
    }
    for node in out.nodes.clone() {
        let net = c.network(&node, None).await?;
        if let Some(diff) = net.changes {
            out.pending_network.insert(node.clone(), diff);
        }
        for i in &net.interfaces {
            out.objects.push(interface_object(&node, i));
        }
    }
    for (o, digest) in observe_vms(c).await? {
        if let Some(d) = digest {
            out.digests.insert(o.addr.clone(), d);
        }
        out.objects.push(o);
    }
    out.objects.extend(crate::ha::observe(c, out.pve_major).await?);
    for j in c.backup_jobs().await? {
        out.objects.push(backup_object(&j));
    }
    Ok(out)
}
