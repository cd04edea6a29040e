//! The site file (`site.toml`, or the seed's JSON shape `{"version":1,"plugins":{"proxmox":{…}}}`)
//! read into desired objects. Every problem is reported at once, each as file:line: key: what was
//! expected; nothing is applied from a file with one.

use std::collections::BTreeMap;

use crate::doc::{Item, Node, load};

mod guests;
use crate::fields;
use crate::model::{Desired, Kind, Object};

/// A problem in the site file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct SiteError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

struct Reader<'a> {
    file: &'a str,
    errors: Vec<SiteError>,
}

type Entries = [(String, usize, Item)];

impl Reader<'_> {
    fn err(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.errors.push(SiteError {
            file: self.file.to_owned(),
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }
    fn table<'i>(&mut self, item: &'i Item, key: &str) -> Option<&'i Entries> {
        match &item.node {
            Node::Table(t) => Some(t),
            other => {
                self.err(item.line, key, format!("expected a table, found {}", other.kind()));
                None
            }
        }
    }
    fn list<'i>(&mut self, item: &'i Item, key: &str) -> &'i [Item] {
        match &item.node {
            Node::List(l) => l,
            other => {
                self.err(item.line, key, format!("expected a list, found {}", other.kind()));
                &[]
            }
        }
    }
    /// A scalar as text (strings, integers, booleans as 1/0), or a list joined with commas.
    fn text(&mut self, item: &Item, key: &str) -> Option<String> {
        match &item.node {
            Node::Str(s) => Some(s.clone()),
            Node::Int(n) => Some(n.to_string()),
            Node::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
            Node::List(l) => {
                let parts: Option<Vec<String>> = l.iter().map(|i| self.text(i, key)).collect();
                parts.map(|p| p.join(","))
            }
            other => {
                self.err(
                    item.line,
                    key,
                    format!("expected a string, a number or a list, found {}", other.kind()),
                );
                None
            }
        }
    }
}

/// Reads a site file's text. `name` is used in errors; a `.json` name reads the seed's JSON shape.
pub fn parse(name: &str, text: &str) -> Result<Desired, Vec<SiteError>> {
    let mut r = Reader {
        file: name,
        errors: Vec::new(),
    };
    let json = name.ends_with(".json");
    let root = match load(text, json) {
        Ok(root) => root,
        Err((line, message)) => {
            r.err(line, "(syntax)", message);
            return Err(r.errors);
        }
    };
    let mut desired = Desired::default();
    let Some(top) = r.table(&root, "(document)") else {
        return Err(r.errors);
    };
    let mut proxmox: Option<&Item> = None;
    for (k, line, v) in top {
        match k.as_str() {
            "version" => {
                if v.node != Node::Int(1) {
                    r.err(*line, "version", "only version 1 is known");
                }
            }
            "stack" => {
                r.text(v, "stack");
            }
            "proxmox" if !json => proxmox = Some(v),
            "plugins" if json => {
                if let Some(t) = r.table(v, "plugins") {
                    for (pk, pl, pv) in t {
                        match pk.as_str() {
                            "proxmox" => proxmox = Some(pv),
                            _ => r.err(*pl, &format!("plugins.{pk}"), "only the proxmox plugin is known"),
                        }
                    }
                }
            }
            _ => r.err(*line, k, "unknown key (expected version, stack, proxmox)"),
        }
    }
    match proxmox {
        Some(p) => read_proxmox(&mut r, p, &mut desired),
        None => r.err(1, "proxmox", "the site has no proxmox section"),
    }
    check_unique(&mut r, &desired);
    if r.errors.is_empty() {
        Ok(desired)
    } else {
        Err(r.errors)
    }
}

