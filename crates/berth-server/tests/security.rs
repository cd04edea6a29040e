//! Security user stories through the real HTTP API: signed agent requests that are tampered
//! with, replayed, stale or forged; input refused with an RFC 7807 problem naming the field; and
//! secrets kept out of the audit log and out of Debug output. Who may call what: `authz.rs`.

mod common;
mod support;

use std::time::Duration;

use base64::Engine as _;
use berth_api::client::{Auth, Client};
use berth_api::httpsig::RequestSigner;
use common::*;
use ed25519_dalek::SigningKey;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use support::*;

/// An agent id nobody has.
const NOBODY: &str = "3f1c2a8e-0000-4000-8000-000000000001";

#[tokio::test]
async fn agent_signatures_cannot_be_tampered_with_replayed_or_forged() {
    let w = World::build().await;
    let url = w.ctx.url.as_str();
    let (key, id) = (&w.agent_a.key, w.agent_a.id.as_str());
    let path = "/api/v1/agent/heartbeat";
    let hb = |cores_free: u64| {
        let mut h = roomy();
        h.capacity.cores_free = cores_free;
        serde_json::to_vec(&h).unwrap()
    };
    let sign = |body: &[u8], created: i64, nonce: Option<&str>| signed(url, key, id, &POST, path, body, created, nonce);
    let post = |headers: HeaderMap, body: Vec<u8>| exchange(url, POST, path, json_type(headers), body);

    // Unsigned and without a token: anonymous.
    let a = post(HeaderMap::new(), hb(60)).await;
    a.assert_problem(401, "unauthenticated", None);
    assert!(a.headers.contains_key(WWW_AUTHENTICATE));
    assert_eq!(post(sign(&hb(60), now_secs(), None), hb(60)).await.status, 204);
    let mut h = sign(&hb(60), now_secs(), None);
    h.remove("signature");
    post(h, hb(60)).await.assert_problem(401, "signature_missing", None);

    // The body changed after signing; then with its digest recomputed too.
    post(sign(&hb(60), now_secs(), None), hb(1))
        .await
        .assert_problem(401, "digest_mismatch", None);
    let mut h = sign(&hb(60), now_secs(), None);
    h.insert(
        "content-digest",
        HeaderValue::try_from(berth_api::digest::content_digest(&hb(1))).unwrap(),
    );
    post(h, hb(1)).await.assert_problem(401, "bad_signature", None);
    let seen = w.client(&w.pa.token).agent(id).await.unwrap().heartbeat.unwrap();
    assert_eq!(seen.capacity.cores_free, 60, "no tampered heartbeat was recorded");

    // A heartbeat from a newer agent, with fields this control plane does not know, is taken.
    let mut newer = serde_json::to_value(roomy()).unwrap();
    newer["uptime_seconds"] = serde_json::json!(12);
    newer["capacity"]["gpus_free"] = serde_json::json!(2);
    newer["capacity"]["cores_free"] = serde_json::json!(59);
    let newer = serde_json::to_vec(&newer).unwrap();
    assert_eq!(post(sign(&newer, now_secs(), None), newer.clone()).await.status, 204);
    let seen = w.client(&w.pa.token).agent(id).await.unwrap();
    assert_eq!(seen.heartbeat.unwrap().capacity.cores_free, 59);
    assert!(seen.alive);

    // The same nonce twice: the second (and a resend of the first) is a replay.
    let now = now_secs();
    let first = sign(&hb(50), now, Some("nonce-once"));
    assert_eq!(post(first.clone(), hb(50)).await.status, 204);
    post(sign(&hb(50), now, Some("nonce-once")), hb(50))
        .await
        .assert_problem(401, "nonce_replayed", None);
    post(first, hb(50)).await.assert_problem(401, "nonce_replayed", None);

    // Outside the clock skew (5 minutes), either way.
    for created in [now_secs() - 600, now_secs() + 600] {
        post(sign(&hb(60), created, None), hb(60))
            .await
            .assert_problem(401, "signature_expired", None);
    }

    // A key nobody enrolled, under its own id or under agent A's.
    let stranger = fresh_key();
    for (keyid, code) in [(NOBODY, "unknown_key"), (id, "bad_signature")] {
        let h = signed(url, &stranger, keyid, &POST, path, &hb(60), now_secs(), None);
        post(h, hb(60)).await.assert_problem(401, code, None);
    }

    // A signature covers the path and the query: it cannot be moved to another request.
    for (method, signed_for, sent_to) in [
        (POST, "/api/v1/agent/claim?wait=0s", "/api/v1/agent/claim?wait=1s"),
        (GET, "/api/v1/agent/me", "/api/v1/agents"),
    ] {
        let h = signed(url, key, id, &method, signed_for, b"", now_secs(), None);
        exchange(url, method, sent_to, h, vec![])
            .await
            .assert_problem(401, "bad_signature", None);
    }

    // A revoked agent is refused like an unknown one.
    let provider_a = w.client(&w.pa.token);
    let doomed = w.ctx.agent(&w.pa.id, &provider_a).await;
    let as_doomed = Who::agent(&doomed);
    assert_eq!(call(url, &as_doomed, GET, "/api/v1/agent/me", None).await.status, 200);
    provider_a.revoke_agent(&doomed.id).await.unwrap();
    call(url, &as_doomed, GET, "/api/v1/agent/me", None)
        .await
        .assert_problem(401, "unknown_key", None);
    let hbv = serde_json::to_value(roomy()).unwrap();
    call(url, &as_doomed, POST, path, Some(&hbv))
        .await
        .assert_problem(401, "unknown_key", None);
}

