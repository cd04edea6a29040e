//! The store conformance suite: every [`Store`] implementation runs it (SQLite always,
//! PostgreSQL where the test setup can start one). Panics name the broken promise.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::{Lease, NewAuditEntry, NewOperation, OpStatus, Outcome, Store, StoreError};

mod catalog;
mod limits;
mod tokens;
pub use catalog::catalog;
pub use limits::limits;
pub use tokens::tokens;

fn op(provider: &str, instance: &str, kind: &str) -> NewOperation {
    NewOperation {
        provider_id: provider.into(),
        instance_id: instance.into(),
        kind: kind.into(),
        payload: json!({"kind": kind, "instance": instance}),
        agent_id: None,
    }
}

const T0: i64 = 1_800_000_000_000;

/// An audit entry for the checks that need one.
fn audit(action: &str) -> NewAuditEntry {
    NewAuditEntry {
        actor: "test".into(),
        action: action.into(),
        subject: "s".into(),
        detail: json!({}),
    }
}
const TTL: i64 = 30_000;

/// Runs every check; `tag` keeps the ids of repeated runs on one database apart.
pub async fn run_all(store: Arc<dyn Store>, tag: &str) {
    roundtrip_and_validation(&*store, tag).await;
    claims_follow_queue_order_and_instances_run_one_at_a_time(&*store, tag).await;
    expired_leases_return_the_work_and_late_reports_are_refused(&*store, tag).await;
    release_requeues(&*store, tag).await;
    operator_inputs_wait_for_the_agent(&*store, tag).await;
    concurrent_claimers_never_share_work(store.clone(), tag).await;
    long_poll_wakes_when_work_arrives(store.clone(), store.clone(), &format!("{tag}-poll")).await;
    enrollment_tokens_are_single_use_and_expire(&*store).await;
    audit_chain_holds_under_concurrent_appends(store.clone()).await;
    // After the audit checks, which expect an empty log.
    catalog(&*store, tag).await;
    limits(store.clone(), tag).await;
    tokens(&*store, tag).await;
}

/// A claimer long-polling on `waiter` gets work that `writer` (the same store, or another
/// replica on the same database) queues while it waits. The recheck interval is an hour and the
/// wait a minute: only the wake-up can deliver the work in time.
pub async fn long_poll_wakes_when_work_arrives(waiter: Arc<dyn Store>, writer: Arc<dyn Store>, provider: &str) {
    let p = provider.to_owned();
    let poll = tokio::spawn(async move {
        let clock = || T0 + 5;
        waiter
            .claim_wait(
                &p,
                "poller",
                TTL,
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(3600),
                &clock,
            )
            .await
    });
    // Let the poller find nothing and go to sleep first.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let queued = writer.enqueue(op(provider, "i", "provision"), T0).await.unwrap();
    let (got, lease) = poll
        .await
        .unwrap()
        .unwrap()
        .expect("store: the long-poll got the work queued while it waited");
    assert_eq!(got.id, queued.id);
    writer
        .finish(&lease, Outcome::Succeeded(json!({})), T0 + 6)
        .await
        .unwrap();
}

/// Appends chain; concurrent appenders (several tasks, as several replicas would) keep one line.
/// Expects an empty audit log.
pub async fn audit_chain_holds_under_concurrent_appends(s: Arc<dyn Store>) {
    let entry = |n: usize| NewAuditEntry {
        actor: "customer:c1".into(),
        action: "order.created".into(),
        subject: format!("instance:i{n}"),
        detail: json!({"n": n, "offering": "small", "z": [1, 2], "a": {"y": 1, "b": 2}}),
    };
    let first = s.append_audit(entry(0), T0).await.unwrap();
    assert_eq!((first.seq, first.prev_hash.as_str()), (1, crate::audit::GENESIS));
    let second = s.append_audit(entry(1), T0 + 1).await.unwrap();
    assert_eq!(
        second.prev_hash, first.hash,
        "audit: each entry chains to the one before"
    );
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                s.append_audit(entry(100 + t * 10 + n), T0 + 2).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = s.verify_audit().await.unwrap().expect("audit: the chain checks out");
    assert_eq!(v.entries, 82);
    let page = s.audit_page(80, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(v.head, page[1].hash, "audit: the head is the last entry's hash");
    assert!(matches!(
        s.append_audit(
            NewAuditEntry {
                actor: String::new(),
                ..entry(0)
            },
            T0
        )
        .await,
        Err(StoreError::Invalid { field: "actor", .. })
    ));
}

pub async fn roundtrip_and_validation(s: &dyn Store, tag: &str) {
    let p = format!("{tag}-rt");
    let a = s.enqueue(op(&p, "i1", "provision"), T0).await.unwrap();
    let b = s.operation(&a.id).await.unwrap();
    assert_eq!(a, b, "store: an operation reads back as written");
    assert_eq!(b.status, OpStatus::Queued);
    assert_eq!(b.payload, json!({"kind": "provision", "instance": "i1"}));
    assert_eq!((b.generation, b.lease_holder.as_deref()), (0, None));
    assert!(matches!(s.operation("no-such-op").await, Err(StoreError::NotFound(_))));
    let mut bad = op(&p, "", "start");
    bad.instance_id = String::new();
    assert!(matches!(
        s.enqueue(bad, T0).await,
        Err(StoreError::Invalid {
            field: "instance_id",
            ..
        })
    ));
    assert!(matches!(
        s.claim(&p, "a", 0, T0).await,
        Err(StoreError::Invalid { field: "ttl_ms", .. })
    ));
    // Drain it so later checks on this provider start clean.
    let (_, l) = s.claim(&p, "agent", TTL, T0).await.unwrap().unwrap();
    s.finish(&l, Outcome::Succeeded(json!({"vm_id": "100"})), T0)
        .await
        .unwrap();
    let done = s.operation(&a.id).await.unwrap();
    assert_eq!(done.status, OpStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"vm_id": "100"})));
    assert_eq!(done.lease_holder, None);
}