fn read_proxmox(r: &mut Reader<'_>, item: &Item, d: &mut Desired) {
    let Some(t) = r.table(item, "proxmox") else { return };
    // The seed names one node for the whole file; entries may name their own.
    let default_node = t
        .iter()
        .find(|(k, _, _)| k == "node")
        .and_then(|(_, _, v)| match &v.node {
            Node::Str(s) => Some(s.clone()),
            _ => None,
        });
    for (k, line, v) in t {
        let key = format!("proxmox.{k}");
        match k.as_str() {
            "backend" => d.backend = r.text(v, &key),
            "node" => {}
            "cluster" => read_cluster(r, v, d),
            "storage" | "pools" | "network" | "backups" => {
                for (i, entry) in r.list(v, &key).iter().enumerate() {
                    let key = format!("{key}[{i}]");
                    let Some(e) = r.table(entry, &key) else { continue };
                    let obj = match k.as_str() {
                        "storage" => read_storage(r, e, entry.line, &key),
                        "pools" => read_pool(r, e, entry.line, &key),
                        "network" => read_interface(r, e, entry.line, &key, default_node.as_deref()),
                        _ => read_backup(r, e, entry.line, &key),
                    };
                    d.objects.extend(obj);
                }
            }
            "vms" => {
                for (i, entry) in r.list(v, &key).iter().enumerate() {
                    let key = format!("{key}[{i}]");
                    let Some(e) = r.table(entry, &key) else { continue };
                    d.objects
                        .extend(guests::read_vm(r, e, entry.line, &key, default_node.as_deref()));
                }
            }
            "containers" => {
                for (i, entry) in r.list(v, &key).iter().enumerate() {
                    let key = format!("{key}[{i}]");
                    let Some(e) = r.table(entry, &key) else { continue };
                    d.objects
                        .extend(guests::read_ct(r, e, entry.line, &key, default_node.as_deref()));
                }
            }
            _ => r.err(
                *line,
                &key,
                "unknown key (expected backend, node, cluster, storage, pools, network, vms, containers, backups)",
            ),
        }
    }
}

fn read_cluster(r: &mut Reader<'_>, item: &Item, d: &mut Desired) {
    let Some(t) = r.table(item, "proxmox.cluster") else {
        return;
    };
    for (k, line, v) in t {
        let key = format!("proxmox.cluster.{k}");
        match k.as_str() {
            "name" => d.cluster_name = r.text(v, &key),
            "enabled" => {
                if v.node != Node::Bool(true) {
                    r.err(
                        *line,
                        &key,
                        "a cluster is asserted, never created or dissolved: leave it true or out",
                    );
                }
            }
            "nodes" => {
                for n in r.list(v, &key) {
                    match &n.node {
                        Node::Str(s) => d.nodes.push(s.clone()),
                        Node::Table(nt) => match nt.iter().find(|(k, _, _)| k == "name") {
                            Some((_, _, Item { node: Node::Str(s), .. })) => d.nodes.push(s.clone()),
                            _ => r.err(n.line, &key, "a node is its name, or a table with a name"),
                        },
                        other => r.err(n.line, &key, format!("expected a node name, found {}", other.kind())),
                    }
                }
                d.nodes.sort();
            }
            _ => r.err(*line, &key, "unknown key (expected name, nodes)"),
        }
    }
}

/// Reads `ensure`; true when the entry asks for the object to be gone.
fn ensure(r: &mut Reader<'_>, v: &Item, key: &str) -> bool {
    match &v.node {
        Node::Str(s) if s == "absent" => true,
        Node::Str(s) if s == "present" => false,
        _ => {
            r.err(v.line, key, "expected \"present\" or \"absent\"");
            false
        }
    }
}

/// `retention = { keep_daily = 7 }` → `prune-backups`.
fn retention(r: &mut Reader<'_>, v: &Item, key: &str) -> Option<String> {
    let t = r.table(v, key)?;
    let mut parts = Vec::new();
    for (k, line, v) in t {
        let name = k.replace('_', "-");
        let ok = matches!(
            name.as_str(),
            "keep-all" | "keep-last" | "keep-hourly" | "keep-daily" | "keep-weekly" | "keep-monthly" | "keep-yearly"
        );
        match (&v.node, ok) {
            (_, false) => r.err(*line, &format!("{key}.{k}"), "unknown retention (expected keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly or keep_all)"),
            (Node::Int(n), true) if *n >= 1 => parts.push(format!("{name}={n}")),
            (Node::Bool(b), true) if name == "keep-all" => parts.push(format!("keep-all={}", u8::from(*b))),
            _ => r.err(*line, &format!("{key}.{k}"), "expected a whole number of 1 or more"),
        }
    }
    Some(fields::normalize(Kind::Backup, "prune-backups", &parts.join(",")))
}