/// Until the store's occasional sweep (about one call in 64) has deleted a nonce that expired
/// long ago: a sweep of the nonces expired by now has run.
async fn sweep_nonces(store: &dyn berth_store::Store) {
    store.nonce_first_use("sweep", "sentinel", 1, 0).await.unwrap();
    while !store
        .nonce_first_use("sweep", "sentinel", 1, berth_server::now_ms())
        .await
        .unwrap()
    {}
}

#[tokio::test]
async fn a_nonce_is_remembered_for_as_long_as_its_signature_is_accepted() {
    let ctx = TestContext::sqlite().await;
    let (pid, provider) = ctx.provider("acme").await;
    let agent = ctx.agent(&pid, &provider).await;
    let (url, path) = (ctx.url.as_str(), "/api/v1/agent/me");
    for attempt in 0..5 {
        // Early in a second S, a request signed at S − 300 s: the server still accepts it (the
        // skew is 300 s) until S ends. The server sweeps expired nonces now and then meanwhile.
        let ms = berth_server::now_ms();
        tokio::time::sleep(Duration::from_millis((1_020 - ms % 1_000) as u64)).await;
        let s = now_secs();
        let nonce = format!("edge-{attempt}");
        let h = signed(url, &agent.key, &agent.id, &GET, path, b"", s - 300, Some(&nonce));
        let first = exchange(url, GET, path, h.clone(), vec![]).await;
        assert_eq!(first.status, 200, "{first:?}");
        sweep_nonces(ctx.store.as_ref()).await;
        let replay = exchange(url, GET, path, h, vec![]).await;
        if now_secs() != s {
            continue; // the second ended (a slow machine): the replay was merely late
        }
        // The nonce must outlive the last second in which `created` passes the skew check (the
        // server's clock is read in whole seconds), else a sweep then forgets it.
        replay.assert_problem(401, "nonce_replayed", None);
        return;
    }
    panic!("five attempts could not replay within the same second");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_problem_naming_the_field() {
    let w = World::build().await;
    let url = w.ctx.url.as_str();
    let (provider, customer) = (Who::Bearer(w.pa.token.clone()), Who::Bearer(w.ca.token.clone()));
    let agent = Who::agent(&w.agent_a);
    let offering = serde_json::to_value(small_offering()).unwrap();

    for (path, value, field) in [
        ("colour", json!("red"), "colour"),
        ("cores", json!("two"), "cores"),
        ("name", Value::Null, "name"),
        ("price.currency", json!(978), "price.currency"),
        ("price.vat", json!(20), "price.vat"),
        ("price.currency", json!("eur"), "price.currency"),
        ("labels.Not A Key", json!("x"), "labels.Not A Key"),
        (
            "post_provision_commands",
            json!(["ok", " "]),
            "post_provision_commands[1]",
        ),
    ] {
        let body = set(&offering, path, value);
        call(url, &provider, POST, "/api/v1/offerings", Some(&body))
            .await
            .assert_problem(422, "invalid_input", Some(field));
    }
    for (query, field) in [("colour=red", "colour"), ("cores=lots", "cores")] {
        call(url, &customer, GET, &format!("/api/v1/offerings?{query}"), None)
            .await
            .assert_problem(422, "invalid_input", Some(field));
    }
    let huge = set(&offering, "name", json!("x".repeat(100 * 1024)));
    call(url, &provider, POST, "/api/v1/offerings", Some(&huge))
        .await
        .assert_problem(413, "body_too_large", None);

    // JSON, but not said to be.
    let bytes = serde_json::to_vec(&offering).unwrap();
    let bearer = HeaderMap::from_iter([(
        AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {}", w.pa.token)).unwrap(),
    )]);
    let mut text = bearer.clone();
    text.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    for h in [bearer, text] {
        exchange(url, POST, "/api/v1/offerings", h, bytes.clone())
            .await
            .assert_problem(415, "unsupported_media_type", None);
    }

    // Enrollment, signed by `signer` (keyid "enroll") for `key`: a bad setup token; a key
    // enrolled twice (the token stays usable); a key its sender does not hold.
    let path = "/api/v1/agents/enroll";
    let enroll = |token: &str, key: &SigningKey, signer: Option<&SigningKey>| {
        let body = serde_json::to_vec(&json!({"token": token, "name": "edge", "public_key": b64_public(key)})).unwrap();
        let headers = match signer {
            Some(s) => signed(url, s, "enroll", &POST, path, &body, now_secs(), None),
            None => HeaderMap::new(),
        };
        async move { exchange(url, POST, path, json_type(headers), body).await }
    };
    enroll("not-a-setup-token", &fresh_key(), None)
        .await
        .assert_problem(401, "unauthenticated", None);
    let fresh = fresh_key();
    enroll("not-a-setup-token", &fresh, Some(&fresh))
        .await
        .assert_problem(401, "unauthenticated", None);
    let provider_a = w.client(&w.pa.token);
    let setup = provider_a.create_enrollment_token(&w.pa.id, None).await.unwrap().token;
    let mine = enroll(&setup, &w.agent_a.key, None).await;
    mine.assert_problem(401, "unauthenticated", None);
    assert!(
        mine.body["detail"].as_str().unwrap().contains("sign the enrollment"),
        "{mine:?}"
    );
    let stolen = enroll(&setup, &w.agent_a.key, Some(&fresh_key())).await;
    assert!(
        stolen.status == 401,
        "a key the sender cannot sign with is refused: {stolen:?}"
    );
    enroll(&setup, &w.agent_a.key, Some(&w.agent_a.key))
        .await
        .assert_problem(409, "conflict", None);
    let key = fresh_key();
    let a = enroll(&setup, &key, Some(&key)).await;
    assert_eq!(a.status, 201, "{a:?}");
    // A replayed enrollment is refused like any replayed signature.
    let body = serde_json::to_vec(&json!({"token": setup, "name": "edge", "public_key": b64_public(&key)})).unwrap();
    let h = signed(url, &key, "enroll", &POST, path, &body, now_secs(), Some("once"));
    exchange(url, POST, path, json_type(h.clone()), body.clone()).await;
    exchange(url, POST, path, json_type(h), body)
        .await
        .assert_problem(401, "nonce_replayed", None);

    // Orders with keys that are not keys.
    let o = serde_json::to_value(order(&w.offering_a, "v1")).unwrap();
    for (field, value) in [
        ("requester_public_key", "age1notarecipient"),
        ("ssh_public_key", "ssh-rsa not-base64!"),
    ] {
        let body = set(&o, field, json!(value));
        call(url, &customer, POST, "/api/v1/orders", Some(&body))
            .await
            .assert_problem(422, "invalid_input", Some(field));
    }

    // Agent reports: an unknown stage; credentials in the clear.
    let events_path = format!("/api/v1/agent/operations/{}/events", w.op_a);
    let ev = |stage: &str| json!({"stage": stage, "phase": "started"});
    for (events, field) in [
        (vec![ev("format_disk")], "events[0].stage"),
        (vec![ev("clone_template"), ev("mine_coins")], "events[1].stage"),
    ] {
        let body = json!({"generation": w.gen_a, "events": events});
        call(url, &agent, POST, &events_path, Some(&body))
            .await
            .assert_problem(422, "invalid_input", Some(field));
    }
    let plain = json!({"generation": w.gen_a, "outcome": {"succeeded": {"credentials": "root:hunter2"}}});
    let complete = format!("/api/v1/agent/operations/{}/complete", w.op_a);
    call(url, &agent, POST, &complete, Some(&plain)).await.assert_problem(
        422,
        "invalid_input",
        Some("outcome.succeeded.credentials"),
    );
    let op = w.client(&w.ca.token).operation(&w.op_a).await.unwrap();
    assert_eq!(
        (op.status.as_str(), op.events.len()),
        ("running", 0),
        "nothing refused was kept"
    );

    // Routes and actions that do not exist.
    for (who, method, path) in [
        (&customer, GET, "/api/v1/nothing-here".to_owned()),
        (&Who::Anonymous, GET, "/api/v2/offerings".to_owned()),
        (&customer, POST, format!("/api/v1/instances/{}/explode", w.inst_a)),
    ] {
        call(url, who, method, &path, None)
            .await
            .assert_problem(404, "not_found", None);
    }
}

#[tokio::test]
async fn secrets_stay_out_of_the_audit_log_and_debug_output() {
    let w = World::build().await;
    let url = w.ctx.url.as_str();
    let provider_a = w.client(&w.pa.token);
    let setup = provider_a.create_enrollment_token(&w.pa.id, None).await.unwrap().token;
    let key = fresh_key();
    w.ctx.anonymous().enroll(&setup, "edge-1", &key).await.unwrap();
    let unused = provider_a.create_enrollment_token(&w.pa.id, None).await.unwrap().token;
    let c = w.client(&w.operator).create_customer("customer-c").await.unwrap();
    w.client(&c.token).instances().await.unwrap();
    provider_a.agents().await.unwrap();

    // A refused token is not echoed back.
    let wrong = "berth-not-a-real-token-0123456789";
    let a = call(url, &Who::Bearer(wrong.into()), GET, "/api/v1/instances", None).await;
    a.assert_problem(401, "unauthenticated", None);
    assert!(!a.body.to_string().contains(wrong));

    let operator = Who::Bearer(w.operator.clone());
    let log = call(url, &operator, GET, "/api/v1/audit?limit=1000", None).await;
    assert_eq!(log.status, 200);
    assert!(log.body.as_array().unwrap().len() >= 15, "{}", log.body);
    let text = log.body.to_string();
    for (what, secret) in [
        ("operator token", &w.operator),
        ("provider A's token", &w.pa.token),
        ("provider B's token", &w.pb.token),
        ("customer A's token", &w.ca.token),
        ("customer B's token", &w.cb.token),
        ("customer C's token", &c.token),
        ("a used setup token", &setup),
        ("an unused setup token", &unused),
    ] {
        assert!(secret.len() >= 16, "{what} is too short to mean anything: {secret:?}");
        assert!(!text.contains(secret.as_str()), "{what} is in the audit log");
    }

    // Debug output of clients names no token and no private key.
    let bearer = Client::new(url, Auth::Bearer(w.ca.token.clone()));
    let shown = format!("{bearer:?} {bearer:#?}");
    assert!(!shown.contains(&w.ca.token) && shown.contains("redacted"), "{shown}");
    let signer = Client::new(url, Auth::Signed(RequestSigner::new(key.clone(), "edge-1")));
    let shown = format!("{signer:?} {signer:#?}");
    let private = key.to_bytes();
    for form in [
        hex::encode(private),
        base64::engine::general_purpose::STANDARD.encode(private),
        format!("{private:?}"),
    ] {
        assert!(!shown.contains(&form), "{shown}");
    }
    assert!(shown.contains("edge-1"), "the key id is not secret: {shown}");
}
