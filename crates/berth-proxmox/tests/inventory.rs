//! Templates, capacity, capabilities and the doctor checks (validate) against the emulator,
//! including a token whose privileges are too narrow.

mod common;

use berth_core::{CheckStatus, GuestKind, Provider};
use common::*;

#[tokio::test]
async fn templates_use_the_template_flag() {
    let emu = emulator().await;
    emu.add_foreign_vm("pve1", 105, "debian-12-cloud-copy");
    let p = provider(&emu);
    p.create(&spec(GuestKind::Vm, "stopped-vm"), &Events::default())
        .await
        .unwrap();
    let t = p.list_templates().await.unwrap();
    let vm_ids: Vec<&str> = t
        .iter()
        .filter(|t| t.kind == GuestKind::Vm)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(
        vm_ids,
        vec!["9000", "9001", "9100", "9101"],
        "only flagged templates, no guests"
    );
    assert!(
        t.iter().any(|t| t.kind == GuestKind::Container && t.id == CT_TEMPLATE),
        "{t:?}"
    );
    let t9000 = t.iter().find(|t| t.id == "9000").unwrap();
    assert_eq!(
        (t9000.name.as_str(), t9000.node.as_deref(), t9000.disk_gib),
        ("debian-12-cloud", Some("pve1"), Some(2))
    );
}

#[tokio::test]
async fn capacity_and_capabilities() {
    let emu = emulator().await;
    let p = provider(&emu);
    let before = p.capacity().await.unwrap();
    assert_eq!(before.cpus_total, 16);
    assert_eq!(before.memory_mib_total, 64 * 1024);
    assert!(before.disk_gib_total > 0 && before.disk_gib_free <= before.disk_gib_total);
    p.create(&spec(GuestKind::Vm, "cap"), &Events::default()).await.unwrap();
    assert_eq!(p.capacity().await.unwrap().instances, before.instances + 1);
    let caps = p.capabilities().await.unwrap();
    assert!(caps.vms && caps.containers && caps.graceful_shutdown && caps.static_ip && caps.capacity);
}

#[tokio::test]
async fn doctor_passes_on_a_healthy_setup() {
    let emu = emulator().await;
    let checks = provider(&emu).validate().await;
    for c in &checks {
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
    }
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "api",
        "token",
        "node",
        "template",
        "storage",
        "pool",
        "ct_template",
        "permissions /pool/berth",
        "site permissions /",
        "site permissions /storage",
        "site permissions /pool",
        "site permissions /vms",
        "site permissions /nodes/pve1",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
}

#[tokio::test]
async fn doctor_names_what_is_wrong() {
    let emu = emulator().await;
    let mut cfg = config(&emu);
    cfg.template_vmid = 105;
    cfg.storage = "nope".into();
    cfg.pool = Some("missing".into());
    cfg.node = "pve9".into();
    emu.add_foreign_vm("pve1", 105, "not-a-template");
    let checks = berth_proxmox::ProxmoxProvider::new(cfg).unwrap().validate().await;
    let status = |n: &str| {
        checks
            .iter()
            .find(|c| c.name == n)
            .map(|c| (c.status, c.detail.clone()))
            .unwrap()
    };
    assert_eq!(status("api").0, CheckStatus::Ok);
    let (s, d) = status("node");
    assert!(s == CheckStatus::Fail && d.contains("pve9"), "{d}");
    let (s, d) = status("template");
    assert!(s == CheckStatus::Fail && d.contains("not a template"), "{d}");
    // What lives on a node that is not there is not asked (no seconds of retried errors).
    assert_eq!(
        status("storage"),
        (CheckStatus::Skipped, "not checked: the node check failed".into())
    );
    assert_eq!(status("pool").0, CheckStatus::Fail);
    let mut cfg = config(&emu);
    cfg.storage = "nope".into();
    let checks = berth_proxmox::ProxmoxProvider::new(cfg).unwrap().validate().await;
    let storage = checks.iter().find(|c| c.name == "storage").unwrap();
    assert_eq!(storage.status, CheckStatus::Fail, "{storage:?}");

    let mut cfg = config(&emu);
    cfg.api_token_secret = Some(berth_core::Secret::new("wrong-secret"));
    let checks = berth_proxmox::ProxmoxProvider::new(cfg).unwrap().validate().await;
    let token = checks.iter().find(|c| c.name == "token").unwrap();
    assert_eq!(token.status, CheckStatus::Fail, "{token:?}");
    assert!(!format!("{checks:?}").contains("wrong-secret"));
}

#[tokio::test]
async fn doctor_reports_missing_privileges() {
    let emu = emulator().await;
    let privs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    emu.add_token(
        "berth@pve!narrow",
        "narrow-secret",
        vec![
            (
                "/".into(),
                privs(&["Sys.Audit", "VM.Audit", "Datastore.Audit", "Pool.Audit"]),
            ),
            (
                "/pool/berth".into(),
                privs(&["VM.Allocate", "VM.PowerMgmt", "VM.Audit"]),
            ),
        ],
    );
    let mut cfg = config(&emu);
    cfg.api_token_id = "berth@pve!narrow".into();
    cfg.api_token_secret = Some(berth_core::Secret::new("narrow-secret"));
    let checks = berth_proxmox::ProxmoxProvider::new(cfg).unwrap().validate().await;
    let perm = |n: &str| {
        checks
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("{n}: {checks:?}"))
            .clone()
    };
    let pool = perm("permissions /pool/berth");
    assert_eq!(pool.status, CheckStatus::Fail);
    assert!(
        pool.detail.contains("VM.Config.Cloudinit") && !pool.detail.contains("VM.Allocate,"),
        "{}",
        pool.detail
    );
    let st = perm("permissions /storage/local-lvm");
    assert!(
        st.status == CheckStatus::Fail && st.detail.contains("Datastore.AllocateSpace"),
        "{}",
        st.detail
    );
    let tpl = perm("permissions /vms/9000");
    assert!(
        tpl.status == CheckStatus::Fail && tpl.detail.contains("VM.Clone"),
        "{}",
        tpl.detail
    );
    // What managing the site needs is listed per path; missing, it warns (provisioning works).
    let site = perm("site permissions /storage");
    assert!(
        site.status == CheckStatus::Warn
            && site.detail.contains("Datastore.Allocate")
            && site.detail.contains("needed for storage definitions"),
        "{}",
        site.detail
    );
    let net = perm("site permissions /nodes/pve1");
    assert!(
        net.status == CheckStatus::Warn && net.detail.contains("Sys.Modify"),
        "{}",
        net.detail
    );
}