pub async fn claims_follow_queue_order_and_instances_run_one_at_a_time(s: &dyn Store, tag: &str) {
    let p = format!("{tag}-order");
    let x1 = s.enqueue(op(&p, "x", "provision"), T0).await.unwrap();
    let x2 = s.enqueue(op(&p, "x", "start"), T0 + 1).await.unwrap();
    let y1 = s.enqueue(op(&p, "y", "provision"), T0 + 2).await.unwrap();
    s.enqueue(op(&format!("{p}-other"), "z", "provision"), T0)
        .await
        .unwrap();

    let (a, la) = s.claim(&p, "agent-a", TTL, T0 + 10).await.unwrap().unwrap();
    assert_eq!(a.id, x1.id, "store: the oldest claimable operation comes first");
    assert_eq!((a.status, a.generation, la.generation), (OpStatus::Running, 1, 1));
    let (b, lb) = s.claim(&p, "agent-b", TTL, T0 + 10).await.unwrap().unwrap();
    assert_eq!(
        b.id, y1.id,
        "store: x's second operation waits while its first runs; y's runs meanwhile"
    );
    assert!(
        s.claim(&p, "agent-c", TTL, T0 + 10).await.unwrap().is_none(),
        "store: nothing else is claimable (x2 waits for x1; other providers' work is not ours)"
    );
    s.finish(&la, Outcome::Failed("clone failed".into()), T0 + 20)
        .await
        .unwrap();
    let (c, lc) = s.claim(&p, "agent-c", TTL, T0 + 21).await.unwrap().unwrap();
    assert_eq!(c.id, x2.id, "store: x's next operation once the first ended");
    assert_eq!(
        s.operation(&x1.id).await.unwrap().error.as_deref(),
        Some("clone failed")
    );
    s.finish(&lb, Outcome::Succeeded(json!({})), T0 + 22).await.unwrap();
    s.finish(&lc, Outcome::Succeeded(json!({})), T0 + 22).await.unwrap();
}

pub async fn expired_leases_return_the_work_and_late_reports_are_refused(s: &dyn Store, tag: &str) {
    let p = format!("{tag}-lease");
    let o = s.enqueue(op(&p, "i", "provision"), T0).await.unwrap();
    let (_, old) = s.claim(&p, "agent-a", TTL, T0).await.unwrap().unwrap();
    let renewed = s.renew(&old, TTL, T0 + 20_000).await.unwrap();
    assert_eq!(renewed.expires_at, T0 + 50_000, "store: renewing extends the lease");
    assert!(
        s.claim(&p, "agent-b", TTL, T0 + 40_000).await.unwrap().is_none(),
        "store: a renewed lease holds"
    );
    // agent-a goes silent; after expiry agent-b gets the work, under a new generation.
    let (again, new) = s.claim(&p, "agent-b", TTL, T0 + 50_001).await.unwrap().unwrap();
    assert_eq!(again.id, o.id);
    assert_eq!(new.generation, 2);
    for (what, res) in [
        ("renew", s.renew(&renewed, TTL, T0 + 50_002).await.map(|_| ())),
        (
            "finish",
            s.finish(&renewed, Outcome::Succeeded(json!({})), T0 + 50_002)
                .await
                .map(|_| ()),
        ),
        ("release", s.release(&renewed, T0 + 50_002).await),
    ] {
        assert_eq!(
            res,
            Err(StoreError::LeaseLost(o.id.clone())),
            "store: a late {what} from the agent that lost its lease is refused"
        );
    }
    // An expired lease that nobody took yet is lost too: reports must come in time.
    let late = Lease {
        expires_at: new.expires_at,
        ..new.clone()
    };
    assert_eq!(
        s.finish(&late, Outcome::Succeeded(json!({})), new.expires_at + 1).await,
        Err(StoreError::LeaseLost(o.id.clone()))
    );
    let (_, newest) = s.claim(&p, "agent-c", TTL, new.expires_at + 2).await.unwrap().unwrap();
    let done = s
        .finish(&newest, Outcome::Succeeded(json!({"ok": true})), new.expires_at + 3)
        .await
        .unwrap();
    assert_eq!((done.status, done.generation), (OpStatus::Succeeded, 3));
    assert_eq!(
        s.finish(&newest, Outcome::Succeeded(json!({})), new.expires_at + 4)
            .await,
        Err(StoreError::LeaseLost(o.id.clone())),
        "store: an operation ends once"
    );
    let ghost = Lease {
        operation_id: "no-such-op".into(),
        ..newest
    };
    assert!(matches!(s.renew(&ghost, TTL, T0).await, Err(StoreError::NotFound(_))));
}

