//! The Provider conformance suite against the manual backend, with an operator (a second
//! provider over the same state directory, as the CLI would be) completing requests as they
//! appear.

mod common;

use std::collections::BTreeMap;
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
    // Per request (an id's messages up to the delete or withdrawal that ends it; the suite
    // reuses ids across kinds), exactly one announcement. The one exception: a create cut off
    // right after `waiting_for_operator` started (the suite's `crash<n>s` ids) may have sent
    // the message without recording it, and the re-run then sends it again (at least once, by
    // design) — but never more than that.
    let texts = hook.texts();
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    let mut closed: Vec<(&str, usize)> = Vec::new();
    for t in &texts {
        if let Some(id) = t.lines().find_map(|l| l.strip_prefix("Instance: ")) {
            *open.entry(id).or_default() += 1;
            continue;
        }
        let ended = t
            .strip_prefix("Berth deleted instance ")
            .or_else(|| t.strip_prefix("Berth withdrew the request for instance "))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("an unexpected message: {t}"));
        closed.push((ended, open.remove(ended).unwrap_or(0)));
    }
    assert_eq!(
        open.into_iter().collect::<Vec<_>>(),
        vec![(spec.instance_id.as_str(), 1)],
        "only the last request is still open, announced once"
    );
    assert!(!closed.is_empty());
    for (id, n) in closed {
        let resumed_after_a_crash_at_start = id
            .strip_prefix("man-crash")
            .and_then(|r| r.strip_suffix('s'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let allowed = if resumed_after_a_crash_at_start { 1..=2 } else { 1..=1 };
        assert!(
            allowed.contains(&n),
            "instance {id} was announced {n} times: {texts:#?}"
        );
    }
    op_task.abort();
    agent
        .delete(&berth_core::InstanceRef::Id(spec.instance_id.clone()))
        .await
        .unwrap();
    assert_eq!(common::state_files(dir.path()), vec![".lock".to_owned()]);
}