/// A secret field: `{ secret = "env:NAME" }` or `{ secret = "file:/path" }`, never inline.
fn secret(r: &mut Reader<'_>, v: &Item, key: &str) -> Option<String> {
    if let Node::Table(t) = &v.node
        && let [(k, _, Item { node: Node::Str(s), .. })] = t.as_slice()
        && k == "secret"
        && (s.starts_with("env:") || s.starts_with("file:"))
    {
        return Some(s.clone());
    }
    r.err(
        v.line,
        key,
        "a secret is a reference, { secret = \"env:NAME\" } or { secret = \"file:/path\" }, never written inline",
    );
    None
}

fn id_of(r: &mut Reader<'_>, e: &Entries, line: usize, key: &str, name: &str) -> Option<String> {
    match e.iter().find(|(k, _, _)| k == name) {
        Some((_, _, v)) => match &v.node {
            Node::Str(s) if !s.is_empty() => Some(s.clone()),
            _ => {
                r.err(v.line, &format!("{key}.{name}"), "expected a non-empty string");
                None
            }
        },
        None => {
            r.err(line, &format!("{key}.{name}"), "missing");
            None
        }
    }
}

fn read_storage(r: &mut Reader<'_>, e: &Entries, line: usize, key: &str) -> Option<Object> {
    let id = id_of(r, e, line, key, "id")?;
    let mut o = Object::new(Kind::Storage, format!("storage.{id}"));
    o.line = line;
    for (k, kline, v) in e {
        let fkey = format!("{key}.{k}");
        match k.as_str() {
            "id" => {}
            "ensure" => o.absent = ensure(r, v, &fkey),
            "retention" => o
                .fields
                .extend(retention(r, v, &fkey).map(|p| ("prune-backups".to_owned(), p))),
            f if fields::is_secret(Kind::Storage, f) => {
                o.secrets.extend(secret(r, v, &fkey).map(|s| (f.to_owned(), s)))
            }
            f if fields::settable(Kind::Storage, f) || f == "disable" || f == "shared" => {
                if let Some(t) = r.text(v, &fkey) {
                    o.fields.insert(f.to_owned(), fields::normalize(Kind::Storage, f, &t));
                }
            }
            _ => r.err(
                *kline,
                &fkey,
                "not an option of a storage definition (see POST /storage)",
            ),
        }
    }
    if !o.absent && !o.fields.contains_key("type") {
        r.err(
            line,
            &format!("{key}.type"),
            "missing (dir, lvmthin, nfs, cifs, zfspool, pbs, …)",
        );
    }
    Some(o)
}

fn read_pool(r: &mut Reader<'_>, e: &Entries, line: usize, key: &str) -> Option<Object> {
    let id = id_of(r, e, line, key, "id")?;
    let mut o = Object::new(Kind::Pool, format!("pool.{id}"));
    o.line = line;
    for (k, kline, v) in e {
        let fkey = format!("{key}.{k}");
        match k.as_str() {
            "id" => {}
            "ensure" => o.absent = ensure(r, v, &fkey),
            // PVE keeps no empty comment: "" is the same as none.
            "comment" => o.fields.extend(
                r.text(v, &fkey)
                    .filter(|t| !t.is_empty())
                    .map(|t| ("comment".to_owned(), t)),
            ),
            _ => r.err(
                *kline,
                &fkey,
                "unknown key (expected id, comment, ensure; members live on the guests)",
            ),
        }
    }
    Some(o)
}

/// The interface options Berth manages (and sends whole on every update).
pub(crate) const MODELLED_NET: &[&str] = &[
    "type",
    "cidr",
    "address",
    "gateway",
    "cidr6",
    "gateway6",
    "bridge_ports",
    "slaves",
    "bridge_vlan_aware",
    "bridge_vids",
    "bond_mode",
    "vlan-id",
    "vlan-raw-device",
    "autostart",
    "mtu",
    "comments",
];

