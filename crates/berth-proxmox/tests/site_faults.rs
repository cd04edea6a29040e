//! The site writes Berth makes, each answered with a 5xx before PVE acts on it: the error reaches
//! the caller, the client does not retry a write PVE may have done, and nothing changed.

mod common;

use berth_proxmox::client::backup::BackupJob;
use berth_proxmox::client::ha::{HaResource, HaRule};
use berth_proxmox::client::network::NetworkInterface;
use berth_proxmox::client::{Params, PveClient};
use berth_pve_emulator::{EmulatorHandle, Fault, FaultRule};
use common::*;

fn fail_next(emu: &EmulatorHandle, method: &str, path: &str) {
    emu.inject(FaultRule {
        method: Some(method.into()),
        path_contains: path.into(),
        fault: Fault::Http {
            status: 500,
            message: "Internal Server Error".into(),
        },
        times: 1,
    });
}

/// Everything the site calls can change, as one comparable text.
async fn site(c: &PveClient) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        c.storage_configs(None).await.unwrap(),
        c.network("pve1", None).await.unwrap(),
        c.backup_jobs().await.unwrap(),
        c.ha_resources().await.unwrap(),
        c.ha_rules().await.unwrap(),
    )
}

#[tokio::test]
async fn a_5xx_on_any_site_write_changes_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = BackupJob {
        id: "nightly".into(),
        schedule: Some("21:00".into()),
        enabled: true,
        all: true,
        ..Default::default()
    };
    c.create_backup_job(&job).await.unwrap();
    let before = site(&c).await;
    let bridge = NetworkInterface {
        iface: "vmbr5".into(),
        kind: "bridge".into(),
        bridge_ports: vec!["eno2".into()],
        ..Default::default()
    };
    let rule = HaRule {
        kind: Some("node-affinity".into()),
        resources: Some("vm:9000".into()),
        nodes: Some("pve1".into()),
        ..Default::default()
    };
    fail_next(&emu, "POST", "/storage");
    assert!(
        c.create_storage("x", "dir", &Params::new().str("path", "/srv/x"))
            .await
            .is_err()
    );
    fail_next(&emu, "PUT", "/storage/local");
    assert!(
        c.update_storage("local", &Params::new().str("disable", "1"), &[], None)
            .await
            .is_err()
    );
    fail_next(&emu, "DELETE", "/storage/shared");
    assert!(c.delete_storage("shared").await.is_err());
    fail_next(&emu, "POST", "/network");
    assert!(c.create_interface("pve1", &bridge).await.is_err());
    fail_next(&emu, "PUT", "/network/vmbr0");
    assert!(
        c.update_interface(
            "pve1",
            &NetworkInterface {
                iface: "vmbr0".into(),
                kind: "bridge".into(),
                ..Default::default()
            },
            &[]
        )
        .await
        .is_err()
    );
    fail_next(&emu, "DELETE", "/network/vmbr0");
    assert!(c.delete_interface("pve1", "vmbr0").await.is_err());
    fail_next(&emu, "POST", "/cluster/backup");
    assert!(
        c.create_backup_job(&BackupJob {
            id: "other".into(),
            ..job.clone()
        })
        .await
        .is_err()
    );
    fail_next(&emu, "PUT", "/cluster/backup/nightly");
    assert!(
        c.update_backup_job(
            &BackupJob {
                enabled: false,
                ..job.clone()
            },
            &[]
        )
        .await
        .is_err()
    );
    fail_next(&emu, "DELETE", "/cluster/backup/nightly");
    assert!(c.delete_backup_job("nightly").await.is_err());
    fail_next(&emu, "POST", "/cluster/ha/resources");
    assert!(c.create_ha_resource("vm:9000", &HaResource::default()).await.is_err());
    fail_next(&emu, "POST", "/cluster/ha/rules");
    assert!(c.create_ha_rule("r1", &rule).await.is_err());
    assert_eq!(site(&c).await, before);
}
