//! The operator's workflow against a waiting create: durability across restarts, the deadline,
//! fail/cancel, the root password's handling, and the operator API's errors.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{ErrorCode, GuestKind, InstanceRef, NoProgress, PowerOp, PowerState, Provider, ProviderError, Secret};
use berth_manual::{OperatorDetails, OperatorError, RequestStatus};

/// Runs a create until its request is pending, then drops it (a crash or restart).
async fn start_and_drop(p: &berth_manual::ManualProvider, spec: &berth_core::VmSpec) {
    tokio::select! {
        res = p.create(spec, &NoProgress) => panic!("create returned before an operator acted: {res:?}"),
        _ = common::until_pending(p, &spec.instance_id) => {}
    }
}

// Multi-threaded: the password hand-over then runs through `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_survive_a_restart_and_a_new_create_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec(GuestKind::Vm, "durable");
    {
        let first = common::provider(dir.path(), None);
        start_and_drop(&first, &spec).await;
    }
    let restarted = common::provider(dir.path(), None);
    let pending = restarted.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].instance_id, spec.instance_id);
    assert_eq!(pending[0].name, spec.name);
    assert_eq!(pending[0].size(), "2 vCPU, 2048 MiB RAM, 20 GiB disk");
    assert_eq!(pending[0].deadline, pending[0].created_at + Duration::from_secs(86_400));
    let shown = restarted
        .describe(&InstanceRef::Id(spec.instance_id.clone()))
        .await
        .unwrap();
    assert_eq!(shown.state, PowerState::Provisioning);

    let waiting = {
        let p = Arc::new(restarted);
        let spec = spec.clone();
        let p2 = p.clone();
        (p, tokio::spawn(async move { p2.create(&spec, &NoProgress).await }))
    };
    let cli = common::provider(dir.path(), None);
    let details = OperatorDetails {
        root_password: Some(Secret::new("pw-restart-1")),
        ..common::details(7)
    };
    let done = cli.complete(&spec.instance_id, details).await.unwrap();
    assert_eq!(done.state, PowerState::Running);
    assert!(done.root_password.is_none(), "only create hands the password over");
    let inst = waiting.1.await.unwrap().unwrap();
    assert_eq!(inst.root_password.as_ref().map(Secret::expose), Some("pw-restart-1"));
    let stored = std::fs::read_to_string(dir.path().join("state/man-durable.json")).unwrap();
    assert!(!stored.contains("pw-restart-1"), "{stored}");
    assert_eq!(inst.ipv4, Some("192.0.2.7".parse().unwrap()));
    assert_eq!(inst.ssh_port, Some(2222));
    assert!(cli.pending().await.unwrap().is_empty());
    // Nothing but the record and the lock: no temp files left by the atomic writes.
    assert_eq!(
        common::state_files(dir.path()),
        vec![".lock".to_owned(), "man-durable.json".to_owned()]
    );
}

#[tokio::test]
async fn the_deadline_fails_the_request_with_timeout_and_then_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::provider(dir.path(), None);
    let spec = common::spec(GuestKind::Vm, "late");
    start_and_drop(&p, &spec).await;
    // Berth was down for two days: age the record.
    let path = dir.path().join("state/man-late.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let created = json["created_at"].as_u64().unwrap();
    json["created_at"] = (created - 2 * 86_400).into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();

    let err = p.create(&spec, &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    let again = p.create(&spec, &NoProgress).await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::Conflict, "{again}");
    assert!(
        again.to_string().contains("no operator completed it within 86400 s"),
        "{again}"
    );
    assert!(p.pending().await.unwrap().is_empty());
    let id = InstanceRef::Id(spec.instance_id.clone());
    assert_eq!(p.describe(&id).await.unwrap_err().code(), ErrorCode::NotFound);
    assert!(p.list(Default::default()).await.unwrap().is_empty());
    // The operator can no longer complete it.
    match p.complete(&spec.instance_id, common::details(1)).await {
        Err(OperatorError::NotPending { status, .. }) => assert_eq!(status, RequestStatus::Failed),
        other => panic!("{other:?}"),
    }
    // Deleting the failed request forgets it (there never was a machine).
    assert_eq!(p.delete(&id).await.unwrap(), berth_core::DeleteOutcome::AlreadyAbsent);
    assert_eq!(common::state_files(dir.path()), vec![".lock".to_owned()]);
}