fn read_interface(
    r: &mut Reader<'_>,
    e: &Entries,
    line: usize,
    key: &str,
    default_node: Option<&str>,
) -> Option<Object> {
    let iface = id_of(r, e, line, key, "iface")?;
    let node = match e.iter().find(|(k, _, _)| k == "node") {
        Some((_, _, v)) => r.text(v, &format!("{key}.node"))?,
        None => match default_node {
            Some(n) => n.to_owned(),
            None => {
                r.err(
                    line,
                    &format!("{key}.node"),
                    "missing (or set proxmox.node for the whole file)",
                );
                return None;
            }
        },
    };
    let mut o = Object::new(Kind::Interface, format!("net.{node}.{iface}"));
    o.line = line;
    let (mut netmask, mut netmask6) = (None, None);
    for (k, kline, v) in e {
        let fkey = format!("{key}.{k}");
        // The seed's spellings.
        let f = match k.as_str() {
            "comment" => "comments",
            "vlan_aware" => "bridge_vlan_aware",
            other => other,
        };
        match f {
            "iface" | "node" => {}
            "ensure" => o.absent = ensure(r, v, &fkey),
            "netmask" => netmask = r.text(v, &fkey).map(|m| (m, *kline)),
            "netmask6" => netmask6 = r.text(v, &fkey).map(|m| (m, *kline)),
            f if fields::settable(Kind::Interface, f) => {
                if let Some(t) = r.text(v, &fkey) {
                    o.fields.insert(f.to_owned(), fields::normalize(Kind::Interface, f, &t));
                }
            }
            _ => r.err(
                *kline,
                &fkey,
                "not an option of a network interface (see POST /nodes/{node}/network)",
            ),
        }
    }
    // address + netmask (the seed's form) is the same as cidr.
    if let Some((mask, mline)) = netmask {
        let bits = match mask.parse::<u8>() {
            Ok(b) if b <= 32 => Some(b),
            Ok(_) => None,
            Err(_) => mask
                .parse::<std::net::Ipv4Addr>()
                .ok()
                .map(|m| u32::from(m).count_ones() as u8),
        };
        match (o.fields.remove("address"), bits) {
            (Some(a), Some(b)) => {
                o.fields.insert("cidr".into(), format!("{a}/{b}"));
            }
            (None, _) => r.err(mline, &format!("{key}.netmask"), "a netmask needs an address"),
            (_, None) => r.err(mline, &format!("{key}.netmask"), format!("'{mask}' is not a netmask")),
        }
    } else if o.fields.contains_key("address") {
        r.err(
            line,
            &format!("{key}.address"),
            "an address needs a netmask, or write cidr = \"A.B.C.D/N\"",
        );
    }
    // address6 + netmask6 (a prefix length) is the same as cidr6.
    match (o.fields.remove("address6"), netmask6) {
        (Some(a), Some((m, mline))) => match m.parse::<u8>() {
            Ok(b) if b <= 128 => {
                o.fields.insert("cidr6".into(), format!("{a}/{b}"));
            }
            _ => r.err(
                mline,
                &format!("{key}.netmask6"),
                format!("'{m}' is not a prefix length (0 to 128)"),
            ),
        },
        (None, Some((_, mline))) => r.err(mline, &format!("{key}.netmask6"), "a netmask6 needs an address6"),
        (Some(_), None) => r.err(
            line,
            &format!("{key}.address6"),
            "an address6 needs a netmask6, or write cidr6 = \"2001:db8::2/64\"",
        ),
        (None, None) => {}
    }
    if let Some(c) = o.fields.get("cidr")
        && !valid_cidr(c, 32, |a| a.parse::<std::net::Ipv4Addr>().is_ok())
    {
        r.err(
            line,
            &format!("{key}.cidr"),
            format!("'{c}' is not an IPv4 address with a prefix length, like 10.0.0.2/24"),
        );
    }
    // PVE writes an inet6 stanza (and its comments) only for an address.
    if o.fields.contains_key("comments6") && !o.fields.contains_key("cidr6") {
        r.err(
            line,
            &format!("{key}.comments6"),
            "comments6 belong to an IPv6 address: set cidr6 (or address6 + netmask6)",
        );
    }
    if let Some(c) = o.fields.get("cidr6")
        && !valid_cidr(c, 128, |a| a.parse::<std::net::Ipv6Addr>().is_ok())
    {
        r.err(
            line,
            &format!("{key}.cidr6"),
            format!("'{c}' is not an IPv6 address with a prefix length, like 2001:db8::2/64"),
        );
    }
    if !o.absent && !o.fields.contains_key("type") {
        r.err(line, &format!("{key}.type"), "missing (bridge, bond, eth, vlan, …)");
    }
    Some(o)
}

