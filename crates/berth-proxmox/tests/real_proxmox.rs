//! The conformance suite against a real Proxmox VE, when one is configured through the
//! environment (PROXMOX_TEST_URL, PROXMOX_TEST_TOKEN_ID, PROXMOX_TEST_TOKEN_SECRET,
//! PROXMOX_TEST_NODE, PROXMOX_TEST_TEMPLATE_VMID, PROXMOX_TEST_STORAGE; optionally
//! PROXMOX_TEST_FINGERPRINT, PROXMOX_TEST_CT_TEMPLATE, PROXMOX_TEST_POOL). Otherwise it skips.
//! The template must be a cloud-init image with the QEMU guest agent installed.

use std::sync::Arc;

use berth_conformance::{Fixture, run_all};
use berth_core::{CheckStatus, GuestKind, InstanceId, Provider, Secret, SshPublicKey, VmSpec};
use berth_proxmox::{ProxmoxConfig, ProxmoxProvider};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl berth-test";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn required(name: &str) -> String {
    env(name).unwrap_or_else(|| panic!("PROXMOX_TEST_URL is set, so {name} must be set too"))
}

#[tokio::test]
async fn conformance_against_a_real_proxmox() {
    let Some(url) = env("PROXMOX_TEST_URL") else {
        eprintln!("skipping: PROXMOX_TEST_URL not set");
        return;
    };
    let template: u32 = required("PROXMOX_TEST_TEMPLATE_VMID")
        .parse()
        .expect("PROXMOX_TEST_TEMPLATE_VMID is a VMID");
    let mut cfg = ProxmoxConfig::new(
        &url,
        &required("PROXMOX_TEST_TOKEN_ID"),
        &required("PROXMOX_TEST_NODE"),
        template,
        &required("PROXMOX_TEST_STORAGE"),
    );
    cfg.api_token_secret = Some(Secret::new(required("PROXMOX_TEST_TOKEN_SECRET")));
    cfg.tls_fingerprint = env("PROXMOX_TEST_FINGERPRINT");
    cfg.ct_template = env("PROXMOX_TEST_CT_TEMPLATE");
    cfg.pool = env("PROXMOX_TEST_POOL");
    let has_ct = cfg.ct_template.is_some();
    let provider = Arc::new(ProxmoxProvider::new(cfg).expect("configuration"));

    let checks = provider.validate().await;
    for c in &checks {
        eprintln!("doctor: {:?} {}: {}", c.status, c.name, c.detail);
    }
    assert!(
        checks.iter().all(|c| c.status != CheckStatus::Fail),
        "doctor failed: {checks:#?}"
    );

    // The disk must not be smaller than the template's (disks only grow).
    let templates = provider.list_templates().await.expect("list_templates");
    let tpl_disk = templates
        .iter()
        .find(|t| t.id == template.to_string())
        .and_then(|t| t.disk_gib)
        .unwrap_or(0);
    let disk_gib = tpl_disk.max(10);

    let run = format!("{:x}", std::process::id());
    let fixture = Fixture {
        provider,
        spec: Box::new(move |kind, tag| VmSpec {
            instance_id: InstanceId::parse(&format!("berth-test-{run}-{tag}")).expect("id"),
            name: format!("berth-test-{run}-{tag}"),
            kind,
            cores: 1,
            memory_mib: 1024,
            disk_gib,
            template: None,
            ssh_keys: vec![SshPublicKey::parse(KEY).expect("key")],
            user: None,
            network: Default::default(),
        }),
        kinds: if has_ct {
            vec![GuestKind::Vm, GuestKind::Container]
        } else {
            vec![GuestKind::Vm]
        },
    };
    run_all(&fixture).await;
}
