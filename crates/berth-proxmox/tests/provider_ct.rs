//! The container flow against the emulator: the create call carries marker, network, keys and
//! root disk; power, reconfigure and delete work on containers as on VMs.

mod common;

use berth_core::{
    DeleteOutcome, GuestKind, InstanceRef, Ipv4Config, Ipv6Config, PowerOp, PowerState, Provider, Resize,
};
use common::*;

#[tokio::test]
async fn create_a_container_with_everything_set_at_creation() {
    let emu = emulator().await;
    let p = provider(&emu);
    let mut spec = spec(GuestKind::Container, "web");
    spec.network.ipv4 = Ipv4Config::parse("10.20.0.5/24,gw=10.20.0.1").unwrap();
    spec.network.ipv6 = Some(Ipv6Config::Auto);
    let inst = p.create(&spec, &Events::default()).await.expect("create");
    assert_eq!(inst.kind, GuestKind::Container);
    assert_eq!(inst.ipv4, Some("10.20.0.5".parse().unwrap()));
    assert_eq!(inst.state, PowerState::Running);

    let create = emu
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/nodes/pve1/lxc")
        .unwrap();
    let param = |k: &str| create.params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(param("ssh-public-keys").as_deref(), Some(KEY), "plain, not urlencoded");
    assert_eq!(
        param("net0").as_deref(),
        Some("name=eth0,bridge=vmbr0,ip=10.20.0.5/24,gw=10.20.0.1,ip6=auto")
    );
    assert_eq!(param("rootfs").as_deref(), Some("local-lvm:10"));
    assert_eq!(param("unprivileged").as_deref(), Some("1"));
    assert_eq!(param("pool").as_deref(), Some("berth"));
    assert_eq!(param("ostemplate").as_deref(), Some(CT_TEMPLATE));
    let g = &marked(&emu, spec.instance_id.as_str())[0];
    assert!(g.tags.contains(&"berth".to_owned()) && g.tags.contains(&format!("berth-{}", spec.instance_id)));
    assert!(
        g.description
            .contains(&format!("berth-instance-id: {}", spec.instance_id))
    );
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn container_lifecycle() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Container, "life");
    p.create(&spec, &Events::default()).await.unwrap();
    let id = InstanceRef::Id(spec.instance_id.clone());
    assert_eq!(
        p.power(&id, PowerOp::Shutdown { timeout_secs: 5 }).await.unwrap().state,
        PowerState::Stopped
    );
    assert_eq!(p.power(&id, PowerOp::Start).await.unwrap().state, PowerState::Running);
    let out = p
        .reconfigure(
            &id,
            &Resize {
                cores: Some(3),
                memory_mib: Some(1024),
                disk_gib: Some(12),
            },
        )
        .await
        .unwrap();
    assert!(!out.restart_required, "LXC applies CPU and memory live");
    let d = p.describe(&id).await.unwrap();
    assert_eq!((d.cores, d.memory_mib, d.disk_gib), (Some(3), Some(1024), Some(12)));
    assert_eq!(p.delete(&id).await.unwrap(), DeleteOutcome::Deleted);
    assert_eq!(p.delete(&id).await.unwrap(), DeleteOutcome::AlreadyAbsent);
    assert!(marked(&emu, spec.instance_id.as_str()).is_empty());
}

#[tokio::test]
async fn one_instance_id_cannot_be_both_kinds() {
    let emu = emulator().await;
    let p = provider(&emu);
    let vm = spec(GuestKind::Vm, "both");
    p.create(&vm, &Events::default()).await.unwrap();
    let mut ct = vm.clone();
    ct.kind = GuestKind::Container;
    let e = p.create(&ct, &Events::default()).await.unwrap_err();
    assert_eq!(e.code(), berth_core::ErrorCode::Conflict, "{e}");
}
