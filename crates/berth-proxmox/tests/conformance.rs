//! Berth's Provider conformance suite against the PVE emulator, for VMs and containers.

mod common;

use std::sync::Arc;

use berth_conformance::{Fixture, run_all};
use berth_core::GuestKind;
use common::*;

#[tokio::test]
async fn proxmox_provider_conforms_for_vms_and_containers() {
    let emu = emulator().await;
    let fixture = Fixture {
        provider: Arc::new(provider(&emu)),
        spec: Box::new(spec),
        kinds: vec![GuestKind::Vm, GuestKind::Container],
    };
    run_all(&fixture).await;
    let left: Vec<_> = emu.guests().into_iter().filter(|g| !g.template).collect();
    assert!(left.is_empty(), "the suite leaves nothing behind: {left:?}");
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}
