//! The VM flow against the emulator: create (stages, marker, config as PVE sees it), describe,
//! power, reconfigure, delete; idempotency and ownership rules.

mod common;

use berth_core::{
    DeleteOutcome, ErrorCode, GuestKind, InstanceRef, Ipv4Config, ListFilter, PowerOp, PowerState, Provider, Resize,
    Stage, StagePhase,
};
use common::*;

#[tokio::test]
async fn create_configures_and_starts_a_marked_vm() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "basic");
    let events = Events::default();
    let inst = p.create(&spec, &events).await.expect("create");
    assert_eq!(inst.instance_id.as_ref(), Some(&spec.instance_id));
    assert_eq!(inst.state, PowerState::Running);
    assert!(inst.ipv4.is_some(), "{inst:?}");
    assert_eq!(inst.node.as_deref(), Some("pve1"));

    let phases: Vec<(Stage, StagePhase)> = events.list().iter().map(|e| (e.stage, e.phase)).collect();
    use Stage::*;
    use StagePhase::*;
    assert_eq!(
        phases,
        vec![
            (CloneTemplate, Started),
            (CloneTemplate, Completed),
            (ConfigureVm, Started),
            (ConfigureVm, Completed),
            (StartVm, Started),
            (StartVm, Completed),
            (WaitNetwork, Started),
            (WaitNetwork, Completed)
        ]
    );

    let guests = marked(&emu, spec.instance_id.as_str());
    assert_eq!(guests.len(), 1, "{guests:?}");
    let g = &guests[0];
    assert!(g.tags.contains(&"berth".to_owned()), "{:?}", g.tags);
    assert_eq!(g.status, "running");
    assert_eq!(g.config.get("cores").map(String::as_str), Some("2"));
    assert_eq!(g.config.get("ciuser").map(String::as_str), Some("berth"));
    assert_eq!(g.config.get("ipconfig0").map(String::as_str), Some("ip=dhcp"));
    assert!(
        g.config
            .get("sshkeys")
            .is_some_and(|k| k.starts_with("ssh-ed25519%20AAAA")),
        "{:?}",
        g.config.get("sshkeys")
    );
    assert!(
        g.config.get("scsi0").is_some_and(|d| d.contains("size=10G")),
        "{:?}",
        g.config.get("scsi0")
    );

    assert_eq!(
        p.delete(&InstanceRef::Id(spec.instance_id.clone())).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(marked(&emu, spec.instance_id.as_str()).is_empty());
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn static_ip_and_dns_reach_cloud_init() {
    let emu = emulator().await;
    let p = provider(&emu);
    let mut spec = spec(GuestKind::Vm, "static");
    spec.network.ipv4 = Ipv4Config::parse("192.0.2.10/24,gw=192.0.2.1").unwrap();
    spec.network.nameservers = vec!["192.0.2.53".parse().unwrap()];
    spec.user = Some("ops".into());
    let inst = p.create(&spec, &Events::default()).await.expect("create");
    assert_eq!(inst.ipv4, Some("192.0.2.10".parse().unwrap()));
    let g = &marked(&emu, spec.instance_id.as_str())[0];
    assert_eq!(
        g.config.get("ipconfig0").map(String::as_str),
        Some("ip=192.0.2.10/24,gw=192.0.2.1")
    );
    assert_eq!(g.config.get("nameserver").map(String::as_str), Some("192.0.2.53"));
    assert_eq!(g.config.get("ciuser").map(String::as_str), Some("ops"));
}

#[tokio::test]
async fn second_create_returns_the_same_vm_and_skips_done_stages() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "twice");
    let first = p.create(&spec, &Events::default()).await.unwrap();
    let events = Events::default();
    let before = writes(&emu).len();
    let second = p.create(&spec, &events).await.unwrap();
    assert_eq!(first.backend_id, second.backend_id);
    assert_eq!(writes(&emu).len(), before, "a repeated create changes nothing");
    let skipped: Vec<Stage> = events
        .list()
        .iter()
        .filter(|e| e.phase == StagePhase::Skipped)
        .map(|e| e.stage)
        .collect();
    assert_eq!(skipped, vec![Stage::CloneTemplate, Stage::ConfigureVm, Stage::StartVm]);
    assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1);
}