pub async fn release_requeues(s: &dyn Store, tag: &str) {
    let p = format!("{tag}-release");
    let o = s.enqueue(op(&p, "i", "stop"), T0).await.unwrap();
    let (_, l) = s.claim(&p, "agent-a", TTL, T0).await.unwrap().unwrap();
    s.release(&l, T0 + 1).await.unwrap();
    let back = s.operation(&o.id).await.unwrap();
    assert_eq!((back.status, back.lease_holder.as_deref()), (OpStatus::Queued, None));
    let (again, l2) = s.claim(&p, "agent-b", TTL, T0 + 2).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), l2.generation), (o.id.as_str(), 2));
    s.finish(&l2, Outcome::Succeeded(json!({})), T0 + 3).await.unwrap();
}

/// An operator's input is kept for the agent holding the operation, one at a time: a second is
/// refused while the first waits or after it was applied, and accepted after the agent could
/// not apply it; only the lease's holder can take it.
pub async fn operator_inputs_wait_for_the_agent(s: &dyn Store, tag: &str) {
    let p = format!("{tag}-inputs");
    let o = s.enqueue(op(&p, "i", "provision"), T0).await.unwrap();
    let (_, l) = s.claim(&p, "agent-a", TTL, T0).await.unwrap().unwrap();
    assert_eq!(s.input(&o.id).await.unwrap(), None);
    let new = |action: &str| crate::NewInput {
        operation_id: o.id.clone(),
        action: action.into(),
        body: json!({"action": action, "ipv4": "203.0.113.7"}),
        submitted_by: "provider:p".into(),
    };
    let kept = s.submit_input(new("complete"), T0 + 1).await.unwrap();
    assert_eq!(
        (kept.submitted_at, kept.taken_at, kept.body["ipv4"].as_str()),
        (T0 + 1, None, Some("203.0.113.7"))
    );
    assert!(matches!(
        s.submit_input(new("fail"), T0 + 2).await,
        Err(StoreError::Conflict(_))
    ));
    // Another holder, or a stale generation, cannot take it.
    let other = Lease {
        holder: "agent-b".into(),
        ..l.clone()
    };
    assert!(matches!(
        s.take_input(&other, None, T0 + 3).await,
        Err(StoreError::LeaseLost(_))
    ));
    let taken = s.take_input(&l, Some("not pending"), T0 + 3).await.unwrap();
    assert_eq!(
        (taken.taken_at, taken.error.as_deref()),
        (Some(T0 + 3), Some("not pending"))
    );
    assert!(matches!(
        s.take_input(&l, None, T0 + 4).await,
        Err(StoreError::NotFound(_))
    ));
    // Not applied: a new input replaces it; applied: nothing more is accepted.
    s.submit_input(new("cancel"), T0 + 5).await.unwrap();
    assert_eq!(s.input(&o.id).await.unwrap().unwrap().action, "cancel");
    s.take_input(&l, None, T0 + 6).await.unwrap();
    assert!(matches!(
        s.submit_input(new("complete"), T0 + 7).await,
        Err(StoreError::Conflict(_))
    ));
    s.finish(&l, Outcome::Succeeded(json!({})), T0 + 8).await.unwrap();
}

