//! Who may call what: every endpoint of the API against every kind of caller (anonymous, the
//! operator, two providers, two customers, an agent of each provider), in one table. Things of
//! another tenant are answered `404`, as if they did not exist.

mod common;
mod support;

use berth_api::wire::*;
use common::*;
use http::Method;
use serde_json::{Value, json};
use support::*;

struct Row {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    /// Per caller, in the order of [`World::callers`], as [`Answer::outcome`] puts it.
    expect: Vec<&'static str>,
}

/// `/api/v1` + `template`, each `{…}` filled from `args` in turn; an argument left over is
/// appended (a query). `expect`: an outcome per caller, separated by spaces.
fn row(method: Method, template: &'static str, args: &[&str], body: Option<&Value>, expect: &'static str) -> Row {
    let expect: Vec<&str> = expect.split_whitespace().collect();
    assert_eq!(expect.len(), 8, "{template}: one outcome per caller");
    let mut path = String::from("/api/v1");
    let mut args = args.iter();
    for (i, part) in template.split('{').enumerate() {
        match part.split_once('}') {
            Some((_, rest)) if i > 0 => {
                path.push_str(args.next().expect("an argument for each placeholder"));
                path.push_str(rest);
            }
            _ => path.push_str(part),
        }
    }
    path.extend(args.copied());
    Row {
        method,
        template,
        path,
        body: body.cloned(),
        expect,
    }
}

