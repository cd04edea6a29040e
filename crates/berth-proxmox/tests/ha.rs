//! HA against the emulator: resources whose requested state is the guest's power state, start
//! and stop redirected to the HA manager, PVE 9 rules (groups refused with PVE's message), PVE 8
//! groups (rules absent), purge on removal and on the guest's destroy; refusals named.

mod common;

use std::time::Duration;

use berth_core::{GuestKind, InstanceRef, Provider};
use berth_proxmox::client::backup::BackupJob;
use berth_proxmox::client::ha::{HaGroup, HaResource, HaRule};
use berth_proxmox::client::{GuestType, Method, Params, PowerAction, PveClient, PveError};
use berth_pve_emulator::{Emulator, EmulatorConfig, Timings};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn says(e: PveError) -> String {
    e.to_string()
}

async fn running(c: &PveClient, vmid: u32) -> bool {
    c.guest_status("pve1", GuestType::Qemu, vmid)
        .await
        .unwrap()
        .status
        .as_deref()
        == Some("running")
}

async fn make_vm(emu: &berth_pve_emulator::EmulatorHandle, tag: &str) -> u32 {
    provider(emu)
        .create(&spec(GuestKind::Vm, tag), &Events::default())
        .await
        .unwrap()
        .backend_id
        .parse()
        .unwrap()
}

