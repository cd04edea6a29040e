//! Guests moved between nodes and disks between storages against the emulator: the
//! precondition check, online migration with local disks, containers restarted, disk moves that
//! keep or drop the source; every refusal in PVE's words; the cluster's membership read.

mod common;

use std::time::Duration;

use berth_core::{GuestKind, Provider};
use berth_proxmox::client::migrate::MigrateOptions;
use berth_proxmox::client::{GuestType, PveClient, PveError};
use berth_pve_emulator::{Fault, FaultRule};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn says(e: PveError) -> String {
    e.to_string()
}

async fn make(emu: &berth_pve_emulator::EmulatorHandle, kind: GuestKind, tag: &str) -> u32 {
    provider(emu)
        .create(&spec(kind, tag), &Events::default())
        .await
        .unwrap()
        .backend_id
        .parse()
        .unwrap()
}

async fn disk(c: &PveClient, node: &str, ty: GuestType, vmid: u32, key: &str) -> Option<String> {
    c.guest_config(node, ty, vmid).await.unwrap().get(key)
}

#[tokio::test]
async fn a_running_vm_migrates_online_with_its_local_disks() {
    let emu = emulator().await;
    let c = client(&emu);
    let vmid = make(&emu, GuestKind::Vm, "mig").await;
    let q = GuestType::Qemu;
    let check = c.migrate_check("pve1", q, vmid).await.unwrap();
    assert!(check.running && check.allowed_nodes == ["pve2"], "{check:?}");
    let local = check
        .local_disks
        .iter()
        .filter_map(|d| d.volid.clone())
        .collect::<Vec<_>>();
    assert!(local.iter().any(|v| v.starts_with("local-lvm:")), "{local:?}");

    let offline = MigrateOptions::default();
    let online = MigrateOptions {
        online: true,
        ..offline
    };
    for (target, o, expect) in [
        ("pve2", offline, "can't migrate running VM without --online".to_owned()),
        ("pve2", online, format!("can't migrate local disk '{}'", local[0])),
        ("pve1", online, "target is local node.".to_owned()),
        ("pve7", online, "no such cluster node 'pve7'".to_owned()),
    ] {
        let e = says(c.migrate("pve1", q, vmid, target, o).await.unwrap_err());
        assert!(e.contains(&expect), "{expect}: {e}");
    }
    // A failed migration task leaves it where it was, unlocked.
    emu.inject(FaultRule {
        method: Some("POST".into()),
        path_contains: "/migrate".into(),
        fault: Fault::TaskFailure {
            message: "migration aborted".into(),
        },
        times: 1,
    });
    let with_disks = MigrateOptions {
        with_local_disks: true,
        ..online
    };
    let upid = c.migrate("pve1", q, vmid, "pve2", with_disks).await.unwrap();
    assert!(says(c.wait_task(&upid, WAIT).await.unwrap_err()).contains("migration aborted"));
    assert!(c.guest_config("pve1", q, vmid).await.unwrap().lock().is_none());

    let upid = c.migrate("pve1", q, vmid, "pve2", with_disks).await.unwrap();
    assert!(upid.to_string().contains(&format!(":qmigrate:{vmid}:")), "{upid}");
    c.wait_task(&upid, WAIT).await.unwrap();
    let st = c.guest_status("pve2", q, vmid).await.unwrap();
    assert_eq!(st.status.as_deref(), Some("running"));
    assert!(c.guest_status("pve1", q, vmid).await.is_err());
    let on_pve2 = c.storage_content("pve2", "local-lvm", None).await.unwrap();
    assert!(on_pve2.iter().any(|v| v.volid == local[0]), "{on_pve2:?}");
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn disks_move_between_storages_keeping_or_dropping_the_source() {
    let emu = emulator().await;
    let c = client(&emu);
    let vmid = make(&emu, GuestKind::Vm, "mover").await;
    let q = GuestType::Qemu;
    let before = disk(&c, "pve1", q, vmid, "scsi0").await.unwrap();
    for (d, storage, expect) in [
        ("scsi0", "local", "storage: storage 'local' does not support vm images"),
        (
            "scsi0",
            "local-lvm",
            "you can't move to the same storage with same format",
        ),
        ("scsi7", "shared", "disk 'scsi7' does not exist"),
        ("scsi0", "nope", "storage 'nope' does not exist"),
    ] {
        let e = says(c.move_disk("pve1", q, vmid, d, storage, false).await.unwrap_err());
        assert!(e.contains(expect), "{expect}: {e}");
    }
    let upid = c.move_disk("pve1", q, vmid, "scsi0", "shared", false).await.unwrap();
    assert!(upid.to_string().contains(":qmmove:"), "{upid}");
    c.wait_task(&upid, WAIT).await.unwrap();
    let moved = disk(&c, "pve1", q, vmid, "scsi0").await.unwrap();
    assert!(moved.starts_with("shared:") && moved.contains("size="), "{moved}");
    let old = before.split(',').next().unwrap();
    assert_eq!(disk(&c, "pve1", q, vmid, "unused0").await.as_deref(), Some(old));
    // Back with delete: the source goes.
    let upid = c.move_disk("pve1", q, vmid, "scsi0", "local-lvm", true).await.unwrap();
    c.wait_task(&upid, WAIT).await.unwrap();
    let content = c.storage_content("pve1", "shared", None).await.unwrap();
    let shared_vol = moved.split(',').next().unwrap();
    assert!(content.iter().all(|v| v.volid != shared_vol), "{content:?}");
}

#[tokio::test]
async fn containers_migrate_with_restart_and_move_volumes_stopped() {
    let emu = emulator().await;
    let c = client(&emu);
    let vmid = make(&emu, GuestKind::Container, "ctmig").await;
    let l = GuestType::Lxc;
    let online = MigrateOptions {
        online: true,
        ..Default::default()
    };
    for (o, expect) in [
        (
            MigrateOptions::default(),
            "can't migrate running container without --online or --restart",
        ),
        (online, "lxc live migration is currently not implemented"),
    ] {
        let e = says(c.migrate("pve1", l, vmid, "pve2", o).await.unwrap_err());
        assert!(e.contains(expect), "{expect}: {e}");
    }
    let e = says(
        c.move_disk("pve1", l, vmid, "rootfs", "shared", false)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("cannot move volumes of a running container"), "{e}");
    let restart = MigrateOptions {
        restart: true,
        ..Default::default()
    };
    let upid = c.migrate("pve1", l, vmid, "pve2", restart).await.unwrap();
    assert!(upid.to_string().contains(":vzmigrate:"), "{upid}");
    c.wait_task(&upid, WAIT).await.unwrap();
    assert_eq!(
        c.guest_status("pve2", l, vmid).await.unwrap().status.as_deref(),
        Some("running")
    );
}

#[tokio::test]
async fn the_cluster_is_read() {
    let emu = emulator().await;
    let c = client(&emu);
    let status = c.cluster_status().await.unwrap();
    let cluster = status.iter().find(|m| m.kind.as_deref() == Some("cluster")).unwrap();
    assert!(cluster.quorate && cluster.nodes == Some(2));
    let nodes: Vec<_> = status.iter().filter(|m| m.kind.as_deref() == Some("node")).collect();
    assert!(nodes.iter().all(|n| n.online) && nodes.len() == 2);
    let corosync = c.corosync_nodes().await.unwrap();
    assert_eq!(corosync[1].ring0_addr.as_deref(), Some("10.0.0.12"));
    let o = c.cluster_options().await.unwrap();
    assert_eq!(
        (o.mac_prefix.as_deref(), o.next_id_lower),
        (Some("BC:24:11"), Some(100))
    );
}
