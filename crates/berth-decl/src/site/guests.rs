//! Guests in a site file: VMs (`[[proxmox.vms]]`, with their HA), and containers
//! (`[[proxmox.containers]]`).

use super::{Entries, Reader, ensure, secret};
use crate::doc::{Item, Node};
use crate::fields;
use crate::model::{Kind, Object};

/// A guest entry's object (`vm.N` / `ct.N`) from its `vmid`, on the file's default node; `None`
/// (reported) without a valid VMID.
fn guest(
    r: &mut Reader<'_>,
    kind: Kind,
    e: &Entries,
    line: usize,
    key: &str,
    default_node: Option<&str>,
) -> Option<Object> {
    let Some(vmid) = e
        .iter()
        .find(|(k, _, _)| k == "vmid")
        .and_then(|(_, _, v)| match v.node {
            Node::Int(n) if (100..=999_999_999).contains(&n) => Some(n),
            _ => None,
        })
    else {
        r.err(line, &format!("{key}.vmid"), "missing or not a VMID (100 to 999999999)");
        return None;
    };
    let mut o = Object::new(kind, format!("{}.{vmid}", kind.as_str()));
    o.line = line;
    if let Some(n) = default_node {
        o.fields.insert("node".into(), n.to_owned());
    }
    Some(o)
}

/// A disk, volume or NIC of a guest: `{ storage = …, size = … }` / `{ bridge = …, … }` as fields
/// `slot.option`; sizes in whole GiB.
fn device(r: &mut Reader<'_>, slot: &str, v: &Item, fkey: &str, o: &mut Object) {
    let Some(t) = r.table(v, fkey) else { return };
    for (k, kline, v) in t {
        let Some(text) = r.text(v, &format!("{fkey}.{k}")) else {
            continue;
        };
        let field = format!("{slot}.{k}");
        if k == "size" && !crate::vm::size_bytes(&text).is_some_and(|b| b > 0 && b % (1 << 30) == 0) {
            r.err(
                *kline,
                &format!("{fkey}.size"),
                format!("'{text}' is not a size in whole GiB like 20G (PVE allocates disks in GiB)"),
            );
            continue;
        }
        o.fields.insert(field.clone(), fields::normalize(o.kind, &field, &text));
    }
}

/// The end of a guest entry: its node must be known, and a guest the file does not say to stop
/// runs (and is checked to be running).
fn finish_guest(r: &mut Reader<'_>, o: &mut Object, line: usize, key: &str) {
    if o.absent {
        return;
    }
    if !o.fields.contains_key("node") {
        r.err(
            line,
            &format!("{key}.node"),
            "missing (or set proxmox.node for the whole file)",
        );
    }
    o.fields.entry("state".into()).or_insert_with(|| "running".into());
}

