//! A node's network against the emulator: edits staged with their `changes` diff, applied by a
//! reload task or dropped by a revert; PVE's quirks (a partial update turns an interface to
//! `manual`, a missing bridge port only warns in the reload log) reproduced; refusals named.

mod common;

use std::time::Duration;

use berth_proxmox::client::network::NetworkInterface;
use berth_proxmox::client::{PveClient, PveError};
use berth_pve_emulator::{Fault, FaultRule};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn says(e: PveError) -> String {
    e.to_string()
}

fn bridge(name: &str, port: &str, cidr: &str) -> NetworkInterface {
    NetworkInterface {
        iface: name.into(),
        kind: "bridge".into(),
        cidr: Some(cidr.into()),
        bridge_ports: vec![port.into()],
        bridge_vlan_aware: true,
        bridge_vids: Some("2-4094".into()),
        autostart: true,
        ..Default::default()
    }
}

async fn find(c: &PveClient, node: &str, iface: &str) -> Option<NetworkInterface> {
    c.network(node, None)
        .await
        .unwrap()
        .interfaces
        .into_iter()
        .find(|i| i.iface == iface)
}

#[tokio::test]
async fn edits_are_staged_then_applied_or_reverted() {
    let emu = emulator().await;
    let c = client(&emu);
    let installed = c.network("pve1", None).await.unwrap();
    assert!(installed.changes.is_none());
    let names: Vec<&str> = installed.interfaces.iter().map(|i| i.iface.as_str()).collect();
    assert_eq!(names, ["eno1", "eno2", "vmbr0"]);
    let vmbr0 = &installed.interfaces[2];
    assert_eq!(
        (
            vmbr0.cidr.as_deref(),
            vmbr0.gateway.as_deref(),
            vmbr0.active,
            vmbr0.method.as_deref()
        ),
        (Some("10.0.0.11/24"), Some("10.0.0.1"), true, Some("static"))
    );

    // Staged: shown with a diff, not active, only on this node.
    let vmbr1 = bridge("vmbr1", "eno2", "192.168.5.1/24");
    vmbr1.check(&installed.interfaces).unwrap();
    c.create_interface("pve1", &vmbr1).await.unwrap();
    let staged = c.network("pve1", None).await.unwrap();
    let diff = staged.changes.clone().expect("changes");
    assert!(
        diff.contains("+auto vmbr1") && diff.contains("+\taddress 192.168.5.1/24"),
        "{diff}"
    );
    let shown = staged.interfaces.iter().find(|i| i.iface == "vmbr1").unwrap();
    assert!(!shown.active && shown.bridge_vlan_aware && shown.method.as_deref() == Some("static"));
    assert!(find(&c, "pve2", "vmbr1").await.is_none());

    // Reverted: gone, no changes left.
    c.revert_network("pve1").await.unwrap();
    let after = c.network("pve1", None).await.unwrap();
    assert!(after.changes.is_none() && after.interfaces.len() == 3);

    // Applied by a srvreload task: active, nothing staged.
    c.create_interface("pve1", &vmbr1).await.unwrap();
    let upid = c.reload_network("pve1").await.unwrap();
    assert!(upid.to_string().contains(":srvreload:networking:"), "{upid}");
    c.wait_task(&upid, WAIT).await.unwrap();
    let applied = c.network("pve1", None).await.unwrap();
    assert!(applied.changes.is_none());
    assert!(find(&c, "pve1", "vmbr1").await.unwrap().active);

    // PVE's quirk: an update without the address turns the bridge to manual (the address key
    // stays); the whole record, as `update_interface` sends it, keeps it static.
    let partial = NetworkInterface {
        iface: "vmbr1".into(),
        kind: "bridge".into(),
        mtu: Some(9000),
        ..Default::default()
    };
    c.update_interface("pve1", &partial, &[]).await.unwrap();
    let one = c.network_interface("pve1", "vmbr1").await.unwrap();
    assert_eq!(
        (one.method.as_deref(), one.cidr.as_deref(), one.mtu),
        (Some("manual"), Some("192.168.5.1/24"), Some(9000))
    );
    let whole = NetworkInterface {
        mtu: Some(9000),
        ..vmbr1.clone()
    };
    c.update_interface("pve1", &whole, &[]).await.unwrap();
    assert_eq!(
        c.network_interface("pve1", "vmbr1").await.unwrap().method.as_deref(),
        Some("static")
    );
    // delete= removes fields; deleting the interface is staged like the rest.
    c.update_interface(
        "pve1",
        &NetworkInterface {
            cidr: None,
            ..whole.clone()
        },
        &["cidr"],
    )
    .await
    .unwrap();
    let plain = c.network_interface("pve1", "vmbr1").await.unwrap();
    assert_eq!((plain.method.as_deref(), plain.cidr.as_deref()), (Some("manual"), None));
    c.delete_interface("pve1", "vmbr1").await.unwrap();
    assert!(find(&c, "pve1", "vmbr1").await.is_none());
    let diff = c.network("pve1", None).await.unwrap().changes.unwrap();
    assert!(diff.contains("-auto vmbr1"), "{diff}");
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn a_missing_bridge_port_only_warns_in_the_reload_log() {
    let emu = emulator().await;
    let c = client(&emu);
    let nodes = c.network("pve1", None).await.unwrap().interfaces;
    let bad = bridge("vmbr7", "eth9", "192.168.7.1/24");
    // Berth refuses it before sending, naming the field ...
    let e = bad.check(&nodes).unwrap_err();
    assert_eq!(e.field, "bridge_ports");
    assert!(e.to_string().contains("'eth9' is not an interface of this node"), "{e}");
    // ... because PVE takes it, and the reload ends OK with the port missing.
    c.create_interface("pve1", &bad).await.unwrap();
    let upid = c.reload_network("pve1").await.unwrap();
    c.wait_task(&upid, WAIT).await.unwrap();
    let log = c.task_log_tail(&upid, 20).await.unwrap();
    assert!(log.iter().any(|l| l.contains("port eth9: does not exist")), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("TASK OK"));
}

#[tokio::test]
async fn refused_edits_name_the_field_and_stage_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    let with_gateway = NetworkInterface {
        gateway: Some("192.168.5.254".into()),
        ..bridge("vmbr2", "eno2", "192.168.5.1/24")
    };
    let cases = [
        (
            with_gateway,
            "gateway: Default gateway already exists on interface 'vmbr0'.",
        ),
        (
            bridge("vmbr2", "eno1", "192.168.5.1/24"),
            "bridge_ports: eno1 is already used on interface 'vmbr0'.",
        ),
        (bridge("vmbr2", "eno2", "192.168.5.1/33"), "cidr: invalid format"),
        (
            bridge("vmbr0", "eno2", "192.168.5.1/24"),
            "iface: interface already exists",
        ),
        (bridge("vmbr2", "eno2", "not-an-address"), "cidr: invalid format"),
    ];
    for (iface, expect) in cases {
        let e = says(c.create_interface("pve1", &iface).await.unwrap_err());
        assert!(e.contains(expect), "{expect}: {e}");
    }
    let e = says(
        c.update_interface("pve1", &bridge("vmbr9", "eno2", "192.168.9.1/24"), &[])
            .await
            .unwrap_err(),
    );
    assert!(e.contains("iface: interface does not exist"), "{e}");
    let e = says(c.network_interface("pve1", "vmbr9").await.unwrap_err());
    assert!(e.contains("iface: interface does not exist"), "{e}");
    let net = c.network("pve1", None).await.unwrap();
    assert!(net.changes.is_none() && net.interfaces.len() == 3, "{net:?}");

    // Sys.Modify is needed to edit; Sys.Audit to read one interface.
    emu.add_token(
        "berth@pve!ro",
        "ro-secret",
        vec![("/nodes/pve1".into(), vec!["Sys.Audit".into()])],
    );
    let ro = client_as(&emu, "berth@pve!ro", "ro-secret");
    assert!(ro.network_interface("pve1", "vmbr0").await.is_ok());
    let e = says(
        ro.create_interface("pve1", &bridge("vmbr3", "eno2", "192.168.3.1/24"))
            .await
            .unwrap_err(),
    );
    assert!(e.contains("Permission check failed (/nodes/pve1, Sys.Modify)"), "{e}");
    let e = says(ro.reload_network("pve1").await.unwrap_err());
    assert!(e.contains("Sys.Modify"), "{e}");

    // A reload whose task fails leaves the edits staged.
    c.create_interface("pve1", &bridge("vmbr4", "eno2", "192.168.4.1/24"))
        .await
        .unwrap();
    emu.inject(FaultRule {
        method: Some("PUT".into()),
        path_contains: "/nodes/pve1/network".into(),
        fault: Fault::TaskFailure {
            message: "command 'ifreload -a' failed: exit code 1".into(),
        },
        times: 1,
    });
    let upid = c.reload_network("pve1").await.unwrap();
    let e = says(c.wait_task(&upid, WAIT).await.unwrap_err());
    assert!(e.contains("ifreload -a"), "{e}");
    let net = c.network("pve1", None).await.unwrap();
    assert!(net.changes.is_some() && !find(&c, "pve1", "vmbr4").await.unwrap().active);
}
