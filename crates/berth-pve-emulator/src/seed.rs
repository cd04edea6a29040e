//! The standard world (nodes pve1/pve2, storages, templates 9000/9001/9100/9101, CT template, pool)
//! and foreign VMs.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::state::{Guest, Kind, Node, StorageDef, Volume, World, unix_now};

const GIB: u64 = 1 << 30;

pub(crate) const CT_TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// Creates nodes, storages, templates, the CT template volume and pool `berth`.
pub(crate) fn seed(world: &mut World) {
    world.nodes.push(Node {
        name: "pve1".into(),
        index: 1,
        cpus: 16,
        memory: 64 * GIB,
        online: true,
    });
    world.nodes.push(Node {
        name: "pve2".into(),
        index: 2,
        cpus: 8,
        memory: 32 * GIB,
        online: true,
    });
    let all_nodes = vec!["pve1".to_string(), "pve2".to_string()];
    for n in &world.nodes {
        let net = crate::netcfg::NodeNetwork::installed(n.index);
        world.networks.insert(n.name.clone(), net);
    }
    let dir = |id: &str, kind: &str, gib: u64, content: &[&str], cfg: &[(&str, &str)]| {
        let mut s = StorageDef::new(id, kind, gib * GIB, all_nodes.clone());
        s.content = content.iter().map(|c| c.to_string()).collect();
        s.cfg = cfg.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s
    };
    world.storages.push(dir(
        "local",
        "dir",
        100,
        &["iso", "vztmpl", "backup", "snippets"],
        &[("path", "/var/lib/vz")],
    ));
    world.storages.push(dir(
        "local-lvm",
        "lvmthin",
        400,
        &["images", "rootdir"],
        &[("vgname", "pve"), ("thinpool", "data")],
    ));
    world.storages.push(dir(
        "shared",
        "nfs",
        2048,
        &["images", "rootdir"],
        &[
            ("server", "10.0.0.20"),
            ("export", "/export/pve"),
            ("path", "/mnt/pve/shared"),
        ],
    ));
    for node in &all_nodes {
        let volname = CT_TEMPLATE.trim_start_matches("local:").to_string();
        world.insert_volume(
            node,
            Volume {
                storage: "local".into(),
                volname,
                size: 126_530_040,
                format: "tzst".into(),
                content: "vztmpl".into(),
                vmid: None,
                ctime: unix_now().saturating_sub(86_400 * 30),
                parent: None,
            },
        );
    }
    add_template(world, 9000, "pve1", "debian-12-cloud", "local-lvm");
    add_template(world, 9001, "pve2", "debian-12-cloud", "local-lvm");
    add_template(world, 9100, "pve2", "ubuntu-24-shared", "shared");
    add_template(world, 9101, "pve2", "alma-9-local", "local-lvm");
    world.pools.insert(
        "berth".into(),
        crate::state::Pool {
            comment: Some("Berth-managed guests".into()),
            ..Default::default()
        },
    );
}

fn add_template(world: &mut World, vmid: u32, node: &str, name: &str, storage: &str) {
    let file_based = world.storage(storage).is_some_and(|s| s.is_file_based());
    let (disk, ci, fmt) = if file_based {
        (
            format!("{vmid}/base-{vmid}-disk-0.qcow2"),
            format!("{vmid}/vm-{vmid}-cloudinit.qcow2"),
            "qcow2",
        )
    } else {
        (format!("base-{vmid}-disk-0"), format!("vm-{vmid}-cloudinit"), "raw")
    };
    let ctime = unix_now().saturating_sub(86_400 * 7);
    for (volname, size) in [(&disk, 2 * GIB), (&ci, 4 << 20)] {
        world.insert_volume(
            node,
            Volume {
                storage: storage.to_string(),
                volname: volname.clone(),
                size,
                format: fmt.to_string(),
                content: "images".into(),
                vmid: Some(vmid),
                ctime,
                parent: None,
            },
        );
    }
    let mac = format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (vmid >> 16) & 0xff,
        (vmid >> 8) & 0xff,
        vmid & 0xff
    );
    let config: BTreeMap<String, String> = [
        ("agent", "1".to_string()),
        ("boot", "order=scsi0".to_string()),
        ("cores", "1".to_string()),
        ("ide2", format!("{storage}:{ci},media=cdrom")),
        ("ipconfig0", "ip=dhcp".to_string()),
        ("memory", "1024".to_string()),
        ("meta", format!("creation-qemu=9.2.0,ctime={ctime}")),
        ("name", name.to_string()),
        ("net0", format!("virtio={mac},bridge=vmbr0")),
        ("ostype", "l26".to_string()),
        ("scsi0", format!("{storage}:{disk},size=2G")),
        ("scsihw", "virtio-scsi-single".to_string()),
        ("serial0", "socket".to_string()),
        ("smbios1", format!("uuid={}", crate::propstr::random_uuid())),
        ("sockets", "1".to_string()),
        ("template", "1".to_string()),
        ("vga", "serial0".to_string()),
        ("vmgenid", crate::propstr::random_uuid()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    world.guests.insert(vmid, Guest::new(vmid, node, Kind::Qemu, config));
}

/// A running VM carrying Berth's marker for `instance_id` (tags and description, as the
/// Proxmox backend writes them), made behind the agent's back.
pub(crate) fn add_marked_vm(world: &mut World, node: &str, vmid: u32, name: &str, instance_id: &str) {
    add_foreign_vm(world, node, vmid, name);
    let guest = world.guests.get_mut(&vmid).expect("just added");
    guest.config.insert("tags".into(), format!("berth;berth-{instance_id}"));
    guest.config.insert(
        "description".into(),
        format!("Managed by Berth; do not edit the line below.\nberth-instance-id: {instance_id}\n"),
    );
}

/// A running VM that Berth does not own (2 cores, 2 GiB, 8G disk on local-lvm, agent up).
pub(crate) fn add_foreign_vm(world: &mut World, node: &str, vmid: u32, name: &str) {
    let volid = world.alloc_disk(node, "local-lvm", vmid, 8 * GIB, None, "images");
    let config: BTreeMap<String, String> = [
        ("agent", "1".to_string()),
        ("boot", "order=scsi0".to_string()),
        ("cores", "2".to_string()),
        ("memory", "2048".to_string()),
        ("name", name.to_string()),
        ("net0", format!("virtio={},bridge=vmbr0", crate::propstr::random_mac())),
        ("ostype", "l26".to_string()),
        ("scsi0", format!("{volid},size=8G")),
        ("scsihw", "virtio-scsi-single".to_string()),
        ("smbios1", format!("uuid={}", crate::propstr::random_uuid())),
        ("vmgenid", crate::propstr::random_uuid()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut guest = Guest::new(vmid, node, Kind::Qemu, config);
    guest.running = true;
    guest.started_at = Some(Instant::now());
    guest.agent_ready_at = Some(Instant::now());
    world.guests.insert(vmid, guest);
}
