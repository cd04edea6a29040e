//! The catalogue half of the store suite: tokens, agent reports, offerings, instances and their
//! operations (status fencing, a finish that updates the instance atomically), events under a
//! lease, nonces and idempotency keys.

use serde_json::json;

use super::{T0, TTL, audit};
use crate::*;

pub async fn catalog(s: &dyn Store, tag: &str) {
    // Tokens: only the hash is kept; a principal comes back for the secret alone.
    let p = s.create_provider(&format!("{tag}-p"), T0).await.unwrap();
    let c = s.create_customer("cust", T0).await.unwrap();
    let t = s.create_api_token(Role::Customer, &c.id, "t", T0).await.unwrap();
    assert!(t.secret.starts_with(control::API_TOKEN_PREFIX));
    assert_eq!(
        s.token_principal(&t.secret, T0).await.unwrap(),
        Some((Role::Customer, c.id.clone()))
    );
    assert_eq!(
        s.token_principal("berth_tok_nope", T0).await.unwrap(),
        None,
        "store: unknown tokens map to no one"
    );
    assert!(!format!("{t:?}").contains(&t.secret));
    sessions(s, &t.secret, &c.id).await;
    assert_eq!(s.customer(&c.id).await.unwrap().name, "cust");
    assert!(s.customers(&Page::all()).await.unwrap().iter().any(|x| x.id == c.id));
    assert!(matches!(s.customer("nope").await, Err(StoreError::NotFound(_))));
    placements(s, tag).await;
    // Saved keys: per customer; another customer's key cannot be removed.
    let other = s.create_customer("other", T0).await.unwrap();
    let k = s
        .add_customer_key(&c.id, "ssh", "laptop", "ssh-ed25519 AAAA x", T0)
        .await
        .unwrap();
    s.add_customer_key(&c.id, "age", "mine", "age1abc", T0 + 1)
        .await
        .unwrap();
    let keys = s.customer_keys(&c.id, &Page::all()).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>(), ["ssh", "age"]);
    assert!(s.customer_keys(&other.id, &Page::all()).await.unwrap().is_empty());
    assert!(matches!(
        s.delete_customer_key(&other.id, &k.id).await,
        Err(StoreError::NotFound(_))
    ));
    s.delete_customer_key(&c.id, &k.id).await.unwrap();
    assert_eq!(s.customer_keys(&c.id, &Page::all()).await.unwrap().len(), 1);

    // Agent reports: the last heartbeat wins; templates are replaced as a whole.
    let et = s.create_enrollment_token(&p.id, 60_000, T0).await.unwrap();
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ed25519_dalek::SigningKey::from_bytes(&[tag.len() as u8 + 40; 32])
            .verifying_key()
            .to_bytes(),
    );
    let a = s.enroll_agent(&et.secret, "a", &key, T0).await.unwrap();
    assert_eq!(s.agent_by_key(&key).await.unwrap().id, a.id);
    s.record_heartbeat(&a.id, json!({"n": 1}), T0).await.unwrap();
    s.record_heartbeat(&a.id, json!({"n": 2}), T0 + 1).await.unwrap();
    let st = s.agent_statuses(Some(&p.id)).await.unwrap();
    assert_eq!(
        (st.len(), st[0].report["n"].as_i64(), st[0].seen_at),
        (1, Some(2), T0 + 1)
    );
    s.set_templates(
        &a.id,
        vec![("b".into(), "1".into(), json!({})), ("b".into(), "2".into(), json!({}))],
        T0,
    )
    .await
    .unwrap();
    s.set_templates(&a.id, vec![("b".into(), "3".into(), json!({"name": "x"}))], T0)
        .await
        .unwrap();
    let tpl = s.templates(None, Some(&p.id)).await.unwrap();
    assert_eq!(
        tpl.iter().map(|t| t.template_id.as_str()).collect::<Vec<_>>(),
        vec!["3"],
        "store: templates replaced"
    );

    // Offerings and instances; the first operation is queued with the instance.
    let o = s
        .create_offering(&p.id, json!({"name": "small"}), None, audit("offering.created"), T0)
        .await
        .unwrap();
    assert!(matches!(
        s.create_offering("nope", json!({}), None, audit("x"), T0).await,
        Err(StoreError::NotFound(_))
    ));
    // Names are unique per owner: providers among providers, offerings on sale per provider.
    assert!(
        matches!(
            s.create_provider(&format!("{tag}-p"), T0).await,
            Err(StoreError::NameTaken { what: "provider", .. })
        ),
        "store: a provider name is taken once"
    );
    assert!(
        matches!(
            s.create_offering(&p.id, json!({"name": "small"}), None, audit("x"), T0)
                .await,
            Err(StoreError::NameTaken { what: "offering", .. })
        ),
        "store: an offering name is taken once per provider"
    );
    let other = s
        .create_offering(&p.id, json!({"name": "other"}), None, audit("offering.created"), T0)
        .await
        .unwrap();
    assert!(matches!(
        s.update_offering(&other.id, json!({"name": "small"}), audit("offering.updated"), T0)
            .await,
        Err(StoreError::NameTaken { .. })
    ));
    let renamed = s
        .update_offering(
            &other.id,
            json!({"name": "medium", "cores": 2}),
            audit("offering.updated"),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(renamed.body["cores"], 2, "store: update replaces the body");
    s.withdraw_offering(&other.id, audit("offering.withdrawn"), T0)
        .await
        .unwrap();
    assert!(matches!(
        s.update_offering(&other.id, json!({"name": "medium"}), audit("x"), T0)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.update_offering("nope", json!({"name": "x"}), audit("x"), T0).await,
        Err(StoreError::NotFound(_))
    ));
    // A withdrawn offering's name is free again; it is still listed with `withdrawn`.
    let again = s
        .create_offering(&p.id, json!({"name": "medium"}), None, audit("offering.created"), T0)
        .await
        .unwrap();
    s.withdraw_offering(&again.id, audit("offering.withdrawn"), T0)
        .await
        .unwrap();
    let all = s.offerings(Some(&p.id), true, &Page::all()).await.unwrap();
    assert_eq!(all.len(), 3, "store: withdrawn offerings are listed when asked");
    let new = NewInstance {
        provider_id: p.id.clone(),
        customer_id: Some(c.id.clone()),
        offering_id: Some(o.id.clone()),
        agent_id: None,
        status: "provisioning".into(),
        request: json!({"name": "web"}),
        quota: None,
    };
    let (i, op) = s
        .create_instance(new, Some(("provision".into(), json!({}))), audit("order.created"), T0)
        .await
        .unwrap();
    let op = op.unwrap();
    assert_eq!(
        (op.instance_id.as_str(), op.payload["instance_id"].as_str()),
        (i.id.as_str(), Some(i.id.as_str()))
    );
    // An action the status does not allow is refused and queues nothing.
    let stop = |allowed: &[&str]| InstanceAction {
        instance_id: i.id.clone(),
        allowed: allowed.iter().map(|s| s.to_string()).collect(),
        new_status: None,
        kind: "stop".into(),
        payload: json!({}),
        audit: audit("instance.stop"),
    };
    assert!(matches!(
        s.act_on_instance(stop(&["running"]), T0).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.instance_operations(&i.id, &Page::all()).await.unwrap().len(), 1);

    // Events need the lease; a terminate queued meanwhile is not overwritten by the provision.
    let (claimed, lease) = s.claim(&p.id, &a.id, TTL, T0 + 1).await.unwrap().unwrap();
    assert_eq!(claimed.id, op.id);
    let ev = s
        .add_events(&lease, vec![json!({"a": 1}), json!({"a": 2})], T0 + 2)
        .await
        .unwrap();
    assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    s.add_events(&lease, vec![json!({"a": 3})], T0 + 3).await.unwrap();
    assert_eq!(s.events(&op.id, 1).await.unwrap().len(), 2);
    let stale = Lease {
        generation: lease.generation - 1,
        ..lease.clone()
    };
    assert!(matches!(
        s.add_events(&stale, vec![json!({})], T0 + 3).await,
        Err(StoreError::LeaseLost(_))
    ));
    let term = InstanceAction {
        kind: "terminate".into(),
        new_status: Some("terminating".into()),
        ..stop(&["provisioning"])
    };
    s.act_on_instance(term, T0 + 4).await.unwrap();
    let change = InstanceChange {
        status: Some("running".into()),
        state: json!({"vm_id": "100"}),
        request: None,
        keep_status_if: Some("terminating".into()),
    };
    s.complete(
        &lease,
        Outcome::Succeeded(json!({})),
        Some(change),
        Some(audit("operation.succeeded")),
        T0 + 5,
    )
    .await
    .unwrap();
    let after = s.instance(&i.id).await.unwrap();
    assert_eq!(
        (after.status.as_str(), after.state["vm_id"].as_str()),
        ("terminating", Some("100"))
    );
    let listed = s
        .instances(
            &InstanceFilter {
                customer_id: Some(c.id.clone()),
                ..Default::default()
            },
            &Page::all(),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        s.instances(
            &InstanceFilter {
                customer_id: Some("other".into()),
                ..Default::default()
            },
            &Page::all()
        )
        .await
        .unwrap()
        .is_empty()
    );
    s.withdraw_offering(&o.id, audit("offering.withdrawn"), T0 + 6)
        .await
        .unwrap();
    assert!(s.offerings(Some(&p.id), false, &Page::all()).await.unwrap().is_empty());

    // Nonces: once each; idempotency keys: replay, mismatch, freed on failure.
    assert!(
        s.nonce_first_use(&a.id, &format!("{tag}-n"), T0 + 300_000, T0)
            .await
            .unwrap()
    );
    assert!(
        !s.nonce_first_use(&a.id, &format!("{tag}-n"), T0 + 300_000, T0)
            .await
            .unwrap()
    );
    let scope = format!("{tag}-scope");
    assert_eq!(
        s.idempotency_begin(&scope, "k", "f1", T0).await.unwrap(),
        Idempotency::New
    );
    assert_eq!(
        s.idempotency_begin(&scope, "k", "f1", T0).await.unwrap(),
        Idempotency::InProgress
    );
    s.idempotency_end(&scope, "k", Some((202, json!({"x": 1}))))
        .await
        .unwrap();
    assert_eq!(
        s.idempotency_begin(&scope, "k", "f1", T0).await.unwrap(),
        Idempotency::Done(202, json!({"x": 1}))
    );
    assert_eq!(
        s.idempotency_begin(&scope, "k", "f2", T0).await.unwrap(),
        Idempotency::Mismatch
    );
    assert_eq!(
        s.idempotency_begin(&scope, "k2", "f", T0).await.unwrap(),
        Idempotency::New
    );
    s.idempotency_end(&scope, "k2", None).await.unwrap();
    assert_eq!(
        s.idempotency_begin(&scope, "k2", "g", T0).await.unwrap(),
        Idempotency::New
    );
}

/// Browser sessions: made only from a live token, speak for its principal until they expire or
/// are ended; the secret is not the token and is not stored.
async fn sessions(s: &dyn Store, token: &str, customer: &str) {
    assert!(
        s.create_session("berth_tok_nope", 60_000, T0).await.unwrap().is_none(),
        "store: an unknown token makes no session"
    );
    let a = s.create_session(token, 60_000, T0).await.unwrap().unwrap();
    let b = s.create_session(token, 1_000, T0).await.unwrap().unwrap();
    assert_ne!(a.secret, b.secret);
    assert_ne!(a.secret, token);
    assert!(
        !format!("{a:?}").contains(&a.secret),
        "store: a session's Debug hides its secret"
    );
    assert_eq!(
        (a.role, a.subject.as_str(), a.expires_at),
        (Role::Customer, customer, T0 + 60_000)
    );
    let who = Some((Role::Customer, customer.to_owned()));
    assert_eq!(s.session_principal(&a.secret, T0 + 1).await.unwrap(), who);
    assert_eq!(
        s.session_principal(&b.secret, T0 + 1_000).await.unwrap(),
        None,
        "store: sessions expire"
    );
    assert_eq!(
        s.session_principal(token, T0).await.unwrap(),
        None,
        "store: a token is no session"
    );
    s.end_session(&a.secret).await.unwrap();
    assert_eq!(
        s.session_principal(&a.secret, T0 + 1).await.unwrap(),
        None,
        "store: sign-out ends it"
    );
    s.end_session(&a.secret).await.unwrap();
    // Making another one drops the expired ones on the way.
    let c = s.create_session(token, 60_000, T0 + 2_000).await.unwrap().unwrap();
    assert_eq!(s.session_principal(&c.secret, T0 + 2_001).await.unwrap(), who);
}

/// An instance placed on a chosen agent: no offering, no customer, and every operation of it
/// (the first and later actions) claimable only by that agent, which is woken for it.
async fn placements(s: &dyn Store, tag: &str) {
    let p = s.create_provider(&format!("{tag}-place"), T0).await.unwrap();
    let mut agents = Vec::new();
    for n in 0..2u8 {
        let et = s.create_enrollment_token(&p.id, 60_000, T0).await.unwrap();
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            ed25519_dalek::SigningKey::from_bytes(&[tag.len() as u8 + 90 + n; 32])
                .verifying_key()
                .to_bytes(),
        );
        agents.push(s.enroll_agent(&et.secret, "a", &key, T0).await.unwrap().id);
    }
    let (mine, other) = (&agents[0], &agents[1]);
    let new = NewInstance {
        provider_id: p.id.clone(),
        customer_id: None,
        offering_id: None,
        agent_id: Some(mine.clone()),
        status: "provisioning".into(),
        request: json!({"name": "placed"}),
        quota: None,
    };
    let (i, op) = s
        .create_instance(
            new,
            Some(("provision".into(), json!({}))),
            audit("instance.created"),
            T0,
        )
        .await
        .unwrap();
    let op = op.unwrap();
    assert_eq!((i.customer_id.as_deref(), i.offering_id.as_deref()), (None, None));
    assert_eq!(i.agent_id.as_ref(), Some(mine));
    assert_eq!(op.agent_id.as_ref(), Some(mine));
    assert!(
        s.claim(&p.id, other, TTL, T0 + 1).await.unwrap().is_none(),
        "store: work pinned to one agent is not another's"
    );
    let (claimed, lease) = s.claim(&p.id, mine, TTL, T0 + 2).await.unwrap().unwrap();
    assert_eq!(claimed.id, op.id);
    s.complete(&lease, Outcome::Succeeded(json!({})), None, None, T0 + 3)
        .await
        .unwrap();
    // A later action stays with the agent, and wakes its long-poll (the recheck is an hour:
    // only the wake-up can deliver it in time).
    let stop = InstanceAction {
        instance_id: i.id.clone(),
        allowed: vec!["provisioning".into()],
        new_status: None,
        kind: "stop".into(),
        payload: json!({}),
        audit: audit("instance.stop"),
    };
    let hour = std::time::Duration::from_secs(3600);
    let (waited, later) = tokio::join!(
        s.claim_wait(&p.id, mine, TTL, std::time::Duration::from_secs(60), hour, &|| T0 + 5),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            s.act_on_instance(stop, T0 + 4).await.unwrap()
        }
    );
    assert_eq!(
        later.agent_id.as_ref(),
        Some(mine),
        "store: later actions stay with the agent"
    );
    assert_eq!(
        waited.unwrap().unwrap().0.id,
        later.id,
        "store: the pinned agent is woken"
    );
}