fn state(s: &str) -> HaResource {
    HaResource {
        state: Some(s.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_ha_state_is_the_power_state_and_power_calls_become_requests() {
    let emu = emulator().await;
    let c = client(&emu);
    let vmid = make_vm(&emu, "ha1").await;
    assert!(running(&c, vmid).await);
    let sid = format!("vm:{vmid}");

    // Managed as stopped: the manager stops it.
    c.create_ha_resource(&vmid.to_string(), &state("stopped"))
        .await
        .unwrap();
    assert!(!running(&c, vmid).await);
    let r = c.ha_resource(&sid).await.unwrap();
    assert_eq!(
        (r.sid.as_deref(), r.state.as_deref()),
        (Some(sid.as_str()), Some("stopped"))
    );
    let status = c.ha_status().await.unwrap();
    let line = status.iter().find(|s| s.sid.as_deref() == Some(sid.as_str())).unwrap();
    assert_eq!(
        (line.request_state.as_deref(), line.node.as_deref()),
        (Some("stopped"), Some("pve1"))
    );
    assert!(status.iter().any(|s| s.kind.as_deref() == Some("quorum")));

    // A start becomes an HA request (an `hastart` task); the resource now asks for started.
    let upid = c
        .power("pve1", GuestType::Qemu, vmid, PowerAction::Start, &Params::new())
        .await
        .unwrap();
    assert!(upid.to_string().contains(&format!(":hastart:{vmid}:")), "{upid}");
    c.wait_task(&upid, WAIT).await.unwrap();
    let log = c.task_log_tail(&upid, 10).await.unwrap();
    assert!(
        log.iter().any(|l| l == &format!("Requesting HA start for VM {vmid}")),
        "{log:?}"
    );
    assert!(running(&c, vmid).await);
    assert_eq!(c.ha_resource(&sid).await.unwrap().state.as_deref(), Some("started"));
    let upid = c
        .power("pve1", GuestType::Qemu, vmid, PowerAction::Shutdown, &Params::new())
        .await
        .unwrap();
    assert!(upid.to_string().contains(":hastop:"), "{upid}");
    c.wait_task(&upid, WAIT).await.unwrap();
    assert!(!running(&c, vmid).await);

    // Changed under its digest; a stale one is refused.
    let digest = c.ha_resource(&sid).await.unwrap().digest;
    c.update_ha_resource(
        &sid,
        &HaResource {
            max_restart: Some(3),
            ..state("stopped")
        },
        &[],
        digest.as_deref(),
    )
    .await
    .unwrap();
    let e = says(
        c.update_ha_resource(&sid, &state("started"), &[], digest.as_deref())
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("update resources config failed: detected modified configuration"),
        "{e}"
    );
    assert!(!running(&c, vmid).await, "the refused change did not start it");

    // The guest cannot be destroyed while in HA without purge; the provider purges.
    let path = format!("/nodes/pve1/qemu/{vmid}");
    let e = says(
        c.write::<serde_json::Value>(Method::Delete, &path, &Params::new())
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains(&format!(
            "unable to remove VM {vmid} - used in HA resources and purge parameter not set."
        )),
        "{e}"
    );
    c.create_ha_rule(
        "keep-on-pve1",
        &HaRule {
            kind: Some("node-affinity".into()),
            resources: Some(sid.clone()),
            nodes: Some("pve1:2,pve2".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let job = BackupJob {
        id: "ha-job".into(),
        schedule: Some("21:00".into()),
        enabled: true,
        vmid: vec![vmid, 9000],
        ..Default::default()
    };
    c.create_backup_job(&job).await.unwrap();
    let inst = InstanceRef::Backend(vmid.to_string());
    provider(&emu).delete(&inst).await.unwrap();
    assert!(c.ha_resources().await.unwrap().is_empty());
    assert!(c.ha_rules().await.unwrap().is_empty(), "a rule left empty goes with it");
    assert_eq!(c.backup_job("ha-job").await.unwrap().vmid, vec![9000]);
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn pve9_rules_refuse_groups_and_bad_input() {
    let emu = emulator().await;
    let c = client(&emu);
    let vmid = make_vm(&emu, "ha2").await;
    let other = make_vm(&emu, "ha3").await;
    c.create_ha_resource(&format!("vm:{vmid}"), &HaResource::default())
        .await
        .unwrap();
    c.create_ha_resource(&format!("vm:{other}"), &HaResource::default())
        .await
        .unwrap();
    let apart = HaRule {
        kind: Some("resource-affinity".into()),
        resources: Some(format!("vm:{vmid},{other}")),
        affinity: Some("negative".into()),
        ..Default::default()
    };
    c.create_ha_rule("apart", &apart).await.unwrap();
    let rules = c.ha_rules().await.unwrap();
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(format!("vm:{vmid},vm:{other}").as_str()),
        "bare ids resolved"
    );

    let e = says(c.ha_groups().await.unwrap_err());
    assert!(e.contains("ha groups have been migrated to rules"), "{e}");
    let third = make_vm(&emu, "ha4").await;
    let grouped = HaResource {
        group: Some("fast".into()),
        ..Default::default()
    };
    let e = says(c.create_ha_resource(&third.to_string(), &grouped).await.unwrap_err());
    assert!(
        e.contains("invalid parameter 'group': ha groups have been migrated to rules"),
        "{e}"
    );
    for (id, rule, expect) in [
        (
            "apart",
            apart.clone(),
            "create HA rule failed: HA rule 'apart' already defined",
        ),
        (
            "no-affinity",
            HaRule {
                affinity: None,
                ..apart.clone()
            },
            "affinity: property is missing",
        ),
        (
            "far",
            HaRule {
                kind: Some("node-affinity".into()),
                nodes: Some("pve9".into()),
                affinity: None,
                ..apart.clone()
            },
            "nodes: no such cluster node 'pve9'",
        ),
        (
            "bad-type",
            HaRule {
                kind: Some("anti".into()),
                ..apart.clone()
            },
            "type: value 'anti' does not have a value",
        ),
    ] {
        let e = says(c.create_ha_rule(id, &rule).await.unwrap_err());
        assert!(e.contains(expect), "{expect}: {e}");
    }
    let e = says(
        c.create_ha_resource(&format!("vm:{vmid}"), &HaResource::default())
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains(&format!(
            "create resource failed: resource ID 'vm:{vmid}' already defined"
        )),
        "{e}"
    );
    let e = says(
        c.create_ha_resource("vm:4242", &HaResource::default())
            .await
            .unwrap_err(),
    );
    assert!(e.contains("create resource failed: VM 4242 does not exist"), "{e}");
    assert_eq!(c.ha_rules().await.unwrap().len(), 1);
    assert_eq!(c.ha_resources().await.unwrap().len(), 2);

    // Sys.Console is needed to change HA.
    emu.add_token(
        "berth@pve!audit",
        "audit-secret",
        vec![("/".into(), vec!["Sys.Audit".into()])],
    );
    let ro = client_as(&emu, "berth@pve!audit", "audit-secret");
    assert_eq!(ro.ha_resources().await.unwrap().len(), 2);
    let e = says(ro.delete_ha_rule("apart").await.unwrap_err());
    assert!(e.contains("Permission check failed (/, Sys.Console)"), "{e}");
    // Removed without purge, the resource stays in its rule.
    c.delete_ha_resource(&format!("vm:{other}"), false).await.unwrap();
    assert!(
        c.ha_rules().await.unwrap()[0]
            .resources
            .as_deref()
            .unwrap()
            .contains(&other.to_string())
    );
}

#[tokio::test]
async fn pve8_has_groups_and_no_rules() {
    let emu = Emulator::start(EmulatorConfig {
        timings: Timings::fast(),
        pve_major: 8,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let c = client(&emu);
    assert_eq!(c.version().await.unwrap().release.as_deref(), Some("8.4"));
    let g = HaGroup {
        group: Some("fast".into()),
        nodes: Some("pve1:2,pve2:1".into()),
        restricted: true,
        ..Default::default()
    };
    c.create_ha_group(&g).await.unwrap();
    let groups = c.ha_groups().await.unwrap();
    assert_eq!(
        (groups[0].nodes.as_deref(), groups[0].restricted),
        (Some("pve1:2,pve2:1"), true)
    );
    let e = says(c.ha_rules().await.unwrap_err());
    assert!(e.contains("HTTP 501"), "{e}");
    let vmid = make_vm(&emu, "ha8").await;
    let e = says(
        c.create_ha_resource(
            &vmid.to_string(),
            &HaResource {
                group: Some("slow".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert!(e.contains("create resource failed: group 'slow' does not exist"), "{e}");
    c.create_ha_resource(
        &vmid.to_string(),
        &HaResource {
            group: Some("fast".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = says(c.delete_ha_group("fast").await.unwrap_err());
    assert!(
        e.contains(&format!("ha group 'fast' is used by resource 'vm:{vmid}'")),
        "{e}"
    );
}
