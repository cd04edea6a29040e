//! Crash safety: create interrupted right after each stage event, and at many points in time
//! (the future dropped, as when the process dies), then run again: exactly one guest carries
//! the marker, and after delete nothing is left.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_core::{GuestKind, InstanceRef, ProgressSink, Provider, Stage, StageEvent, StagePhase};
use berth_pve_emulator::EmulatorHandle;
use common::*;
use tokio::sync::Notify;

struct Tripwire {
    at: (Stage, StagePhase),
    hit: Arc<Notify>,
}

impl ProgressSink for Tripwire {
    fn event(&self, e: StageEvent) {
        if (e.stage, e.phase) == self.at {
            self.hit.notify_one();
        }
    }
}

async fn rerun_and_check(
    emu: &EmulatorHandle,
    p: &berth_proxmox::ProxmoxProvider,
    spec: &berth_core::VmSpec,
    when: &str,
) {
    let inst = p
        .create(spec, &Events::default())
        .await
        .unwrap_or_else(|e| panic!("re-run after {when}: {e}"));
    let marked = marked(emu, spec.instance_id.as_str());
    assert_eq!(
        marked.len(),
        1,
        "after {when}: exactly one guest carries the marker: {marked:?}"
    );
    assert_eq!(marked[0].vmid.to_string(), inst.backend_id);
    assert_eq!(named(emu, &spec.name).len(), 1, "after {when}: no unmarked leftovers");
    p.delete(&InstanceRef::Id(spec.instance_id.clone())).await.unwrap();
    assert!(named(emu, &spec.name).is_empty(), "after {when}: delete leaves nothing");
}

async fn crash_at_every_stage(kind: GuestKind) {
    let emu = emulator().await;
    let p = provider(&emu);
    let stages = [
        Stage::CloneTemplate,
        Stage::ConfigureVm,
        Stage::StartVm,
        Stage::WaitNetwork,
    ];
    for (n, stage) in stages.into_iter().enumerate() {
        for phase in [StagePhase::Started, StagePhase::Completed] {
            let spec = spec(
                kind,
                &format!("crash{n}{}", if phase == StagePhase::Started { "s" } else { "c" }),
            );
            let hit = Arc::new(Notify::new());
            let trip = Tripwire {
                at: (stage, phase),
                hit: hit.clone(),
            };
            let interrupted = tokio::select! {
                biased;
                _ = hit.notified() => true,
                r = p.create(&spec, &trip) => { r.expect("create"); false }
            };
            let when = format!("{stage} {phase:?}");
            // The last event may be followed only by the final read; either way re-run must converge.
            assert!(
                interrupted || (stage, phase) == (Stage::WaitNetwork, StagePhase::Completed),
                "{when} was reported"
            );
            rerun_and_check(&emu, &p, &spec, &when).await;
        }
    }
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn vm_create_survives_a_crash_at_every_stage() {
    crash_at_every_stage(GuestKind::Vm).await;
}

#[tokio::test]
async fn container_create_survives_a_crash_at_every_stage() {
    crash_at_every_stage(GuestKind::Container).await;
}

/// Cancels at many points in time, which lands inside HTTP exchanges and task waits too.
async fn crash_at_many_moments(kind: GuestKind) {
    let emu = emulator().await;
    let p = provider(&emu);
    for (n, ms) in [0u64, 1, 3, 6, 10, 15, 25, 40, 60, 90, 130, 180]
        .into_iter()
        .enumerate()
    {
        let spec = spec(kind, &format!("moment{n}"));
        let _ = tokio::time::timeout(Duration::from_millis(ms), p.create(&spec, &Events::default())).await;
        rerun_and_check(&emu, &p, &spec, &format!("{ms} ms")).await;
    }
}

#[tokio::test]
async fn vm_create_survives_a_crash_at_any_moment() {
    crash_at_many_moments(GuestKind::Vm).await;
}

#[tokio::test]
async fn container_create_survives_a_crash_at_any_moment() {
    crash_at_many_moments(GuestKind::Container).await;
}

/// A cross-node clone (template 9100 on pve2, `target=pve1`) keeps the in-flight clone, locked
/// `clone` and without its marker yet, on the template's node. A crash while it runs, then a
/// re-run, must wait for that clone instead of cloning again.
#[tokio::test]
async fn cross_node_clone_interrupted_in_flight_is_not_cloned_again() {
    let emu = emulator().await;
    let p = provider(&emu);
    // Slow enough clones that the re-run certainly meets the first one still in flight.
    emu.set_timings(berth_pve_emulator::Timings {
        clone: Duration::from_millis(600),
        ..berth_pve_emulator::Timings::fast()
    });
    let mut spec = spec(GuestKind::Vm, "xnode");
    spec.template = Some("9100".into());
    let hit = Arc::new(Notify::new());
    let trip = Tripwire {
        at: (Stage::CloneTemplate, StagePhase::Started),
        hit: hit.clone(),
    };
    let in_flight = |emu: &EmulatorHandle| {
        emu.guests()
            .into_iter()
            .any(|g| g.node == "pve2" && !g.template && g.lock.as_deref() == Some("clone"))
    };
    let interrupted = tokio::select! {
        biased;
        _ = async {
            hit.notified().await;
            // Cancel once the clone was accepted: its half-made guest sits on pve2.
            while !in_flight(&emu) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        } => true,
        r = p.create(&spec, &trip) => { r.expect("create"); false }
    };
    assert!(interrupted, "the clone was still running when cancelled");
    assert!(
        in_flight(&emu),
        "the interrupted clone is in flight on the template's node"
    );
    let clones = || {
        emu.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/clone") && r.status == 200)
            .count()
    };
    assert_eq!(clones(), 1);
    rerun_and_check(&emu, &p, &spec, "an interrupted cross-node clone").await;
    assert_eq!(
        clones(),
        1,
        "the re-run waited for the first clone instead of cloning again"
    );
}
