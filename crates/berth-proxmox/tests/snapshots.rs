//! Snapshots against the emulator: taken (with memory on a running VM), listed, rolled back
//! (config and power state come back), deleted, gone with the machine; PVE's refusals named.

mod common;

use berth_core::{
    DeleteOutcome, ErrorCode, GuestKind, InstanceRef, PowerOp, PowerState, Provider, ProviderError, Resize,
};
use berth_pve_emulator::{Fault, FaultRule};
use common::*;

#[tokio::test]
async fn a_vms_snapshots_are_taken_listed_rolled_back_and_deleted() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "snap");
    p.create(&spec, &Events::default()).await.unwrap();
    let id = InstanceRef::Id(spec.instance_id.clone());
    assert!(
        p.snapshots(&id).await.unwrap().is_empty(),
        "`current` is not a snapshot"
    );

    let s = p.snapshot(&id, "before", "2 cores", true).await.unwrap();
    assert_eq!(
        (s.vmstate, s.parent.as_deref(), s.description.as_str()),
        (true, None, "2 cores")
    );
    // Stopped, resized, and a second snapshot on top of the first (no memory: it is stopped).
    p.power(&id, PowerOp::Stop).await.unwrap();
    p.reconfigure(
        &id,
        &Resize {
            cores: Some(4),
            ..Resize::default()
        },
    )
    .await
    .unwrap();
    let s2 = p.snapshot(&id, "after", "", true).await.unwrap();
    assert_eq!((s2.vmstate, s2.parent.as_deref()), (false, Some("before")));
    let names: Vec<String> = p.snapshots(&id).await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["before", "after"]);

    // Taken twice: a conflict. A name PVE's format refuses: named, and nothing is sent.
    assert_eq!(
        p.snapshot(&id, "before", "", false).await.unwrap_err().code(),
        ErrorCode::Conflict
    );
    let sent = writes(&emu).len();
    let e = p.snapshot(&id, "1st try", "", false).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidSpec { field, .. } if field == "name"),
        "{e}"
    );
    assert_eq!(writes(&emu).len(), sent, "nothing reached PVE");

    // Back to the first: its config, and running again (its memory was saved).
    let i = p.rollback(&id, "before", false).await.unwrap();
    assert_eq!((i.state, i.cores), (PowerState::Running, Some(2)), "{i:?}");
    // Back to the second: stopped as it was, unless asked to start.
    let i = p.rollback(&id, "after", false).await.unwrap();
    assert_eq!((i.state, i.cores), (PowerState::Stopped, Some(4)), "{i:?}");
    let i = p.rollback(&id, "after", true).await.unwrap();
    assert_eq!(i.state, PowerState::Running);
    assert_eq!(
        p.rollback(&id, "nope", false).await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    // Deleting the first puts the second on nothing; deleting it again is done already.
    assert_eq!(p.delete_snapshot(&id, "before").await.unwrap(), DeleteOutcome::Deleted);
    let left = p.snapshots(&id).await.unwrap();
    assert_eq!((left.len(), left[0].parent.as_deref()), (1, None));
    assert_eq!(
        p.delete_snapshot(&id, "before").await.unwrap(),
        DeleteOutcome::AlreadyAbsent
    );
    // Snapshots go with the machine.
    p.delete(&id).await.unwrap();
    assert_eq!(p.snapshots(&id).await.unwrap_err().code(), ErrorCode::NotFound);
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn a_containers_snapshots_roll_back_and_start_on_request() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Container, "ctsnap");
    p.create(&spec, &Events::default()).await.unwrap();
    let id = InstanceRef::Id(spec.instance_id.clone());
    // No memory for containers: `vmstate` is not sent (PVE's schema has none for them).
    let s = p.snapshot(&id, "base", "", true).await.unwrap();
    assert!(!s.vmstate);
    let i = p.rollback(&id, "base", false).await.unwrap();
    assert_eq!(i.state, PowerState::Stopped);
    let i = p.rollback(&id, "base", true).await.unwrap();
    assert_eq!(i.state, PowerState::Running);
    // (A `vmstate` sent for a container would be a schema violation here.)
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn a_failed_snapshot_task_is_reported_and_leaves_no_snapshot() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "snapfail");
    p.create(&spec, &Events::default()).await.unwrap();
    let id = InstanceRef::Id(spec.instance_id.clone());
    emu.inject(FaultRule {
        method: Some("POST".into()),
        path_contains: "/snapshot".into(),
        fault: Fault::TaskFailure {
            message: "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout".into(),
        },
        times: 1,
    });
    let e = p.snapshot(&id, "nightly", "", false).await.unwrap_err();
    assert!(e.to_string().contains("got timeout"), "{e}");
    assert!(p.snapshots(&id).await.unwrap().is_empty());
    // Taken on a second try; while its worker runs the guest is locked, and the lock goes
    // with the worker.
    p.snapshot(&id, "nightly", "", false).await.unwrap();
    let vmid: u32 = p.describe(&id).await.unwrap().backend_id.parse().unwrap();
    assert_eq!(marked(&emu, spec.instance_id.as_str())[0].lock, None);
    // A guest locked by something else (a backup): the task fails naming the lock.
    p.power(&id, PowerOp::Stop).await.unwrap();
    assert_eq!(set_lock(&emu, "pve1", vmid, "backup").await.as_deref(), Some("backup"));
    let e = p.snapshot(&id, "during-backup", "", false).await.unwrap_err();
    assert!(e.to_string().contains("VM is locked (backup)"), "{e}");
    assert_eq!(
        marked(&emu, spec.instance_id.as_str())[0].lock.as_deref(),
        Some("backup")
    );
}