async fn ended_by_operator(cancel: bool) {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(common::provider(dir.path(), None));
    let spec = common::spec(GuestKind::Vm, if cancel { "cancel" } else { "fail" });
    let task = {
        let (agent, spec) = (agent.clone(), spec.clone());
        tokio::spawn(async move { agent.create(&spec, &NoProgress).await })
    };
    let cli = common::provider(dir.path(), None);
    common::until_pending(&cli, &spec.instance_id).await;
    let reason = "rack 4 has no free slot";
    if cancel {
        cli.cancel(&spec.instance_id, reason).await.unwrap();
    } else {
        cli.fail(&spec.instance_id, reason).await.unwrap();
    }
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(reason), "{err}");
    let word = if cancel { "cancelled" } else { "failed" };
    assert!(err.to_string().contains(word), "{err}");
    // Not silently re-pended by a retry.
    let again = agent.create(&spec, &NoProgress).await.unwrap_err();
    assert!(again.to_string().contains(reason), "{again}");
    assert!(cli.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_operator_failing_a_request_fails_the_create_with_the_reason() {
    ended_by_operator(false).await;
}

#[tokio::test]
async fn an_operator_cancelling_a_request_fails_the_create_with_the_reason() {
    ended_by_operator(true).await;
}

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_password_is_handed_over_once_and_never_shown() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    // Global, not thread-local: a callsite first reached on another thread (the record store's
    // blocking pool) while only a thread-local subscriber existed could cache "not interested"
    // and drop this thread's events under load. Each nextest test is its own process; the
    // assertions below hold with other tests' logs mixed in too.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber in this test binary");

    let dir = tempfile::tempdir().unwrap();
    let p = common::provider(dir.path(), None);
    let spec = common::spec(GuestKind::Vm, "pw");
    start_and_drop(&p, &spec).await;
    let details = OperatorDetails {
        ipv4: None,
        ipv6: Some("2001:db8::7".parse().unwrap()),
        ssh_port: None,
        root_password: Some(Secret::new("pw-hunter2-root")),
    };
    assert!(!format!("{details:?}").contains("hunter2"));
    p.complete(&spec.instance_id, details).await.unwrap();
    let record = dir.path().join("state/man-pw.json");
    assert!(
        String::from_utf8(std::fs::read(&record).unwrap())
            .unwrap()
            .contains("pw-hunter2-root")
    );

    let inst = p.create(&spec, &NoProgress).await.unwrap();
    assert_eq!(inst.root_password.as_ref().map(Secret::expose), Some("pw-hunter2-root"));
    assert_eq!(inst.ipv6, Some("2001:db8::7".parse().unwrap()));
    assert!(!format!("{inst:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&inst).unwrap().contains("hunter2"));
    // Removed from the record once create returned it; later creates return none.
    let stored = String::from_utf8(std::fs::read(&record).unwrap()).unwrap();
    assert!(
        !stored.contains("hunter2") && !stored.contains("root_password"),
        "{stored}"
    );
    let again = p.create(&spec, &NoProgress).await.unwrap();
    assert!(again.root_password.is_none());
    assert_eq!(again.ipv6, inst.ipv6);
    // Errors about the completed request do not carry it either.
    let err = p.complete(&spec.instance_id, common::details(1)).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("man-pw"), "the test captured no logs: {logged}");
    assert!(!logged.contains("hunter2"), "{logged}");
}

#[tokio::test]
async fn operator_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::provider(dir.path(), None);
    let spec = common::spec(GuestKind::Vm, "errs");
    let unknown = berth_core::InstanceId::parse("man-nope").unwrap();
    assert!(matches!(
        p.complete(&unknown, common::details(1)).await,
        Err(OperatorError::NotFound { .. })
    ));
    start_and_drop(&p, &spec).await;
    let no_address = OperatorDetails {
        ssh_port: Some(22),
        ..Default::default()
    };
    let cases: Vec<(OperatorDetails, &str)> = vec![
        (no_address, "ip"),
        (
            OperatorDetails {
                ipv4: Some("0.0.0.0".parse().unwrap()),
                ..Default::default()
            },
            "ip",
        ),
        (
            OperatorDetails {
                ssh_port: Some(0),
                ..common::details(1)
            },
            "ssh_port",
        ),
        (
            OperatorDetails {
                root_password: Some(Secret::new("")),
                ..common::details(1)
            },
            "password",
        ),
    ];
    for (details, field) in cases {
        match p.complete(&spec.instance_id, details).await {
            Err(OperatorError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    match p.fail(&spec.instance_id, "   ").await {
        Err(OperatorError::Invalid { field, .. }) => assert_eq!(field, "reason"),
        other => panic!("{other:?}"),
    }
    // Still pending after all the refused calls.
    assert_eq!(p.pending().await.unwrap().len(), 1);
    p.complete(&spec.instance_id, common::details(1)).await.unwrap();
    let twice = p.complete(&spec.instance_id, common::details(2)).await.unwrap_err();
    assert!(twice.to_string().contains("is completed, not pending"), "{twice}");
    assert!(p.cancel(&spec.instance_id, "changed my mind").await.is_err());
}

#[tokio::test]
async fn deleting_a_waiting_request_ends_the_create_and_power_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(common::provider(dir.path(), None));
    let spec = common::spec(GuestKind::Container, "gone");
    let task = {
        let (agent, spec) = (agent.clone(), spec.clone());
        tokio::spawn(async move { agent.create(&spec, &NoProgress).await })
    };
    common::until_pending(&agent, &spec.instance_id).await;
    let id = InstanceRef::Id(spec.instance_id.clone());
    let listed = agent
        .list(berth_core::ListFilter {
            all: false,
            kind: Some(GuestKind::Container),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, PowerState::Provisioning);
    match agent.power(&id, PowerOp::Start).await {
        Err(ProviderError::Unsupported { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(!agent.capabilities().await.unwrap().power);
    assert_eq!(agent.delete(&id).await.unwrap(), berth_core::DeleteOutcome::Deleted);
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert!(err.to_string().contains("deleted"), "{err}");
    assert_eq!(
        agent.delete(&id).await.unwrap(),
        berth_core::DeleteOutcome::AlreadyAbsent
    );
}

#[tokio::test]
async fn the_same_id_with_another_spec_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::provider(dir.path(), None);
    let spec = common::spec(GuestKind::Vm, "twin");
    start_and_drop(&p, &spec).await;
    let mut other = spec.clone();
    other.cores = 8;
    let err = p.create(&other, &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert_eq!(p.pending().await.unwrap().len(), 1);
}