#[tokio::test]
async fn power_cycle_reconfigure_and_describe() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "power");
    let inst = p.create(&spec, &Events::default()).await.unwrap();
    let id = InstanceRef::Id(spec.instance_id.clone());

    let by_vmid = p
        .describe(&InstanceRef::Backend(inst.backend_id.clone()))
        .await
        .unwrap();
    assert_eq!(by_vmid.instance_id.as_ref(), Some(&spec.instance_id));

    assert_eq!(p.power(&id, PowerOp::Stop).await.unwrap().state, PowerState::Stopped);
    assert_eq!(p.power(&id, PowerOp::Stop).await.unwrap().state, PowerState::Stopped);
    let out = p
        .reconfigure(
            &id,
            &Resize {
                cores: Some(4),
                memory_mib: Some(4096),
                disk_gib: Some(20),
            },
        )
        .await
        .unwrap();
    assert!(!out.restart_required);
    let d = p.describe(&id).await.unwrap();
    assert_eq!((d.cores, d.memory_mib, d.disk_gib), (Some(4), Some(4096), Some(20)));
    assert_eq!(p.power(&id, PowerOp::Start).await.unwrap().state, PowerState::Running);
    assert_eq!(p.power(&id, PowerOp::Reboot).await.unwrap().state, PowerState::Running);
    let out = p
        .reconfigure(
            &id,
            &Resize {
                cores: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        out.restart_required,
        "QEMU CPU changes of a running VM wait for a restart"
    );
    let shrink = p
        .reconfigure(
            &id,
            &Resize {
                disk_gib: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&shrink, berth_core::ProviderError::InvalidSpec { field, .. } if field == "disk_gib"),
        "{shrink}"
    );
    let down = p.power(&id, PowerOp::Shutdown { timeout_secs: 5 }).await.unwrap();
    assert_eq!(down.state, PowerState::Stopped);
    assert_eq!(p.power(&id, PowerOp::Reboot).await.unwrap().state, PowerState::Running);
}