fn to_json(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

const PUT: Method = Method::PUT;
const DELETE: Method = Method::DELETE;

#[tokio::test]
async fn every_endpoint_answers_every_kind_of_caller_as_its_role_allows() {
    let w = World::build().await;
    let provider_a = w.client(&w.pa.token);
    // What the allowed callers use up: an agent to revoke, an offering to withdraw.
    let spare = w.ctx.agent(&w.pa.id, &provider_a).await;
    let spare_offering = provider_a.create_offering(&small_offering()).await.unwrap().id;
    let (pa, ag_a, off_a, inst, op, op2) = (&w.pa.id, &w.agent_a.id, &w.offering_a, &w.inst_a, &w.op_a, &w.op_a2);
    let hex_a = hex::encode(w.agent_a.key.verifying_key().to_bytes());
    let (named, empty) = (json!({"name": "someone-new"}), json!({}));
    let setup = json!({"token": "not-a-setup-token", "name": "x", "public_key": b64_public(&fresh_key())});
    let offer = to_json(small_offering());
    let renamed = to_json(OfferingSpec {
        name: "renamed".into(),
        ..small_offering()
    });
    let later = to_json(CreateOrder {
        provision: false,
        ..order(off_a, "m")
    });
    let (cores, hb) = (json!({"cores": 4}), to_json(roomy()));
    let key = json!({"kind": "ssh", "name": "laptop", "public_key": SSH_KEY});
    let saved = w
        .client(&w.ca.token)
        .save_key(&serde_json::from_value(key.clone()).unwrap())
        .await
        .unwrap()
        .id;
    // Placed on provider A's agent (recorded only: no room needed).
    let placed = to_json(placement(ag_a, None));
    let templates = json!({"templates": [{"backend": "pve1", "id": "9000", "name": "debian-12"}]});
    let renew = json!({"generation": w.gen_a});
    let events = json!({"generation": w.gen_a, "events": [{"stage": "clone_template", "phase": "started"}]});
    let done = to_json(Complete {
        generation: w.gen_a,
        outcome: Completion::Succeeded(OpResult::default()),
    });
    let release = json!({"generation": w.gen_a2});
    let answer = json!({"action": "complete", "ipv4": "203.0.113.7"});
    let (ca, quota) = (&w.ca.id, json!({"instances": 500}));
    // Customer A's spare tokens: one to revoke, one to rotate, one an operator revokes.
    let tok = json!({"name": "ci", "ttl_seconds": 3600});
    let spare_token = |name: &'static str| {
        let c = w.client(&w.ca.token);
        async move {
            c.create_token(None, &serde_json::from_value(json!({"name": name})).unwrap())
                .await
                .unwrap()
                .view
                .id
        }
    };
    let (spare_tok, rot_tok, op_tok) = (spare_token("a").await, spare_token("b").await, spare_token("c").await);
    #[rustfmt::skip]
    let rows = [
        // an: anonymous, op: operator; pA, pB, cA, cB, aA, aB: provider, customer, agent of A and of B.
        //                                                                                                  an  op  pA  pB  cA  cB  aA  aB
        row(POST, "/providers",                                      &[],                Some(&named),     "401 201 403 403 403 403 403 403"),
        row(GET,  "/providers",                                      &[],                None,             "401 200 200 200 403 403 200 200"),
        row(POST, "/customers",                                      &[],                Some(&named),     "401 201 403 403 403 403 403 403"),
        row(GET,  "/customers",                                      &[],                None,             "401 200 403 403 403 403 403 403"),
        row(GET,  "/keys",                                           &[],                None,             "401 403 403 403 200 200 403 403"),
        row(POST, "/keys",                                           &[],                Some(&key),       "401 403 403 403 201 201 403 403"),
        row(DELETE, "/keys/{id}",                                    &[&saved],          None,             "401 403 403 403 200 404 403 403"),
        row(POST, "/providers/{id}/enrollment-tokens",               &[pa],              Some(&empty),     "401 201 201 404 403 403 403 403"),
        // The setup token is the credential: whoever calls, a bad one is refused.
        row(POST, "/agents/enroll",                                  &[],                Some(&setup),     "401 401 401 401 401 401 401 401"),
        row(GET,  "/agents",                                         &[],                None,             "401 200 200 200 403 403 200 200"),
        row(GET,  "/agents/{id}",                                    &[ag_a],            None,             "401 200 200 404 403 403 200 404"),
        row(GET,  "/agents/{id}/templates",                          &[ag_a],            None,             "401 200 200 404 403 403 200 404"),
        row(GET,  "/providers/{id}/templates",                       &[pa],              None,             "401 200 200 404 403 403 200 404"),
        // Revoking twice is harmless: the operator and provider A both get 200.
        row(POST, "/agents/{id}/revoke",                             &[&spare.id],       None,             "401 200 200 404 403 403 403 403"),
        row(POST, "/offerings",                                      &[],                Some(&offer),     "401 403 201 201 403 403 403 403"),
        row(GET,  "/offerings",                                      &[],                None,             "401 200 200 200 200 200 200 200"),
        // Customers see any offering that can be ordered; providers (and their agents) only theirs.
        row(GET,  "/offerings/{id}",                                 &[off_a],           None,             "401 200 200 404 200 200 200 404"),
        row(PUT,  "/offerings/{id}",                                 &[&spare_offering], Some(&renamed),   "401 403 200 404 403 403 403 403"),
        row(POST, "/offerings/{id}/withdraw",                        &[&spare_offering], None,             "401 403 200 404 403 403 403 403"),
        row(POST, "/orders",                                         &[],                Some(&later),     "401 403 403 403 202 202 403 403"),
        row(GET,  "/instances",                                      &[],                None,             "401 200 200 200 200 200 200 200"),
        // Another provider's agent is not one of yours: not found, nothing is said of it.
        row(POST, "/instances",                                      &[],                Some(&placed),    "401 202 202 404 403 403 403 403"),
        row(GET,  "/instances/{id}",                                 &[inst],            None,             "401 200 200 404 200 404 200 404"),
        row(GET,  "/instances/{id}/operations",                      &[inst],            None,             "401 200 200 404 200 404 200 404"),
        // Still provisioning: whoever may act on it is told it cannot now (authorization passed).
        row(POST, "/instances/{id}/{action}",                        &[inst, "stop"],    None,             "401 409:wrong_status 409:wrong_status 404 409:wrong_status 404 403 403"),
        row(POST, "/instances/{id}/reconfigure",                     &[inst],            Some(&cores),     "401 409:wrong_status 409:wrong_status 404 409:wrong_status 404 403 404"),
        row(GET,  "/operations/{id}",                                &[op],              None,             "401 200 200 404 200 404 200 404"),
        row(GET,  "/operations/{id}/events",                         &[op],              None,             "401 200 200 404 200 404 200 404"),
        // Staff answer an operation waiting for a person; this one is not waiting (authorization passed).
        row(POST, "/operations/{id}/input",                          &[op],              Some(&answer),    "401 409:not_waiting 409:not_waiting 404 403 404 403 404"),
        row(GET,  "/operations/{id}/input",                          &[op],              None,             "401 404 404 404 403 404 403 404"),
        row(GET,  "/providers/{pubkey}/contracts/pending-provision", &[&hex_a],          None,             "401 200 200 404 403 403 200 404"),
        // Each agent already holds all of its provider's work.
        row(POST, "/agent/claim",                                    &["?wait=0s"],      None,             "401 403 403 403 403 403 204 204"),
        row(POST, "/agent/heartbeat",                                &[],                Some(&hb),        "401 403 403 403 403 403 204 204"),
        row(PUT,  "/agent/templates",                                &[],                Some(&templates), "401 403 403 403 403 403 204 204"),
        row(GET,  "/agent/me",                                       &[],                None,             "401 403 403 403 403 403 200 200"),
        // Agent B on agent A's operations: not found, whether or not the id exists.
        row(POST, "/agent/operations/{id}/renew",                    &[op],              Some(&renew),     "401 403 403 403 403 403 200 404"),
        row(POST, "/agent/operations/{id}/events",                   &[op],              Some(&events),    "401 403 403 403 403 403 204 404"),
        row(POST, "/agent/operations/{id}/input/wait",               &[op, "?wait=0s"],  Some(&renew),     "401 403 403 403 403 403 204 404"),
        // Nothing to take: the holder is told so, agent B is told nothing.
        row(POST, "/agent/operations/{id}/input/taken",              &[op],              Some(&renew),     "401 403 403 403 403 403 404 404"),
        row(POST, "/agent/operations/{id}/complete",                 &[op],              Some(&done),      "401 403 403 403 403 403 200 404"),
        row(POST, "/agent/operations/{id}/release",                  &[op2],             Some(&release),   "401 403 403 403 403 403 204 404"),
        // An account's quotas: operators see and set any; an account sees its own.
        row(GET,  "/accounts/{id}/quota",                            &[ca],              None,             "401 200 404 404 200 404 404 404"),
        row(PUT,  "/accounts/{id}/quota",                            &[ca],              Some(&quota),     "401 200 403 403 403 403 403 403"),
        // What a provider lets its customers hold: the provider and operators set and list it;
        // the customer reads its own.
        row(GET,  "/providers/{id}/customer-quotas",                 &[pa],              None,             "401 200 200 404 403 403 403 403"),
        row(GET,  "/providers/{id}/customer-quotas/{customer}",      &[pa, ca],          None,             "401 200 200 404 200 404 403 403"),
        row(PUT,  "/providers/{id}/customer-quotas/{customer}",      &[pa, ca],          Some(&quota),     "401 200 200 404 403 403 403 403"),
        // API tokens: everyone but agents manages their own; operators any account's.
        row(GET,  "/tokens",                                         &[],                None,             "401 200 200 200 200 200 403 403"),
        row(POST, "/tokens",                                         &[],                Some(&tok),       "401 201 201 201 201 201 403 403"),
        row(POST, "/tokens/{id}/revoke",                             &[&spare_tok],      None,             "401 404 404 404 200 404 403 403"),
        row(POST, "/tokens/{id}/rotate",                             &[&rot_tok],        None,             "401 404 404 404 201 404 403 403"),
        row(GET,  "/accounts/{id}/tokens",                           &[ca],              None,             "401 200 403 403 403 403 403 403"),
        row(POST, "/accounts/{id}/tokens",                           &[ca],              Some(&tok),       "401 201 403 403 403 403 403 403"),
        row(POST, "/accounts/{id}/tokens/{token}/revoke",            &[ca, &op_tok],     None,             "401 200 403 403 403 403 403 403"),
        row(GET,  "/audit",                                          &[],                None,             "401 200 403 403 403 403 403 403"),
        row(GET,  "/audit/verify",                                   &[],                None,             "401 200 403 403 403 403 403 403"),
    ];

    // Every route of the API is in the table.
    let doc = serde_json::to_value(berth_server::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let listed = rows
                .iter()
                .any(|r| format!("/api/v1{}", r.template) == *path && r.method.as_str().eq_ignore_ascii_case(method));
            assert!(
                listed || !["get", "post", "put", "patch", "delete"].contains(&method.as_str()),
                "{method} {path} is missing from the matrix"
            );
        }
    }

    let callers = w.callers();
    let mut wrong = Vec::new();
    for r in &rows {
        for ((name, who), want) in callers.iter().zip(&r.expect) {
            let got = call(&w.ctx.url, who, r.method.clone(), &r.path, r.body.as_ref()).await;
            if got.outcome() != *want {
                let (method, got) = (r.method.as_str(), got.outcome());
                wrong.push(format!(
                    "{method:<5} /api/v1{:<56} {name:<11} expected {want:<17} got {got}",
                    r.template
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cells differ:\n{}",
        wrong.len(),
        rows.len() * callers.len(),
        wrong.join("\n")
    );

    // The event stream is one (its head only: it runs until the operation is done).
    let stream = call(
        &w.ctx.url,
        &callers[4].1,
        GET,
        &format!("/api/v1/operations/{op2}/events"),
        None,
    )
    .await;
    assert_eq!(
        (stream.status, stream.content_type.as_str()),
        (200, "text/event-stream")
    );

    // Lists are scoped to what the caller may see.
    let ids = |v: &[InstanceView]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    let (customer_a, customer_b) = (w.client(&w.ca.token), w.client(&w.cb.token));
    let provider_b = w.client(&w.pb.token);
    let mine = customer_a.instances().await.unwrap();
    assert!(mine.iter().all(|i| i.customer_id.as_ref() == Some(&w.ca.id)) && ids(&mine).contains(inst));
    assert_eq!(mine.len(), 3, "a1, a2 and the order of the matrix");
    let theirs = customer_b.instances().await.unwrap();
    assert!(theirs.iter().all(|i| i.customer_id.as_ref() == Some(&w.cb.id)) && ids(&theirs).contains(&w.inst_b));
    for list in [
        provider_b.instances().await.unwrap(),
        w.agent_b.client.instances().await.unwrap(),
    ] {
        assert!(list.iter().all(|i| i.provider_id == w.pb.id) && !ids(&list).contains(inst));
    }
    let all = w.client(&w.operator).instances().await.unwrap();
    assert!(ids(&all).contains(inst) && ids(&all).contains(&w.inst_b));
    let agents = provider_a.agents().await.unwrap();
    assert!(agents.iter().all(|a| a.provider_id == w.pa.id) && agents.iter().any(|a| &a.id == ag_a));
    for c in [&provider_b, &w.agent_b.client] {
        let seen: Vec<String> = c.providers().await.unwrap().into_iter().map(|p| p.id).collect();
        assert_eq!(seen, vec![w.pb.id.clone()]);
    }
    let own = provider_b.offerings("").await.unwrap();
    assert!(!own.is_empty() && own.iter().all(|o| o.provider_id == w.pb.id));
    assert!(customer_a.offerings("").await.unwrap().iter().any(|o| &o.id == off_a));
    let gone = customer_b.offering(&spare_offering).await.unwrap_err();
    assert_eq!(
        gone.code(),
        Some("not_found"),
        "a withdrawn offering is not shown to customers"
    );
    assert!(provider_a.agent(&spare.id).await.unwrap().revoked_at.is_some());

    // An agent of another provider cannot tell whether an operation id exists: not_found for A's
    // (in the table) and for a made-up one alike.
    let made_up = "/api/v1/agent/operations/00000000-0000-4000-8000-000000000000/renew";
    call(&w.ctx.url, &callers[7].1, POST, made_up, Some(&renew))
        .await
        .assert_problem(404, "not_found", None);

    // Refused calls left no trace; allowed ones did, under the caller's name.
    let audit = w.client(&w.operator).audit(0, 1000).await.unwrap();
    let count = |a: &str| audit.iter().filter(|e| e.action == a).count();
    assert_eq!((count("provider.created"), count("customer.created")), (3, 3));
    // World: agents A, B and the spare; table: the operator and provider A.
    assert_eq!(count("enrollment_token.created"), 5);
    // World: A's, B's and the spare; table: providers A and B.
    assert_eq!(count("offering.created"), 5);
    assert_eq!((count("order.created"), count("offering.withdrawn")), (5, 1));
    assert_eq!((count("instance.stop"), count("instance.reconfigure")), (0, 0));
    // Revoked twice in the table (operator, then provider A): one change, one entry.
    assert_eq!(count("agent.revoked"), 1);
    for e in audit.iter().filter(|e| e.action == "agent.revoked") {
        assert!(e.actor == "operator" || e.actor == format!("provider:{pa}"), "{e:?}");
    }
    assert!(w.ctx.store.verify_audit().await.unwrap().is_ok());
}

/// A provider places machines only for its own customers (who ordered from it), and an
/// instance pinned to a revoked agent refuses actions instead of queueing work nobody can take.
#[tokio::test]
async fn placed_machines_belong_to_the_providers_customers_and_die_with_their_agent() {
    let w = World::build().await;
    let pa = w.client(&w.pa.token);
    let place = |customer: Option<&str>, agent: &str| placement(agent, customer);
    // Customer B never ordered from provider A: refused like an unknown customer.
    for c in [w.cb.id.as_str(), "no-such-customer"] {
        let e = pa
            .create_instance(&place(Some(c), &w.agent_a.id), None)
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("customer_id"), "{e}");
    }
    let mine = pa
        .create_instance(&place(Some(&w.ca.id), &w.agent_a.id), None)
        .await
        .unwrap();
    let ca = w.client(&w.ca.token);
    assert!(
        ca.instance(&mine.instance_id).await.is_ok(),
        "customer A sees the machine placed for them"
    );
    // The operator may place for anyone.
    w.client(&w.operator)
        .create_instance(&place(Some(&w.cb.id), &w.agent_a.id), None)
        .await
        .unwrap();

    let spare = w.ctx.agent(&w.pa.id, &pa).await;
    spare.client.heartbeat(&roomy()).await.unwrap();
    let on_spare = pa.create_instance(&place(None, &spare.id), None).await.unwrap();
    pa.revoke_agent(&spare.id).await.unwrap();
    let e = pa
        .instance_action(&on_spare.instance_id, "provision")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("agent_revoked"), "{e}");
}

/// A machine of one core placed on `agent` (recorded only: no room needed).
fn placement(agent: &str, customer: Option<&str>) -> CreateInstance {
    CreateInstance {
        agent_id: agent.to_owned(),
        backend: Some("pve1".into()),
        template: None,
        name: "placed".into(),
        cores: 1,
        memory_mib: 512,
        disk_gib: 10,
        ssh_public_key: SSH_KEY.into(),
        requester_public_key: Some(AGE_KEY.into()),
        post_provision_commands: vec![],
        skip_post_provision: false,
        customer_id: customer.map(str::to_owned),
        provision: false,
    }
}
