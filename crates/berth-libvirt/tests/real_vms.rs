//! The libvirt backend against a real libvirtd running real QEMU guests (TCG) booted from the
//! tiny test image: the conformance suite, and checks from outside the guest that it received
//! its SSH key and reports its address.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_conformance::{self as conf, Fixture, Recorder};
use berth_core::{GuestKind, InstanceRef, PowerOp, PowerState, Provider, Resize, Stage, StagePhase, VmSpec};

fn spec(tag: &str) -> VmSpec {
    VmSpec {
        name: format!("real-{tag}"),
        user: Some("deploy".into()),
        ..common::spec(tag)
    }
}

use common::real_guests as setup;

/// The conformance suite on real guests, in three tests so nextest boots them in parallel; each
/// has its own instance directory, which must be empty at the end.
async fn conformance(part: &str) {
    let Some((dir, p)) = setup() else { return };
    let f = Fixture {
        provider: Arc::new(p),
        spec: Box::new(|kind: GuestKind, tag: &str| {
            // Unique per run: a failed earlier run may have left its guests on a shared daemon.
            let mut s = spec(&format!("rc{}-{tag}", std::process::id() % 100_000));
            s.kind = kind;
            s
        }),
        kinds: vec![GuestKind::Vm],
    };
    let vm = GuestKind::Vm;
    match part {
        "lifecycle" => conf::lifecycle(&f, vm).await,
        "crash" => conf::crash_between_stages(&f, vm).await,
        _ => {
            conf::unknown_is_not_found(&f, vm).await;
            conf::invalid_spec_creates_nothing(&f, vm).await;
            conf::create_is_idempotent(&f, vm).await;
            conf::delete_is_idempotent(&f, vm).await;
            conf::list_filters_owned(&f, vm).await;
        }
    }
    let left: Vec<_> = std::fs::read_dir(dir.path().join("instances"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "instance files left behind: {left:?}");
}

#[tokio::test]
async fn real_guests_conformance_lifecycle() {
    conformance("lifecycle").await;
}

#[tokio::test]
async fn real_guests_conformance_crash_between_stages() {
    conformance("crash").await;
}

#[tokio::test]
async fn real_guests_conformance_the_rest() {
    conformance("rest").await;
}

#[tokio::test]
async fn the_guest_gets_its_key_and_reports_its_address() {
    let Some((_dir, p)) = setup() else { return };
    let s = spec("seen");
    let rec = Recorder::default();
    let inst = p.create(&s, &rec).await.unwrap();
    let stages: Vec<(Stage, StagePhase)> = rec.events().iter().map(|e| (e.stage, e.phase)).collect();
    let mut want = Vec::new();
    for st in [
        Stage::CloneTemplate,
        Stage::ConfigureVm,
        Stage::StartVm,
        Stage::WaitNetwork,
    ] {
        want.extend([(st, StagePhase::Started), (st, StagePhase::Completed)]);
    }
    assert_eq!(stages, want);
    assert_eq!(inst.state, PowerState::Running);
    let ip = inst.ipv4.expect("an address from the guest agent");
    // From outside: what the guest printed on its serial console, as logged by virtlogd.
    let console = p.instance_dir(&s.instance_id).join("console.log");
    let text = common::wait_for_text(&console, "berth-guest: ready", Duration::from_secs(60));
    assert!(text.contains("berth-guest: instance-id=seen"), "{text}");
    assert!(text.contains("berth-guest: hostname=real-seen"), "{text}");
    assert!(text.contains("berth-guest: user=deploy"), "{text}");
    assert!(
        text.contains(&format!("berth-guest: authorized_key={}", common::KEY)),
        "{text}"
    );
    assert!(text.contains(&format!("berth-guest: ipv4={ip}")), "{text}");

    // A graceful shutdown really reaches the guest (through its agent or the ACPI button) and
    // ends long before the timeout would force it off.
    let id = InstanceRef::Id(s.instance_id.clone());
    let asked = std::time::Instant::now();
    let off = p.power(&id, PowerOp::Shutdown { timeout_secs: 60 }).await.unwrap();
    assert_eq!(off.state, PowerState::Stopped);
    assert!(asked.elapsed() < Duration::from_secs(30), "took {:?}", asked.elapsed());
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains("berth-guest: guest-shutdown") || text.contains("berth-guest: acpi power button"),
        "{text}"
    );
    let on = p.power(&id, PowerOp::Start).await.unwrap();
    assert_eq!(on.state, PowerState::Running);

    // Disks grow live (the guest running) and offline.
    let grow = |g| Resize {
        cores: None,
        memory_mib: None,
        disk_gib: Some(g),
    };
    p.reconfigure(&id, &grow(2)).await.unwrap();
    assert_eq!(p.describe(&id).await.unwrap().disk_gib, Some(2));
    p.power(&id, PowerOp::Stop).await.unwrap();
    p.reconfigure(&id, &grow(3)).await.unwrap();
    assert_eq!(p.describe(&id).await.unwrap().disk_gib, Some(3));
    let shrink = p.reconfigure(&id, &grow(1)).await.unwrap_err();
    assert!(shrink.to_string().contains("only grow"), "{shrink}");
    p.delete(&id).await.unwrap();
    assert!(!p.instance_dir(&s.instance_id).exists());
}