/// PVE refuses snapshots of a raw image on file storage, in the task; reserved names at once.
#[tokio::test]
async fn storage_without_snapshots_and_reserved_names_are_refused() {
    let emu = emulator().await;
    let c = client(&emu);
    let params = berth_proxmox::client::Params::new()
        .int("newid", 4300u32)
        .bool("full", true)
        .str("storage", "shared")
        .str("format", "raw")
        .str("name", "rawdisk");
    let upid = c.clone_vm("pve1", 9000, &params).await.unwrap();
    c.wait_task(&upid, std::time::Duration::from_secs(10)).await.unwrap();
    let ty = berth_proxmox::client::GuestType::Qemu;
    let upid = c.create_snapshot("pve1", ty, 4300, "s1", "", false).await.unwrap();
    let e = c
        .wait_task(&upid, std::time::Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("snapshot feature is not available"), "{e}");
    assert!(c.snapshots("pve1", ty, 4300).await.unwrap().is_empty());
    let e = c
        .create_snapshot("pve1", ty, 4300, "current", "", false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("reserved name"), "{e}");
}

/// A full clone of a VM as it was at a snapshot; a rollback keeps disks added since as unused.
#[tokio::test]
async fn clones_come_from_snapshots_and_rollbacks_keep_newer_disks() {
    use berth_proxmox::client::{GuestType, Params};
    let emu = emulator().await;
    let p = provider(&emu);
    let c = client(&emu);
    let spec = spec(GuestKind::Vm, "snapsrc");
    let vmid: u32 = p
        .create(&spec, &Events::default())
        .await
        .unwrap()
        .backend_id
        .parse()
        .unwrap();
    let id = InstanceRef::Id(spec.instance_id.clone());
    p.power(&id, PowerOp::Stop).await.unwrap();
    p.snapshot(&id, "base", "", false).await.unwrap();
    // A second disk after the snapshot.
    c.update_config(
        "pve1",
        GuestType::Qemu,
        vmid,
        &Params::new().str("scsi1", "local-lvm:2"),
    )
    .await
    .unwrap();
    let scsi1 = c
        .guest_config("pve1", GuestType::Qemu, vmid)
        .await
        .unwrap()
        .get("scsi1")
        .unwrap();
    let added = scsi1.split(',').next().unwrap().to_owned();

    // Cloned at the snapshot: no scsi1.
    let params = Params::new()
        .int("newid", 777u32)
        .str("name", "from-base")
        .str("snapname", "base")
        .bool("full", true);
    let upid = c.clone_vm("pve1", vmid, &params).await.unwrap();
    c.wait_task(&upid, std::time::Duration::from_secs(10)).await.unwrap();
    let copy = c.guest_config("pve1", GuestType::Qemu, 777).await.unwrap();
    assert!(copy.get("scsi0").is_some() && copy.get("scsi1").is_none(), "{copy:?}");
    let e = c
        .clone_vm(
            "pve1",
            vmid,
            &Params::new().int("newid", 778u32).str("snapname", "nope"),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("snapshot 'nope' does not exist"), "{e}");
    // The copy carries the source's marker: gone again before Berth works on the source.
    let upid = c.delete_guest("pve1", GuestType::Qemu, 777).await.unwrap();
    c.wait_task(&upid, std::time::Duration::from_secs(10)).await.unwrap();

    // Rolled back: the newer disk is kept as unused0, not lost.
    p.rollback(&id, "base", false).await.unwrap();
    let cfg = c.guest_config("pve1", GuestType::Qemu, vmid).await.unwrap();
    assert_eq!((cfg.get("scsi1"), cfg.get("unused0")), (None, Some(added)));
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}
