//! A cluster written as a site file: every object of the kinds this mode manages with every field
//! PVE stores that its create call takes, so that planning the file against the same cluster
//! shows no change. Secrets cannot be read back and are left for the user to reference.

use std::fmt::Write as _;

use crate::fields;
use crate::model::{Kind, Object, Observed};

fn value(kind: Kind, field: &str, v: &str) -> String {
    if fields::is_boolean(kind, field) {
        return (v == "1").to_string();
    }
    if fields::is_set(kind, field) {
        let items: Vec<String> = v
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<u32>() {
                Ok(n) if matches!(field, "vmid" | "exclude") => n.to_string(),
                _ => toml_string(s),
            })
            .collect();
        return format!("[{}]", items.join(", "));
    }
    if let Ok(n) = v.parse::<i64>()
        && !v.starts_with('0')
        && field != "comment"
        && field != "comments"
    {
        return n.to_string();
    }
    toml_string(v)
}

/// `a,b` as a TOML list of strings.
fn list(v: &str) -> String {
    let items: Vec<String> = v.split(',').filter(|s| !s.is_empty()).map(toml_string).collect();
    format!("[{}]", items.join(", "))
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key(k: &str) -> String {
    if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_owned()
    } else {
        toml_string(k)
    }
}

fn entry(out: &mut String, table: &str, ids: &[(&str, &str)], o: &Object) {
    let _ = writeln!(out, "\n[[proxmox.{table}]]");
    for (k, v) in ids {
        let _ = writeln!(out, "{k} = {}", toml_string(v));
    }
    for (k, v) in &o.fields {
        if k == "prune-backups" {
            let parts: Vec<String> = v
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, n)| match k {
                    "keep-all" => format!("keep_all = {}", n == "1"),
                    _ => format!("{} = {n}", k.replace('-', "_")),
                })
                .collect();
            let _ = writeln!(out, "retention = {{ {} }}", parts.join(", "));
        } else {
            let _ = writeln!(out, "{} = {}", key(k), value(o.kind, k, v));
        }
    }
}

/// A guest: plain keys, then its devices: a VM's `disks.SLOT = { … }` and `nets.SLOT = { … }`, a
/// container's `rootfs = { … }`, `mps.SLOT = { … }` and `nets.SLOT = { … }`.
fn guest_entry(out: &mut String, o: &Object) {
    let table = if o.kind == Kind::Ct { "containers" } else { "vms" };
    let _ = writeln!(out, "\n[[proxmox.{table}]]\nvmid = {}", o.id());
    let mut devices: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
    for (k, v) in &o.fields {
        match k.split_once('.') {
            Some((slot, opt)) => {
                let shown = match opt {
                    "size" => toml_string(&crate::vm::size_text(v.parse().unwrap_or(0))),
                    _ => value(o.kind, k, v),
                };
                devices.entry(slot).or_default().push(format!("{} = {shown}", key(opt)));
            }
            None => {
                let _ = writeln!(out, "{} = {}", key(k), value(o.kind, k, v));
            }
        }
    }
    for (slot, parts) in devices {
        let table = match (o.kind, slot) {
            (_, s) if crate::vm::is_net(s) => "nets.",
            (Kind::Ct, "rootfs") => "",
            (Kind::Ct, _) => "mps.",
            _ => "disks.",
        };
        let _ = writeln!(out, "{table}{slot} = {{ {} }}", parts.join(", "));
    }
}

/// The site file of `observed` (TOML). `backend` names the agent configuration's backend.
pub fn export(observed: &Observed, backend: Option<&str>) -> String {
    let mut out = String::from(
        "# Written by `berth discover --export`: planning it against the same cluster shows no change.\n\
         version = 1\n\n[proxmox]\n",
    );
    if let Some(b) = backend {
        let _ = writeln!(out, "backend = {}", toml_string(b));
    }
    let nodes: Vec<String> = observed.nodes.iter().map(|n| toml_string(n)).collect();
    match &observed.cluster_name {
        Some(name) => {
            let _ = writeln!(
                out,
                "cluster = {{ name = {}, nodes = [{}] }}",
                toml_string(name),
                nodes.join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "cluster = {{ nodes = [{}] }}", nodes.join(", "));
        }
    }
    for o in observed.objects.iter().filter(|o| o.kind == Kind::Storage) {
        entry(&mut out, "storage", &[("id", o.id())], o);
    }
    for o in observed.objects.iter().filter(|o| o.kind == Kind::Pool) {
        entry(&mut out, "pools", &[("id", o.id())], o);
    }
    for o in observed.objects.iter().filter(|o| o.kind == Kind::Interface) {
        let (node, iface) = o.node_iface().unwrap_or_default();
        entry(&mut out, "network", &[("node", node), ("iface", iface)], o);
    }
    let guests = observed.objects.iter().filter(|o| o.kind == Kind::Vm);
    let (mut left_out, mut ordered) = (Vec::new(), Vec::new());
    for o in guests.chain(observed.objects.iter().filter(|o| o.kind == Kind::Ct)) {
        match o.control_plane_owner() {
            Some(_) => left_out.push(o.addr.as_str()),
            None => ordered.push(o),
        }
    }
    if !left_out.is_empty() {
        // Their orders manage them: a site file never touches them.
        const SHOWN: usize = 20;
        let mut names = left_out[..left_out.len().min(SHOWN)].join(", ");
        if left_out.len() > SHOWN {
            names.push_str(&format!(" and {} more", left_out.len() - SHOWN));
        }
        let _ = writeln!(
            out,
            "\n# Left out: {} machine(s) of Berth's control plane (their orders manage them): {names}",
            left_out.len()
        );
    }
    for o in ordered {
        guest_entry(&mut out, o);
        if let Some(ha) = observed.find(&format!("ha.{}:{}", o.kind.as_str(), o.id())) {
            let parts: Vec<String> = ha
                .fields
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "nodes" => format!("nodes = {}", list(v)),
                    "max_restart" | "max_relocate" => format!("{k} = {v}"),
                    _ => format!("{k} = {}", toml_string(v)),
                })
                .collect();
            let _ = writeln!(out, "ha = {{ {} }}", parts.join(", "));
        }
    }
    for o in observed.objects.iter().filter(|o| o.kind == Kind::Backup) {
        entry(&mut out, "backups", &[("id", o.id())], o);
    }
    out
}
