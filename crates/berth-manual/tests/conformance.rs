//! The Provider conformance suite against the manual backend, with an operator (a second
//! provider over the same state directory, as the CLI would be) completing requests as they
//! appear.

mod common;

use std::sync::Arc;

use berth_conformance::{Fixture, Recorder, run_all};
use berth_core::{GuestKind, PowerState, Provider, Stage, StagePhase};

#[tokio::test]
async fn passes_the_conformance_suite_with_an_operator_completing_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = common::webhook(0).await;
    let agent = Arc::new(common::provider(dir.path(), Some(url.clone())));
    let operator = Arc::new(common::provider(dir.path(), None));
    let op_task = common::auto_operator(operator.clone());

    for check in agent.validate().await {
        assert_eq!(check.status, berth_core::CheckStatus::Ok, "{check:?}");
    }
    let f = Fixture {
        provider: agent.clone(),
        spec: Box::new(common::spec),
        kinds: vec![GuestKind::Vm, GuestKind::Container],
    };
    run_all(&f).await;

    // The stages a fresh create reports, and what it returns.
    let spec = common::spec(GuestKind::Vm, "stages");
    let rec = Recorder::default();
    let inst = agent.create(&spec, &rec).await.unwrap();
    let seen: Vec<(Stage, StagePhase)> = rec.events().iter().map(|e| (e.stage, e.phase)).collect();
    assert_eq!(
        seen,
        vec![
            (Stage::WaitingForOperator, StagePhase::Started),
            (Stage::WaitingForOperator, StagePhase::Completed),
        ]
    );
    assert_eq!(inst.state, PowerState::Running);
    assert_eq!(inst.ssh_port, Some(2222));
    assert!(inst.ipv4.is_some());
    // Every request was announced once, and nothing but records and the lock is left.
    assert!(hook.count() > 0);
    op_task.abort();
    agent
        .delete(&berth_core::InstanceRef::Id(spec.instance_id.clone()))
        .await
        .unwrap();
    assert_eq!(common::state_files(dir.path()), vec![".lock".to_owned()]);
}