pub(super) fn read_vm(
    r: &mut Reader<'_>,
    e: &Entries,
    line: usize,
    key: &str,
    default_node: Option<&str>,
) -> Vec<Object> {
    use crate::vm;
    let Some(mut o) = guest(r, Kind::Vm, e, line, key, default_node) else {
        return Vec::new();
    };
    let mut ha = None;
    for (k, kline, v) in e {
        let fkey = format!("{key}.{k}");
        match k.as_str() {
            "vmid" => {}
            "ensure" => o.absent = ensure(r, v, &fkey),
            "node" | "name" | "pool" => o.fields.extend(r.text(v, &fkey).map(|t| (k.clone(), t))),
            "state" => match r.text(v, &fkey).as_deref() {
                Some(s @ ("running" | "stopped")) => {
                    o.fields.insert("state".into(), s.to_owned());
                }
                _ => r.err(*kline, &fkey, "expected \"running\" or \"stopped\""),
            },
            "clone" => match v.node {
                Node::Int(n) if n >= 100 => {
                    o.fields.insert("clone".into(), n.to_string());
                }
                _ => r.err(*kline, &fkey, "expected the VMID of a template"),
            },
            "disks" | "nets" => {
                let Some(t) = r.table(v, &fkey) else { continue };
                for (slot, sline, dv) in t {
                    let ok = if k == "disks" {
                        vm::is_disk(slot)
                    } else {
                        vm::is_net(slot)
                    };
                    if !ok {
                        let want = if k == "disks" {
                            "scsiN, virtioN, sataN or ideN"
                        } else {
                            "netN"
                        };
                        r.err(
                            *sline,
                            &format!("{fkey}.{slot}"),
                            format!("not a slot (expected {want})"),
                        );
                        continue;
                    }
                    device(r, slot, dv, &format!("{fkey}.{slot}"), &mut o);
                }
            }
            // The seed's one-disk and one-NIC shapes.
            "disk" => device(r, "scsi0", v, &fkey, &mut o),
            "network" => device(r, "net0", v, &fkey, &mut o),
            "comment" => o.fields.extend(r.text(v, &fkey).map(|t| ("description".to_owned(), t))),
            "cipassword" => o
                .secrets
                .extend(secret(r, v, &fkey).map(|s| ("cipassword".to_owned(), s))),
            "ha" => ha = read_ha(r, v, &fkey, &o, line),
            "cpu_mitigations" => r.err(
                *kline,
                &fkey,
                "not a PVE option; mitigations are a kernel parameter of the guest",
            ),
            f if vm::is_disk(f) || vm::is_net(f) => {
                r.err(*kline, &fkey, format!("write disks.{f} = {{ … }} / nets.{f} = {{ … }}"))
            }
            f if fields::settable(Kind::Vm, f) && !matches!(f, "pool" | "start" | "storage" | "archive") => {
                if let Some(t) = r.text(v, &fkey) {
                    o.fields.insert(f.to_owned(), fields::normalize(Kind::Vm, f, &t));
                }
            }
            _ => r.err(*kline, &fkey, "not an option of a VM (see POST /nodes/{node}/qemu)"),
        }
    }
    with_ha(r, o, ha, line, key)
}

/// The guest and its HA resource: a guest that goes takes it along (PVE's purge).
fn with_ha(r: &mut Reader<'_>, mut o: Object, mut ha: Option<Object>, line: usize, key: &str) -> Vec<Object> {
    finish_guest(r, &mut o, line, key);
    if let Some(h) = &mut ha {
        h.absent = o.absent;
    }
    std::iter::once(o).chain(ha).collect()
}

/// `ha = { state = "started", nodes = ["pve1:2", "pve2"], max_restart = 1, max_relocate = 1 }`.
fn read_ha(r: &mut Reader<'_>, v: &Item, key: &str, guest: &Object, line: usize) -> Option<Object> {
    let t = r.table(v, key)?;
    // PVE's service id: `vm:N` or `ct:N`.
    let mut o = Object::new(Kind::Ha, format!("ha.{}:{}", guest.kind.as_str(), guest.id()));
    o.line = line;
    for (k, kline, v) in t {
        let fkey = format!("{key}.{k}");
        match k.as_str() {
            "state" => match r.text(v, &fkey).as_deref() {
                Some(s @ ("started" | "stopped" | "disabled" | "ignored")) => {
                    o.fields.insert("state".into(), s.to_owned());
                }
                _ => r.err(*kline, &fkey, "expected started, stopped, disabled or ignored"),
            },
            "nodes" => o
                .fields
                .extend(r.text(v, &fkey).map(|t| ("nodes".to_owned(), crate::ha::nodes(&t)))),
            "max_restart" | "max_relocate" => match v.node {
                Node::Int(n) if (0..=10).contains(&n) => {
                    o.fields.insert(k.clone(), n.to_string());
                }
                _ => r.err(*kline, &fkey, "expected a whole number from 0 to 10"),
            },
            "comment" => o.fields.extend(r.text(v, &fkey).map(|t| ("comment".to_owned(), t))),
            _ => r.err(
                *kline,
                &fkey,
                "unknown key (expected state, nodes, max_restart, max_relocate, comment)",
            ),
        }
    }
    Some(o)
}

