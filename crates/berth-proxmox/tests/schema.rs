//! Every request Berth sends is valid per the official PVE API schema (apidata.json): the
//! conformance suite plus the remaining provider calls run against the emulator with the schema
//! loaded, and the emulator must have validated requests and found no violation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_conformance::{Fixture, run_all};
use berth_core::{GuestKind, InstanceRef, Ipv4Config, Ipv6Config, ListFilter, PowerOp, Provider, Resize};
use berth_pve_emulator::EmulatorConfig;
use common::*;

#[tokio::test]
async fn every_request_matches_the_pve_schema() {
    if EmulatorConfig::default_schema_path().is_none() {
        eprintln!("skipping: the PVE schema (apidata.json) is not available; set BERTH_PVE_SCHEMA");
        return;
    }
    let emu = emulator().await;
    assert!(emu.schema_loaded(), "the emulator validates requests");
    let p = Arc::new(provider(&emu));
    let fixture = Fixture {
        provider: p.clone(),
        spec: Box::new(spec),
        kinds: vec![GuestKind::Vm, GuestKind::Container],
    };
    run_all(&fixture).await;

    // The calls the suite does not make: static addressing, IPv6, DNS, a cross-node clone,
    // disk growth on a running guest, a command run by the guest agent, the doctor, templates
    // and capacity.
    for kind in [GuestKind::Vm, GuestKind::Container] {
        let mut s = spec(kind, "schema");
        s.network.ipv4 = Ipv4Config::parse("198.51.100.7/24,gw=198.51.100.1").unwrap();
        s.network.ipv6 = Some(Ipv6Config::Static {
            address: "2001:db8::7".parse().unwrap(),
            prefix_len: 64,
            gateway: Some("2001:db8::1".parse().unwrap()),
        });
        s.network.nameservers = vec!["198.51.100.53".parse().unwrap(), "2001:db8::53".parse().unwrap()];
        s.user = Some("ops".into());
        if kind == GuestKind::Vm {
            s.template = Some("9100".into());
        }
        p.create(&s, &Events::default()).await.unwrap();
        let id = InstanceRef::Id(s.instance_id.clone());
        p.reconfigure(
            &id,
            &Resize {
                cores: Some(3),
                memory_mib: Some(3072),
                disk_gib: Some(16),
            },
        )
        .await
        .unwrap();
        p.power(&id, PowerOp::Reboot).await.unwrap();
        if kind == GuestKind::Vm {
            let out = p.exec(&id, "echo schema", Duration::from_secs(20)).await.unwrap();
            assert_eq!(out.stdout, "schema\n");
        }
        p.delete(&id).await.unwrap();
    }
    p.validate().await;
    p.list_templates().await.unwrap();
    p.capacity().await.unwrap();
    p.list(ListFilter {
        all: true,
        ..Default::default()
    })
    .await
    .unwrap();

    let violations = emu.schema_violations();
    assert!(
        violations.is_empty(),
        "requests that break the PVE schema: {violations:#?}"
    );
    let writes = emu.requests().iter().filter(|r| r.method != "GET").count();
    assert!(writes > 20, "requests were actually checked ({writes} writes)");
}
