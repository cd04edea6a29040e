//! Refused specs: each bad value gives InvalidSpec naming the field, and nothing is created:
//! the guests are unchanged and no POST/PUT/DELETE reached the server.

mod common;

use berth_core::{GuestKind, Provider, ProviderError, VmSpec};
use common::*;

type Mutation = Box<dyn Fn(&mut VmSpec)>;

async fn refused(kind: GuestKind, cases: Vec<(&str, Mutation)>) {
    let emu = emulator().await;
    emu.add_foreign_vm("pve1", 105, "legacy-db");
    let p = provider(&emu);
    let guests_before = emu.guests().len();
    for (n, (field, mutate)) in cases.into_iter().enumerate() {
        let mut s = spec(kind, &format!("bad{n}"));
        mutate(&mut s);
        match p.create(&s, &Events::default()).await {
            Err(ProviderError::InvalidSpec { field: got, reason }) => {
                assert_eq!(got, field, "case {n}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("case {n} ({field}): expected InvalidSpec, got {other:?}"),
        }
    }
    assert_eq!(emu.guests().len(), guests_before, "nothing was created");
    assert!(writes(&emu).is_empty(), "no write was sent: {:?}", writes(&emu));
}

#[tokio::test]
async fn bad_vm_specs_are_refused_before_anything_is_made() {
    refused(
        GuestKind::Vm,
        vec![
            ("cores", Box::new(|s| s.cores = 0)),
            ("cores", Box::new(|s| s.cores = 64)),
            ("memory_mib", Box::new(|s| s.memory_mib = 1 << 20)),
            ("memory_mib", Box::new(|s| s.memory_mib = 8)),
            ("disk_gib", Box::new(|s| s.disk_gib = 1)),
            ("template", Box::new(|s| s.template = Some("99999".into()))),
            ("template", Box::new(|s| s.template = Some("105".into()))),
            ("template", Box::new(|s| s.template = Some("no-such-template".into()))),
            // on pve2 with local disks: cannot be cloned to pve1
            ("template", Box::new(|s| s.template = Some("9101".into()))),
            ("name", Box::new(|s| s.name = "my_vm".into())),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_container_specs_are_refused_before_anything_is_made() {
    refused(
        GuestKind::Container,
        vec![
            ("cores", Box::new(|s| s.cores = 0)),
            ("memory_mib", Box::new(|s| s.memory_mib = 1 << 20)),
            ("template", Box::new(|s| s.template = Some("debian-12.tar.zst".into()))),
            (
                "template",
                Box::new(|s| s.template = Some("local:vztmpl/nope.tar.zst".into())),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_storage_is_named() {
    let emu = emulator().await;
    let mut cfg = config(&emu);
    cfg.storage = "local".into(); // exists, but holds no VM images
    let p = berth_proxmox::ProxmoxProvider::new(cfg).unwrap();
    let e = p
        .create(&spec(GuestKind::Vm, "st"), &Events::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidSpec { field, .. } if field == "storage"),
        "{e}"
    );
    assert!(e.to_string().contains("images"), "{e}");
    assert!(writes(&emu).is_empty());
}

#[tokio::test]
async fn templates_on_other_nodes_are_used_when_possible() {
    let emu = emulator().await;
    let p = provider(&emu);
    // 9001 (pve2) has a same-named twin on pve1: 9000 is cloned instead.
    let mut s = spec(GuestKind::Vm, "twin");
    s.template = Some("9001".into());
    p.create(&s, &Events::default()).await.unwrap();
    assert!(
        emu.requests()
            .iter()
            .any(|r| r.method == "POST" && r.path == "/nodes/pve1/qemu/9000/clone")
    );
    // 9100 (pve2) is on shared storage: cloned at pve2 with target=pve1.
    let mut s = spec(GuestKind::Vm, "shared");
    s.template = Some("ubuntu-24-shared".into());
    let inst = p.create(&s, &Events::default()).await.unwrap();
    assert_eq!(inst.node.as_deref(), Some("pve1"));
    let clone = emu
        .requests()
        .into_iter()
        .find(|r| r.path == "/nodes/pve2/qemu/9100/clone")
        .expect("cloned at pve2");
    assert!(
        clone.params.iter().any(|(k, v)| k == "target" && v == "pve1"),
        "{:?}",
        clone.params
    );
}