/// A container: `vmid`, `node`, `ostemplate` (creation), plain options as PVE names them,
/// `rootfs = { storage, size }`, `mps.mpN = { storage, size, mp }`, `nets.netN = { name, bridge, ip, … }`,
/// `password` by reference, `ssh_public_keys`.
pub(super) fn read_ct(
    r: &mut Reader<'_>,
    e: &Entries,
    line: usize,
    key: &str,
    default_node: Option<&str>,
) -> Vec<Object> {
    use crate::ct;
    let Some(mut o) = guest(r, Kind::Ct, e, line, key, default_node) else {
        return Vec::new();
    };
    let mut ha = None;
    for (k, kline, v) in e {
        let fkey = format!("{key}.{k}");
        match k.as_str() {
            "vmid" => {}
            "ensure" => o.absent = ensure(r, v, &fkey),
            "node" | "hostname" | "pool" | "ostemplate" => o.fields.extend(r.text(v, &fkey).map(|t| (k.clone(), t))),
            "state" => match r.text(v, &fkey).as_deref() {
                Some(s @ ("running" | "stopped")) => {
                    o.fields.insert("state".into(), s.to_owned());
                }
                _ => r.err(*kline, &fkey, "expected \"running\" or \"stopped\""),
            },
            "rootfs" => device(r, "rootfs", v, &fkey, &mut o),
            "mps" | "nets" => {
                let Some(t) = r.table(v, &fkey) else { continue };
                for (slot, sline, dv) in t {
                    let ok = if k == "mps" {
                        ct::is_volume(slot) && slot != "rootfs"
                    } else {
                        ct::is_net(slot)
                    };
                    if !ok {
                        let want = if k == "mps" { "mpN" } else { "netN" };
                        r.err(
                            *sline,
                            &format!("{fkey}.{slot}"),
                            format!("not a slot (expected {want})"),
                        );
                        continue;
                    }
                    device(r, slot, dv, &format!("{fkey}.{slot}"), &mut o);
                }
            }
            "comment" => o.fields.extend(r.text(v, &fkey).map(|t| ("description".to_owned(), t))),
            "password" => o
                .secrets
                .extend(secret(r, v, &fkey).map(|s| ("password".to_owned(), s))),
            // One key per line, as PVE takes them.
            "ssh_public_keys" => {
                let keys = match &v.node {
                    Node::List(l) => l
                        .iter()
                        .map(|i| r.text(i, &fkey))
                        .collect::<Option<Vec<_>>>()
                        .map(|k| k.join("\n")),
                    _ => r.text(v, &fkey),
                };
                o.fields.extend(keys.map(|t| ("ssh-public-keys".to_owned(), t)));
            }
            "ha" => ha = read_ha(r, v, &fkey, &o, line),
            f if ct::is_volume(f) || ct::is_net(f) => {
                r.err(*kline, &fkey, format!("write mps.{f} = {{ … }} / nets.{f} = {{ … }}"))
            }
            f if fields::settable(Kind::Ct, f)
                && !matches!(
                    f,
                    "pool"
                        | "start"
                        | "storage"
                        | "restore"
                        | "force"
                        | "unique"
                        | "ignore-unpack-errors"
                        | "bwlimit"
                        | "ha-managed"
                        | "template"
                ) =>
            {
                if let Some(t) = r.text(v, &fkey) {
                    o.fields.insert(f.to_owned(), fields::normalize(Kind::Ct, f, &t));
                }
            }
            _ => r.err(
                *kline,
                &fkey,
                "not an option of a container (see POST /nodes/{node}/lxc)",
            ),
        }
    }
    with_ha(r, o, ha, line, key)
}
