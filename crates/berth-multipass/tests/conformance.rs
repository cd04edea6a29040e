//! The Provider conformance suite against the `fake_multipass.py` stand-in, plus the create
//! path's own promises: stages, what `launch` is given, and resuming after a crash.

mod common;

use std::sync::Arc;

use berth_conformance::{Fixture, Recorder, run_all};
use berth_core::{CheckStatus, GuestKind, InstanceRef, PowerState, Provider, Stage, StagePhase};
use common::{FakeMultipass, KEY, spec};

#[tokio::test]
async fn stand_in_passes_the_conformance_suite() {
    let fake = FakeMultipass::new(&["--net-delay", "0.3"]);
    let provider = fake.provider();
    for check in provider.validate().await {
        assert_eq!(check.status, CheckStatus::Ok, "{check:?}");
    }
    let f = Fixture {
        provider: Arc::new(provider),
        spec: Box::new(|kind: GuestKind, tag: &str| {
            let mut s = spec(&format!("conf-{tag}"));
            s.kind = kind;
            s
        }),
        kinds: vec![GuestKind::Vm],
    };
    run_all(&f).await;
}

#[tokio::test]
async fn create_launches_once_with_cloud_init_on_stdin_and_waits_for_an_address() {
    let fake = FakeMultipass::new(&["--net-delay", "0.5"]);
    let p = fake.provider();
    let mut s = spec("web1");
    s.name = "web1.example.com".into();
    s.user = Some("deploy".into());
    let rec = Recorder::default();
    let inst = p.create(&s, &rec).await.unwrap();
    let seen: Vec<(Stage, StagePhase)> = rec.events().iter().map(|e| (e.stage, e.phase)).collect();
    assert_eq!(
        seen,
        vec![
            (Stage::CloneTemplate, StagePhase::Started),
            (Stage::CloneTemplate, StagePhase::Completed),
            (Stage::WaitNetwork, StagePhase::Started),
            (Stage::WaitNetwork, StagePhase::Completed),
        ]
    );
    assert_eq!(inst.backend_id, "berth-web1");
    assert_eq!(inst.instance_id, Some(s.instance_id.clone()));
    assert_eq!(inst.state, PowerState::Running);
    assert!(inst.ipv4.is_some(), "{inst:?}");
    assert_eq!(
        (inst.cores, inst.memory_mib, inst.disk_gib),
        (Some(2), Some(1024), Some(5))
    );

    let calls = fake.calls();
    let launches: Vec<&String> = calls.iter().filter(|c| c.starts_with("launch")).collect();
    assert_eq!(
        launches,
        vec!["launch --name berth-web1 --cpus 2 --memory 1024M --disk 5G --timeout 30 --cloud-init - 24.04"]
    );
    // The address came later than the launch: wait_network asked more than once.
    assert!(calls.iter().filter(|c| c.starts_with("info")).count() >= 2, "{calls:?}");
    let stored = fake.stored("berth-web1").unwrap();
    let user_data = stored["user_data"].as_str().unwrap();
    assert!(user_data.starts_with("#cloud-config\nhostname: \"web1\"\nfqdn: \"web1.example.com\"\n"));
    assert!(
        user_data.contains("name: \"deploy\"") && user_data.contains(KEY),
        "{user_data}"
    );

    // Again: found by name, nothing launched.
    let rec = Recorder::default();
    let again = p.create(&s, &rec).await.unwrap();
    assert_eq!(again.backend_id, inst.backend_id);
    assert_eq!(rec.events()[0].phase, StagePhase::Skipped);
    assert_eq!(fake.calls().iter().filter(|c| c.starts_with("launch")).count(), 1);
}

#[tokio::test]
async fn create_resumes_a_stopped_or_trashed_instance() {
    let fake = FakeMultipass::new(&["--net-delay", "0"]);
    let p = fake.provider();
    let s = spec("resume1");
    p.create(&s, &Recorder::default()).await.unwrap();
    let out = fake.run(&["stop", "berth-resume1"], "");
    assert!(out.status.success());
    let rec = Recorder::default();
    let inst = p.create(&s, &rec).await.unwrap();
    assert_eq!(inst.state, PowerState::Running);
    assert!(
        rec.events()
            .iter()
            .any(|e| e.stage == Stage::StartVm && e.phase == StagePhase::Completed)
    );

    // Deleted without --purge: Berth sees it as gone, and create makes it anew.
    assert!(fake.run(&["delete", "berth-resume1"], "").status.success());
    let id = InstanceRef::Id(s.instance_id.clone());
    assert_eq!(
        p.describe(&id).await.unwrap_err().code(),
        berth_core::ErrorCode::NotFound
    );
    assert!(p.list(Default::default()).await.unwrap().is_empty());
    let inst = p.create(&s, &Recorder::default()).await.unwrap();
    assert_eq!(inst.state, PowerState::Running);
    assert_eq!(fake.calls().iter().filter(|c| c.starts_with("launch")).count(), 2);
}

#[tokio::test]
async fn long_instance_ids_use_the_hashed_name() {
    let fake = FakeMultipass::new(&["--net-delay", "0"]);
    let p = fake.provider();
    let mut s = spec(&"x".repeat(60));
    let name = berth_multipass::name_for(&s.instance_id);
    assert!(name.starts_with("berth--") && name.len() <= 63, "{name}");
    s.name = "long1".into();
    let inst = p.create(&s, &Recorder::default()).await.unwrap();
    assert_eq!(inst.backend_id, name);
    assert_eq!(inst.instance_id, Some(s.instance_id.clone()));
    let id = InstanceRef::Id(s.instance_id.clone());
    assert_eq!(p.describe(&id).await.unwrap().backend_id, name);
    // The id cannot be read back from the name: listed only with --all, without an id.
    assert!(p.list(Default::default()).await.unwrap().is_empty());
    let all = p
        .list(berth_core::ListFilter {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((all.len(), all[0].instance_id.clone()), (1, None));
    assert_eq!(p.delete(&id).await.unwrap(), berth_core::DeleteOutcome::Deleted);
}