/// `address/prefix` with a valid address and a prefix length up to `max`.
fn valid_cidr(c: &str, max: u8, address: impl Fn(&str) -> bool) -> bool {
    c.split_once('/')
        .is_some_and(|(a, n)| address(a) && n.parse::<u8>().is_ok_and(|n| n <= max))
}

fn read_backup(r: &mut Reader<'_>, e: &Entries, line: usize, key: &str) -> Option<Object> {
    let Some(id) = e
        .iter()
        .find(|(k, _, _)| k == "id")
        .and_then(|(_, _, v)| match &v.node {
            Node::Str(s) => Some(s.clone()),
            _ => None,
        })
    else {
        r.err(
            line,
            &format!("{key}.id"),
            "missing: a backup job needs an id (without one PVE names it with a UUID nobody can find again)",
        );
        return None;
    };
    let mut o = Object::new(Kind::Backup, format!("backup.{id}"));
    o.line = line;
    let mut guests: Vec<String> = Vec::new();
    let mut time = None;
    for (k, kline, v) in e {
        let fkey = format!("{key}.{k}");
        match k.as_str() {
            "id" => {}
            "ensure" => o.absent = ensure(r, v, &fkey),
            "retention" => o
                .fields
                .extend(retention(r, v, &fkey).map(|p| ("prune-backups".to_owned(), p))),
            // The seed: vms/containers/guests are one VMID list; `time` with schedule "daily".
            "guests" | "vms" | "containers" => guests.extend(r.text(v, &fkey)),
            "time" => time = r.text(v, &fkey),
            "compression" => o.fields.extend(r.text(v, &fkey).map(|t| ("compress".to_owned(), t))),
            f if fields::settable(Kind::Backup, f) => {
                if let Some(t) = r.text(v, &fkey) {
                    o.fields.insert(f.to_owned(), fields::normalize(Kind::Backup, f, &t));
                }
            }
            _ => r.err(
                *kline,
                &fkey,
                "not an option of a backup job (see POST /cluster/backup)",
            ),
        }
    }
    if !guests.is_empty() {
        o.fields.insert(
            "vmid".into(),
            fields::normalize(Kind::Backup, "vmid", &guests.join(",")),
        );
    }
    match (o.fields.get("schedule").cloned(), time) {
        (Some(s), Some(t)) if s == "daily" => {
            o.fields.insert("schedule".into(), t);
        }
        (None, Some(t)) => {
            o.fields.insert("schedule".into(), t);
        }
        (Some(_), Some(_)) => r.err(line, &format!("{key}.time"), "time goes with schedule = \"daily\" only"),
        _ => {}
    }
    if !o.absent && !o.fields.contains_key("schedule") {
        r.err(
            line,
            &format!("{key}.schedule"),
            "missing (a calendar event like \"02:00\" or \"sat 03:30\")",
        );
    }
    Some(o)
}

/// The hash of a site file's text (kept in a plan: which file it was made from).
pub fn file_hash(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Two entries with one address.
fn check_unique(r: &mut Reader<'_>, d: &Desired) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &d.objects {
        if let Some(first) = seen.insert(&o.addr, o.line) {
            r.err(o.line, &o.addr, format!("declared twice (first on line {first})"));
        }
    }
    // VMs and containers share one VMID space.
    let mut vmids: BTreeMap<&str, (usize, Kind)> = BTreeMap::new();
    for o in d.objects.iter().filter(|o| matches!(o.kind, Kind::Vm | Kind::Ct)) {
        if let Some((first, kind)) = vmids.insert(o.id(), (o.line, o.kind))
            && kind != o.kind
        {
            r.err(
                o.line,
                &o.addr,
                format!(
                    "VMID {} is declared twice (first on line {first}): VMs and containers share VMIDs",
                    o.id()
                ),
            );
        }
    }
}