#[tokio::test]
async fn foreign_guests_are_listed_only_on_request_and_never_touched() {
    let emu = emulator().await;
    emu.add_foreign_vm("pve1", 105, "legacy-db");
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "mine");
    p.create(&spec, &Events::default()).await.unwrap();

    let owned = p.list(ListFilter::default()).await.unwrap();
    assert_eq!(owned.len(), 1, "{owned:?}");
    let all = p
        .list(ListFilter {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        all.iter().any(|i| i.backend_id == "105" && i.instance_id.is_none()),
        "{all:?}"
    );
    assert!(
        !all.iter().any(|i| i.backend_id == "9000"),
        "templates are not instances"
    );
    let cts = p
        .list(ListFilter {
            all: true,
            kind: Some(GuestKind::Container),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(cts.is_empty(), "{cts:?}");

    let foreign = InstanceRef::Backend("105".into());
    assert_eq!(p.describe(&foreign).await.unwrap().name, "legacy-db");
    let before = writes(&emu).len();
    for err in [
        p.power(&foreign, PowerOp::Stop).await.unwrap_err(),
        p.delete(&foreign).await.unwrap_err(),
        p.reconfigure(
            &foreign,
            &Resize {
                cores: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    ] {
        assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
        assert!(err.to_string().contains("VM 105 is not managed by Berth"), "{err}");
    }
    let template = p.delete(&InstanceRef::Backend("9000".into())).await.unwrap_err();
    assert_eq!(template.code(), ErrorCode::Conflict);
    assert_eq!(writes(&emu).len(), before, "nothing was sent for foreign guests");
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_delete_is_idempotent() {
    let emu = emulator().await;
    let p = provider(&emu);
    let unknown = InstanceRef::Id(berth_core::InstanceId::parse("nobody").unwrap());
    assert_eq!(p.describe(&unknown).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(
        p.power(&unknown, PowerOp::Start).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(p.delete(&unknown).await.unwrap(), DeleteOutcome::AlreadyAbsent);
    assert_eq!(
        p.describe(&InstanceRef::Backend("4242".into()))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn an_interrupted_clone_is_adopted_by_its_marker_only() {
    use berth_proxmox::client::{GuestType, Params};
    use std::time::Duration;
    let emu = emulator().await;
    let p = provider(&emu);
    let c = client(&emu);
    let spec = spec(GuestKind::Vm, "adopt");
    // What a create killed before configure leaves: a clone with the name and description marker,
    // no tags; here also without a cloud-init drive.
    let desc = format!(
        "Managed by Berth; do not edit the line below.\nberth-instance-id: {}\n",
        spec.instance_id
    );
    let params = Params::new()
        .int("newid", 23456u32)
        .str("name", spec.name.clone())
        .str("description", desc);
    let u = c.clone_vm("pve1", 9000, &params.bool("full", true)).await.unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    c.update_config("pve1", GuestType::Qemu, 23456, &Params::new().str("delete", "ide2"))
        .await
        .unwrap();
    // A decoy with the same name but no marker must not be adopted.
    let u = c
        .clone_vm(
            "pve1",
            9000,
            &Params::new().int("newid", 23457u32).str("name", spec.name.clone()),
        )
        .await
        .unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();

    let events = Events::default();
    let inst = p.create(&spec, &events).await.unwrap();
    assert_eq!(inst.backend_id, "23456");
    let first: Vec<(Stage, StagePhase)> = events.list().iter().take(3).map(|e| (e.stage, e.phase)).collect();
    assert_eq!(
        first,
        vec![
            (Stage::CloneTemplate, StagePhase::Skipped),
            (Stage::ConfigureVm, StagePhase::Started),
            (Stage::ConfigureVm, StagePhase::Completed)
        ]
    );
    let g = emu.guests().into_iter().find(|g| g.vmid == 23456).unwrap();
    assert!(
        g.config.values().any(|v| v.contains("cloudinit")),
        "a cloud-init drive was added: {:?}",
        g.config
    );
    assert!(g.tags.contains(&format!("berth-{}", spec.instance_id)));
    let decoy = emu.guests().into_iter().find(|g| g.vmid == 23457).unwrap();
    assert!(
        decoy.tags.is_empty() && decoy.status == "stopped",
        "the decoy is untouched: {decoy:?}"
    );
    // By VMID, the interrupted clone was deletable as Berth's (description marker).
    assert_eq!(
        p.describe(&InstanceRef::Backend("23456".into()))
            .await
            .unwrap()
            .instance_id
            .as_ref(),
        Some(&spec.instance_id)
    );
    assert_eq!(
        p.describe(&InstanceRef::Backend("23457".into()))
            .await
            .unwrap()
            .instance_id,
        None
    );
}

/// A VM this create made is not read back: what it reports is what it asked for. A NIC moved
/// to another bridge gets a MAC address of its own, never the template's.
#[tokio::test]
async fn a_fresh_vm_is_not_read_back_and_a_moved_nic_gets_its_own_mac() {
    let emu = emulator().await;
    let mut c = config(&emu);
    c.bridge = "vmbr1".into();
    let p = berth_proxmox::ProxmoxProvider::new(c).expect("provider builds");
    let spec = spec(GuestKind::Vm, "fresh");
    let inst = p.create(&spec, &Events::default()).await.expect("create");
    let vmid = &inst.backend_id;
    let read_back: Vec<String> = emu
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .filter(|r| {
            r.path.ends_with(&format!("/qemu/{vmid}/config"))
                || r.path.ends_with(&format!("/qemu/{vmid}/status/current"))
        })
        .map(|r| r.path.clone())
        .collect();
    assert!(read_back.is_empty(), "{read_back:?}");
    assert_eq!(inst.state, PowerState::Running);
    assert_eq!(
        (inst.cores, inst.memory_mib, inst.disk_gib),
        (Some(spec.cores), Some(spec.memory_mib), Some(spec.disk_gib))
    );
    let g = &marked(&emu, spec.instance_id.as_str())[0];
    assert_eq!(
        (g.status.as_str(), g.config.get("cores").cloned()),
        ("running", Some(spec.cores.to_string()))
    );
    let net0 = g.config.get("net0").cloned().unwrap_or_default();
    assert!(net0.contains("bridge=vmbr1"), "{net0}");
    // Template 9000's MAC is BC:24:11:00:23:28.
    let mac = net0
        .split(',')
        .find_map(|p| p.strip_prefix("virtio="))
        .unwrap_or_default();
    assert!(mac.len() == 17 && mac != "BC:24:11:00:23:28", "{net0}");
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}
