//! Notifications over a real loopback webhook: the payload, retries with backoff, a failing
//! webhook leaving the request pending, one notification per request across a resumed create,
//! and the teardown message on delete.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_core::{GuestKind, InstanceRef, NoProgress, Provider};

async fn until_notified(hook: &common::Hook, n: usize) {
    for _ in 0..2000 {
        if hook.count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the webhook got {} messages, expected {n}", hook.count());
}

#[tokio::test]
async fn a_request_is_announced_once_with_everything_the_operator_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = common::webhook(0).await;
    let agent = common::provider(dir.path(), Some(url.clone()));
    let spec = common::spec(GuestKind::Vm, "hook");
    // Keep the create running until it has recorded the notification: the webhook receiving
    // the message comes first, and dropping the create between the two would lose the record.
    let recorded = async {
        for _ in 0..2000 {
            if agent.pending().await.unwrap().first().is_some_and(|r| r.notified) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "the notification was never recorded (webhook got {} messages)",
            hook.count()
        );
    };
    tokio::select! {
        res = agent.create(&spec, &NoProgress) => panic!("create returned early: {res:?}"),
        _ = recorded => {}
    }
    assert_eq!(hook.count(), 1, "{:?}", hook.texts());
    let text = &hook.texts()[0];
    for want in [
        "Instance: man-hook",
        "Name: mn-hook",
        "Size: 2 vCPU, 2048 MiB RAM, 20 GiB disk",
        "ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU (user@host)",
        "berth vm complete man-hook --ip <ADDRESS>",
        "berth vm fail man-hook --reason",
        "within 86400 s",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
    // The notification is recorded once it was accepted.
    assert!(agent.pending().await.unwrap()[0].notified);

    // A restarted agent resumes the wait without a second message.
    let restarted = Arc::new(common::provider(dir.path(), Some(url)));
    let task = {
        let (p, spec) = (restarted.clone(), spec.clone());
        tokio::spawn(async move { p.create(&spec, &NoProgress).await })
    };
    restarted.complete(&spec.instance_id, common::details(9)).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(hook.count(), 1, "{:?}", hook.texts());

    // Deleting tells the operator to tear the machine down.
    let id = InstanceRef::Id(spec.instance_id.clone());
    assert_eq!(restarted.delete(&id).await.unwrap(), berth_core::DeleteOutcome::Deleted);
    let texts = hook.texts();
    assert_eq!(texts.len(), 2);
    assert!(
        texts[1].contains("man-hook") && texts[1].contains("192.0.2.9") && texts[1].contains("tear the machine down"),
        "{}",
        texts[1]
    );
}

#[tokio::test]
async fn failed_webhook_posts_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = common::webhook(2).await;
    let agent = Arc::new(common::provider(dir.path(), Some(url)));
    let spec = common::spec(GuestKind::Vm, "retry");
    let task = {
        let (p, spec) = (agent.clone(), spec.clone());
        tokio::spawn(async move { p.create(&spec, &NoProgress).await })
    };
    until_notified(&hook, 3).await;
    for _ in 0..2000 {
        if agent.pending().await.unwrap()[0].notified {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(agent.pending().await.unwrap()[0].notified);
    let texts = hook.texts();
    assert_eq!(texts.len(), 3, "two failures, then success");
    assert!(
        texts.iter().all(|t| t == &texts[0]),
        "every attempt carries the same message"
    );
    agent.complete(&spec.instance_id, common::details(3)).await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_dead_webhook_leaves_the_request_pending_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = common::webhook(usize::MAX).await;
    let agent = Arc::new(common::provider(dir.path(), Some(url)));
    let spec = common::spec(GuestKind::Vm, "dead");
    let task = {
        let (p, spec) = (agent.clone(), spec.clone());
        tokio::spawn(async move { p.create(&spec, &NoProgress).await })
    };
    // 1 attempt + 3 retries, then the create keeps waiting.
    until_notified(&hook, 4).await;
    common::until_pending(&agent, &spec.instance_id).await;
    assert!(!task.is_finished(), "a failing webhook must not end the create");
    agent.complete(&spec.instance_id, common::details(4)).await.unwrap();
    let inst = task.await.unwrap().unwrap();
    assert_eq!(inst.ipv4, Some("192.0.2.4".parse().unwrap()));
    assert_eq!(hook.count(), 4, "no attempts beyond the configured retries");
}

#[tokio::test]
async fn a_refusing_webhook_is_not_retried_and_its_token_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, url) = common::webhook(usize::MAX).await;
    *hook.status_when_failing.lock().unwrap() = 404;
    hook.fail_first.store(usize::MAX, Ordering::SeqCst);
    let agent = Arc::new(common::provider(dir.path(), Some(url)));
    assert!(!format!("{agent:?}").contains("tok-secret-7"), "{agent:?}");
    for check in agent.validate().await {
        assert!(!check.detail.contains("tok-secret-7"), "{check:?}");
    }
    let spec = common::spec(GuestKind::Vm, "refused");
    let task = {
        let (p, spec) = (agent.clone(), spec.clone());
        tokio::spawn(async move { p.create(&spec, &NoProgress).await })
    };
    until_notified(&hook, 1).await;
    agent.complete(&spec.instance_id, common::details(5)).await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(hook.count(), 1, "a 404 is final");
}