/// Eight claimers race over 20 instances × 5 operations each: every operation is claimed
/// exactly once, and no instance ever has two operations running or runs them out of order.
pub async fn concurrent_claimers_never_share_work(s: Arc<dyn Store>, tag: &str) {
    let p = format!("{tag}-race");
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..5 {
        for i in 0..20 {
            let inst = format!("i{i}");
            let o = s.enqueue(op(&p, &inst, &format!("step{n}")), T0).await.unwrap();
            order.entry(inst).or_default().push(o.id);
        }
    }
    let order = Arc::new(order);
    let done: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (s, p, order, done) = (s.clone(), p.clone(), order.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let holder = format!("claimer-{c}");
            let mut idle = 0;
            while idle < 50 {
                match s.claim(&p, &holder, 600_000, T0 + 1).await.unwrap() {
                    None => {
                        idle += 1;
                        tokio::task::yield_now().await;
                    }
                    Some((o, lease)) => {
                        idle = 0;
                        // The instance's previous operation must have ended before this claim.
                        let mine = &order[&o.instance_id];
                        let at = mine.iter().position(|id| *id == o.id).expect("a queued id");
                        if at > 0 {
                            let prev = s.operation(&mine[at - 1]).await.unwrap();
                            assert_eq!(
                                prev.status,
                                OpStatus::Succeeded,
                                "store: instance {} got an operation while an earlier one had not ended",
                                o.instance_id
                            );
                        }
                        done.lock().unwrap().push((o.instance_id.clone(), o.id.clone()));
                        s.finish(&lease, Outcome::Succeeded(json!({})), T0 + 2).await.unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = done.lock().unwrap().clone();
    assert_eq!(done.len(), 100, "store: every operation was claimed exactly once");
    let ids: HashSet<&String> = done.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 100, "store: no operation was claimed twice");
    for (inst, want) in order.iter() {
        let got: Vec<String> = done
            .iter()
            .filter(|(i, _)| i == inst)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(&got, want, "store: instance {inst}'s operations ran in queue order");
    }
    for id in ids {
        let o = s.operation(id).await.unwrap();
        assert_eq!((o.status, o.generation), (OpStatus::Succeeded, 1));
    }
}

fn public_key(seed: u8) -> String {
    use base64::Engine as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
    base64::engine::general_purpose::STANDARD.encode(key.to_bytes())
}

/// A setup token enrolls one agent, once, before it expires; a refused key does not use it up;
/// a key enrolls once; revoking sticks.
pub async fn enrollment_tokens_are_single_use_and_expire(s: &dyn Store) {
    let p = s.create_provider("Acme Hosting", T0).await.unwrap();
    let t = s.create_enrollment_token(&p.id, 600_000, T0).await.unwrap();
    assert!(t.secret.starts_with(crate::agents::TOKEN_PREFIX));
    assert!(
        !format!("{t:?}").contains(&t.secret),
        "enroll: the secret never shows in Debug"
    );
    assert!(matches!(
        s.enroll_agent(&t.secret, "kvm1", "not-a-key", T0 + 1).await,
        Err(StoreError::Invalid {
            field: "public_key",
            ..
        })
    ));
    let a = s.enroll_agent(&t.secret, "kvm1", &public_key(1), T0 + 2).await.unwrap();
    assert_eq!((a.provider_id.as_str(), a.name.as_str()), (p.id.as_str(), "kvm1"));
    assert_eq!(s.agent(&a.id).await.unwrap(), a);
    assert_eq!(
        s.enroll_agent(&t.secret, "kvm2", &public_key(2), T0 + 3).await,
        Err(StoreError::BadToken),
        "enroll: a token works once"
    );
    let t2 = s.create_enrollment_token(&p.id, 600_000, T0).await.unwrap();
    assert!(
        matches!(
            s.enroll_agent(&t2.secret, "kvm1-again", &public_key(1), T0 + 4).await,
            Err(StoreError::Conflict(_))
        ),
        "enroll: a key enrolls once"
    );
    // The conflict rolled back: t2 still enrolls another key.
    s.enroll_agent(&t2.secret, "kvm2", &public_key(2), T0 + 5)
        .await
        .unwrap();
    let t3 = s.create_enrollment_token(&p.id, 600_000, T0).await.unwrap();
    assert_eq!(
        s.enroll_agent(&t3.secret, "kvm3", &public_key(3), T0 + 600_000).await,
        Err(StoreError::BadToken),
        "enroll: an expired token is refused"
    );
    assert_eq!(
        s.enroll_agent("berth_enroll_made-up", "kvm3", &public_key(3), T0).await,
        Err(StoreError::BadToken)
    );
    assert!(matches!(
        s.create_enrollment_token("no-such-provider", 600_000, T0).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.create_enrollment_token(&p.id, 1, T0).await,
        Err(StoreError::Invalid { field: "ttl", .. })
    ));
    let revoked = s.revoke_agent(&a.id, T0 + 9).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(T0 + 9));
    assert_eq!(s.revoke_agent(&a.id, T0 + 10).await.unwrap().revoked_at, Some(T0 + 9));
}
