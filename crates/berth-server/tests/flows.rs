//! User stories through the real HTTP API: an order becomes a running instance through an agent
//! that claims, reports stages and completes; discovery and admission; leases; idempotency.

mod common;

use std::time::Duration;

use berth_api::wire::*;
use common::*;

#[tokio::test]
async fn an_order_becomes_a_running_instance() {
    let ctx = TestContext::sqlite().await;
    let (pid, provider) = ctx.provider("acme").await;
    let (cid, customer) = ctx.customer("alice").await;
    let agent = ctx.agent(&pid, &provider).await;
    agent.client.heartbeat(&roomy()).await.unwrap();
    agent
        .client
        .report_templates(vec![TemplateReport {
            backend: "pve1".into(),
            id: "9000".into(),
            name: "debian-12".into(),
            format: Some("qcow2".into()),
            disk_gib: Some(2),
        }])
        .await
        .unwrap();
    assert_eq!(provider.provider_templates(&pid).await.unwrap()[0].template.id, "9000");
    assert_eq!(provider.agent_templates(&agent.id).await.unwrap().len(), 1);
    // The auth scheme is case-insensitive (RFC 9110).
    let lower = reqwest::Client::new()
        .get(format!("{}/api/v1/providers", ctx.url))
        .header("authorization", format!("bearer {}", provider.bearer_token().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    let me = agent.client.me().await.unwrap();
    assert!(me.alive && me.heartbeat.unwrap().backends[0].name == "pve1");

    let offering = provider.create_offering(&small_offering()).await.unwrap();
    let found = customer.offerings("cores=2&region=eu-1&labels=ssd=yes").await.unwrap();
    assert_eq!(found.iter().map(|o| &o.id).collect::<Vec<_>>(), vec![&offering.id]);
    assert!(customer.offerings("cores=3").await.unwrap().is_empty());

    // The agent is already long-polling when the order arrives: it gets the work at once.
    let poll = {
        let c = berth_api::client::Client::new(
            &ctx.url,
            berth_api::client::Auth::Signed(berth_api::httpsig::RequestSigner::new(
                agent.key.clone(),
                agent.id.clone(),
            )),
        );
        tokio::spawn(async move { c.claim(Duration::from_secs(50)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let accepted = customer
        .create_order(&order(&offering.id, "web-1"), None)
        .await
        .unwrap();
    let op_id = accepted.operation_id.clone().unwrap();
    let claimed = poll.await.unwrap().unwrap().expect("the long-poll got the order");
    assert!(started.elapsed() < Duration::from_secs(5), "woken, not polled");
    assert_eq!(
        (claimed.operation_id.as_str(), claimed.kind.as_str()),
        (op_id.as_str(), "provision")
    );
    let payload: ProvisionPayload = serde_json::from_value(claimed.payload.clone()).unwrap();
    assert_eq!(payload.instance_id, accepted.instance_id);
    assert_eq!((payload.cores, payload.template.as_deref()), (2, Some("debian-12")));
    assert_eq!(payload.post_provision_commands, vec!["apt-get update".to_owned()]);

    // The seed's endpoint lists the contract while it is being provisioned.
    let hex_key = hex::encode(agent.key.verifying_key().to_bytes());
    let pending = agent.client.pending_provision(&hex_key).await.unwrap();
    assert_eq!(pending[0].contract_id, accepted.instance_id);
    assert_eq!((pending[0].offering.cpu_cores, pending[0].offering.memory_gb), (2, 2.0));
    assert_eq!(provider.pending_provision(&hex_key).await.unwrap().len(), 1);

    let ev = |stage: &str, phase: &str| EventReport {
        stage: stage.into(),
        phase: phase.into(),
        percent: None,
        message: Some(format!("{stage} {phase}")),
    };
    let g = claimed.generation;
    agent
        .client
        .report(
            &op_id,
            g,
            vec![ev("clone_template", "started"), ev("clone_template", "completed")],
        )
        .await
        .unwrap();
    let mid = customer.operation(&op_id).await.unwrap();
    assert_eq!((mid.status.as_str(), mid.stages.len()), ("running", 1));
    assert_eq!(mid.stages[0].status, "completed");
    agent.client.renew(&op_id, g).await.unwrap();
    // Someone follows the event stream meanwhile.
    let sse = tokio::spawn({
        let url = format!("{}/api/v1/operations/{op_id}/events", ctx.url);
        let token = customer_token(&ctx, &cid).await;
        async move {
            let resp = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }
    });
    for s in ["configure_vm", "start_vm", "wait_network"] {
        agent
            .client
            .report(&op_id, g, vec![ev(s, "started"), ev(s, "completed")])
            .await
            .unwrap();
    }
    let result = OpResult {
        vm_id: Some("100".into()),
        hypervisor: Some("pve1".into()),
        ip_address: Some("10.0.0.5".into()),
        ssh_port: Some(22),
        credentials: Some(AGE_CIPHERTEXT.into()),
        ..Default::default()
    };
    // Plaintext wrapped in the armour lines is refused: the server stores only ciphertext.
    let smuggled = OpResult {
        credentials: Some(
            "-----BEGIN AGE ENCRYPTED FILE-----\npassword=hunter2\n-----END AGE ENCRYPTED FILE-----".into(),
        ),
        ..Default::default()
    };
    let e = agent
        .client
        .complete(&op_id, g, Completion::Succeeded(smuggled))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_input"));
    // So is a login user that is not one: it would be pasted as `ssh USER@address`.
    let injected = OpResult {
        login_user: Some("x -oProxyCommand=touch y".into()),
        ..Default::default()
    };
    let e = agent
        .client
        .complete(&op_id, g, Completion::Succeeded(injected))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("outcome.succeeded.login_user"), "{e}");
    let done = agent
        .client
        .complete(&op_id, g, Completion::Succeeded(result))
        .await
        .unwrap();
    assert_eq!((done.status.as_str(), done.percent), ("succeeded", 100));

    let waited = customer.wait_operation(&op_id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(waited.stages.len(), 4);
    assert_eq!(waited.result.unwrap().vm_id.as_deref(), Some("100"));
    let inst = customer.instance(&accepted.instance_id).await.unwrap();
    assert_eq!(inst.status, "running");
    assert_eq!(
        (
            inst.vm_id.as_deref(),
            inst.hypervisor.as_deref(),
            inst.ip_address.as_deref(),
            inst.agent_id.as_deref()
        ),
        (Some("100"), Some("pve1"), Some("10.0.0.5"), Some(agent.id.as_str()))
    );
    assert!(inst.credentials.unwrap().starts_with("-----BEGIN AGE"));
    assert!(agent.client.pending_provision(&hex_key).await.unwrap().is_empty());

    let stream = tokio::time::timeout(Duration::from_secs(10), sse)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stream.contains("event: stage") && stream.contains("event: done"),
        "{stream}"
    );
    assert!(
        stream.contains("wait_network") && stream.contains("\"succeeded\""),
        "{stream}"
    );

    // Actions: stop, start, reconfigure, terminate, each an operation run in order.
    let stop = customer.instance_action(&inst.id, "stop").await.unwrap();
    let reconf = customer
        .reconfigure(
            &inst.id,
            &Reconfigure {
                cores: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c1 = agent.client.claim(NO_WAIT).await.unwrap().unwrap();
    assert_eq!(c1.operation_id, stop.operation_id.clone().unwrap());
    assert!(
        agent.client.claim(NO_WAIT).await.unwrap().is_none(),
        "one operation per instance at a time"
    );
    agent
        .client
        .complete(
            &c1.operation_id,
            c1.generation,
            Completion::Succeeded(OpResult::default()),
        )
        .await
        .unwrap();
    assert_eq!(customer.instance(&inst.id).await.unwrap().status, "stopped");
    let again = customer.instance_action(&inst.id, "stop").await.unwrap();
    assert_eq!(again.operation_id, None, "already stopped: done, nothing queued");
    let c2 = agent.client.claim(NO_WAIT).await.unwrap().unwrap();
    assert_eq!(
        (c2.operation_id.as_str(), c2.payload["cores"].as_u64()),
        (reconf.operation_id.as_deref().unwrap(), Some(4))
    );
    agent
        .client
        .complete(
            &c2.operation_id,
            c2.generation,
            Completion::Succeeded(OpResult::default()),
        )
        .await
        .unwrap();
    assert_eq!(customer.instance(&inst.id).await.unwrap().cores, 4);
    // Growth beyond the hosts' room, or beyond any machine, is refused before anything is queued.
    let e = customer
        .reconfigure(
            &inst.id,
            &Reconfigure {
                cores: Some(100),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("no_capacity"));
    let e = customer
        .reconfigure(
            &inst.id,
            &Reconfigure {
                memory_mib: Some(u64::MAX),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_input"));
    // A backend that cannot change sizes (as the agent's heartbeat says) is refused up front.
    let mut fixed = roomy();
    fixed.backends[0].reconfigure = Some(false);
    agent.client.heartbeat(&fixed).await.unwrap();
    let e = customer
        .reconfigure(
            &inst.id,
            &Reconfigure {
                cores: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("reconfigure_unsupported"), "{e}");
    agent.client.heartbeat(&roomy()).await.unwrap();
    // Disks only grow: valid input, but not for this machine.
    let e = customer
        .reconfigure(
            &inst.id,
            &Reconfigure {
                disk_gib: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("disk_shrink"), "{e}");
    let err = customer.instance_action(&inst.id, "reboot").await.unwrap_err();
    assert_eq!(err.code(), Some("wrong_status"), "reboot needs a running instance");
    let term = customer.instance_action(&inst.id, "terminate").await.unwrap();
    let c3 = agent.client.claim(NO_WAIT).await.unwrap().unwrap();
    assert_eq!(customer.instance(&inst.id).await.unwrap().status, "terminating");
    agent
        .client
        .complete(
            &c3.operation_id,
            c3.generation,
            Completion::Succeeded(OpResult::default()),
        )
        .await
        .unwrap();
    assert_eq!(c3.operation_id, term.operation_id.unwrap());
    assert_eq!(customer.instance(&inst.id).await.unwrap().status, "terminated");
    let again = customer.instance_action(&inst.id, "terminate").await.unwrap();
    assert_eq!(again.operation_id, None, "already terminated: done, nothing queued");
    // With no room left anywhere, an action the status forbids still says so (not no_capacity).
    let mut full = roomy();
    full.capacity.cores_free = 0;
    full.capacity.memory_mib_free = 0;
    agent.client.heartbeat(&full).await.unwrap();
    let e = customer.instance_action(&inst.id, "provision").await.unwrap_err();
    assert_eq!(e.code(), Some("wrong_status"), "{e}");

    // Everything is in the audit log, and the chain verifies.
    let audit = ctx.operator.audit(0, 1000).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "provider.created",
        "agent.enrolled",
        "offering.created",
        "order.created",
        "operation.claimed",
        "operation.succeeded",
        "instance.terminate",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(ctx.store.verify_audit().await.unwrap().is_ok());
    ctx.server.shutdown().await.unwrap();
}

async fn customer_token(ctx: &TestContext, cid: &str) -> String {
    ctx.store
        .create_api_token(berth_store::Role::Customer, cid, "sse", berth_server::now_ms())
        .await
        .unwrap()
        .secret
}

#[tokio::test]
async fn discovery_and_orders_need_a_live_agent_with_room() {
    let ctx = TestContext::sqlite().await;
    let (pid, provider) = ctx.provider("acme").await;
    let (_, customer) = ctx.customer("bob").await;
    let offering = provider.create_offering(&small_offering()).await.unwrap();
    // No agent yet: nothing to discover, orders refused (retryable), nothing created.
    assert!(customer.offerings("").await.unwrap().is_empty());
    let e = customer
        .create_order(&order(&offering.id, "a"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("no_capacity"));
    assert!(customer.instances().await.unwrap().is_empty());
    // An order that does not provision yet is recorded, and provisioned later.
    let later = customer
        .create_order(
            &CreateOrder {
                provision: false,
                ..order(&offering.id, "later")
            },
            None,
        )
        .await
        .unwrap();
    assert!(later.operation_id.is_none());
    assert_eq!(customer.instance(&later.instance_id).await.unwrap().status, "pending");

    let agent = ctx.agent(&pid, &provider).await;
    // The provider is told why it cannot be ordered, agent by agent; a customer is not.
    let why = |v: OfferingView| {
        let a = v.availability.expect("the provider sees availability");
        (a.orderable, a.agents[0].reason.clone().unwrap_or_default())
    };
    let (orderable, reason) = why(provider.offering(&offering.id).await.unwrap());
    assert!(!orderable && reason.contains("has not sent a heartbeat"), "{reason}");
    assert!(customer.offering(&offering.id).await.unwrap().availability.is_none());
    // Nearly full: 64 cores × 90% − 56 used = 1.6 < 2.
    let mut hb = roomy();
    hb.capacity.cores_free = 8;
    agent.client.heartbeat(&hb).await.unwrap();
    assert!(customer.offerings("").await.unwrap().is_empty());
    let (orderable, reason) = why(provider.offering(&offering.id).await.unwrap());
    assert!(!orderable, "{reason}");
    assert!(
        reason.contains("no room: 2 cores needed, 1 left under the 90% threshold"),
        "{reason}"
    );
    agent.client.heartbeat(&roomy()).await.unwrap();
    assert_eq!(customer.offerings("").await.unwrap().len(), 1);
    let a = provider.offering(&offering.id).await.unwrap().availability.unwrap();
    assert!(a.orderable && a.agents[0].reason.is_none(), "{a:?}");
    let p = customer.instance_action(&later.instance_id, "provision").await.unwrap();
    let c = agent.client.claim(NO_WAIT).await.unwrap().unwrap();
    assert_eq!(c.operation_id, p.operation_id.unwrap());
    assert_eq!(c.payload["name"], "later");
    // A provider sees its own offerings whatever the capacity; a withdrawn one is gone.
    provider.withdraw_offering(&offering.id).await.unwrap();
    assert!(customer.offerings("").await.unwrap().is_empty());
    let e = customer
        .create_order(&order(&offering.id, "b"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("offering_withdrawn"));
    let e = customer
        .create_order(&order("no-such-offering", "c"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("not_found"));
}

#[tokio::test]
async fn stale_heartbeats_count_as_gone() {
    let ctx = TestContext::sqlite_with(|c| c.agents.heartbeat_ttl_seconds = 5).await;
    let (pid, provider) = ctx.provider("acme").await;
    let (_, customer) = ctx.customer("bob").await;
    provider.create_offering(&small_offering()).await.unwrap();
    let agent = ctx.agent(&pid, &provider).await;
    // Backdate the heartbeat past the TTL, as if the agent went silent.
    ctx.store
        .record_heartbeat(
            &agent.id,
            serde_json::to_value(roomy()).unwrap(),
            berth_server::now_ms() - 6_000,
        )
        .await
        .unwrap();
    assert!(customer.offerings("").await.unwrap().is_empty());
    assert!(!provider.agent(&agent.id).await.unwrap().alive);
    agent.client.heartbeat(&roomy()).await.unwrap();
    assert_eq!(customer.offerings("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_lost_lease_refuses_late_reports_and_the_work_returns() {
    let ctx = TestContext::sqlite_with(|c| c.agents.lease_ttl_seconds = 5).await;
    let (pid, provider) = ctx.provider("acme").await;
    let (_, customer) = ctx.customer("carol").await;
    let a1 = ctx.agent(&pid, &provider).await;
    let a2 = ctx.agent(&pid, &provider).await;
    a1.client.heartbeat(&roomy()).await.unwrap();
    let offering = provider.create_offering(&small_offering()).await.unwrap();
    let acc = customer.create_order(&order(&offering.id, "x"), None).await.unwrap();
    let c1 = a1.client.claim(NO_WAIT).await.unwrap().unwrap();
    // Another agent presenting the same generation does not hold the lease.
    let e = a2.client.renew(&c1.operation_id, c1.generation).await.unwrap_err();
    assert_eq!(e.code(), Some("lease_lost"));
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let c2 = a2
        .client
        .claim(NO_WAIT)
        .await
        .unwrap()
        .expect("the expired lease returned the work");
    assert_eq!(c2.operation_id, c1.operation_id);
    assert!(c2.generation > c1.generation);
    let late = a1
        .client
        .complete(
            &c1.operation_id,
            c1.generation,
            Completion::Succeeded(OpResult::default()),
        )
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some("lease_lost"));
    let e = a1
        .client
        .report(
            &c1.operation_id,
            c1.generation,
            vec![EventReport {
                stage: "start_vm".into(),
                phase: "started".into(),
                percent: None,
                message: None,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("lease_lost"));
    let timed_out = Completion::Failed(OpError {
        code: "timeout".into(),
        message: "clone timed out".into(),
    });
    let failed = a2
        .client
        .complete(&c2.operation_id, c2.generation, timed_out.clone())
        .await
        .unwrap();
    assert_eq!(failed.error.unwrap().code, "timeout");
    // A retried completion (its answer was lost) gets the recorded result, not lease_lost.
    let again = a2
        .client
        .complete(&c2.operation_id, c2.generation, timed_out)
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.status.as_str()),
        (c2.operation_id.as_str(), "failed")
    );
    let inst = customer.instance(&acc.instance_id).await.unwrap();
    assert_eq!(
        (inst.status.as_str(), inst.last_error.unwrap().message.as_str()),
        ("failed", "clone timed out")
    );
    // A release gives the work back at once.
    let again = customer.instance_action(&inst.id, "provision").await.unwrap();
    let c3 = a1.client.claim(NO_WAIT).await.unwrap().unwrap();
    a1.client.release(&c3.operation_id, c3.generation).await.unwrap();
    let c4 = a2.client.claim(NO_WAIT).await.unwrap().unwrap();
    assert_eq!(c4.operation_id, again.operation_id.unwrap());
}

#[tokio::test]
async fn idempotency_keys_make_retries_safe() {
    let ctx = TestContext::sqlite().await;
    let (pid, provider) = ctx.provider("acme").await;
    let (_, customer) = ctx.customer("dave").await;
    let agent = ctx.agent(&pid, &provider).await;
    agent.client.heartbeat(&roomy()).await.unwrap();
    let offering = provider.create_offering(&small_offering()).await.unwrap();
    let o = order(&offering.id, "once");
    let first = customer.create_order(&o, Some("key-1")).await.unwrap();
    let retry = customer.create_order(&o, Some("key-1")).await.unwrap();
    assert_eq!(first, retry);
    assert_eq!(customer.instances().await.unwrap().len(), 1);
    let other = customer
        .create_order(&order(&offering.id, "other"), Some("key-1"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Some("invalid_input"));
    // A failed request frees its key.
    let bad = CreateOrder {
        name: "bad name!".into(),
        ..o.clone()
    };
    assert_eq!(
        customer.create_order(&bad, Some("key-2")).await.unwrap_err().code(),
        Some("invalid_input")
    );
    let fixed = customer
        .create_order(
            &CreateOrder {
                name: "good".into(),
                ..o
            },
            Some("key-2"),
        )
        .await
        .unwrap();
    assert_ne!(fixed.instance_id, first.instance_id);
}
