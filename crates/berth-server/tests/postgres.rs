//! The control plane on PostgreSQL, with two server replicas on one database: an agent
//! long-polling on one replica gets an order placed through the other at once (LISTEN/NOTIFY),
//! an event stream on one replica follows reports made through the other, and concurrent
//! claimers on both replicas never share an operation.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::client::{Auth, Client};
use berth_api::httpsig::RequestSigner;
use berth_api::wire::*;
use berth_store::testpg::Postgres;
use berth_store::{PgStore, Store};
use common::*;

#[tokio::test]
async fn two_replicas_on_postgres_serve_the_same_agents() {
    let Some(pg) = Postgres::start() else { return };
    let store_a: Arc<dyn Store> = Arc::new(PgStore::connect(&pg.url).await.unwrap());
    let store_b: Arc<dyn Store> = Arc::new(PgStore::connect(&pg.url).await.unwrap());
    let a = TestContext::over(store_a, config(|_| {}), None).await;
    let b = TestContext::over(store_b, config(|_| {}), None).await;

    let (pid, provider) = a.provider("acme").await;
    let (_, customer_a) = a.customer("alice").await;
    // The same customer, through replica B.
    let customer_b = Client::new(&b.url, customer_token_of(&customer_a));
    let agent = a.agent(&pid, &provider).await;
    let agent_on_b = Client::new(
        &b.url,
        Auth::Signed(RequestSigner::new(agent.key.clone(), agent.id.clone())),
    );
    agent.client.heartbeat(&roomy()).await.unwrap();
    let offering = provider.create_offering(&small_offering()).await.unwrap();

    // Long-poll on A, order through B: woken by NOTIFY, not by the 10 s recheck.
    let poll = {
        let c = Client::new(
            &a.url,
            Auth::Signed(RequestSigner::new(agent.key.clone(), agent.id.clone())),
        );
        tokio::spawn(async move { c.claim(Duration::from_secs(50)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let acc = customer_b
        .create_order(&order(&offering.id, "pg-1"), None)
        .await
        .unwrap();
    let claimed = poll.await.unwrap().unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    assert_eq!(Some(claimed.operation_id.clone()), acc.operation_id);

    // An event stream held by replica A follows reports made through replica B.
    let url = format!("{}/api/v1/operations/{}/events", a.url, claimed.operation_id);
    let token = bearer(&customer_a);
    let mut resp = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = Instant::now();
    agent_on_b
        .report(
            &claimed.operation_id,
            claimed.generation,
            vec![EventReport {
                stage: "clone_template".into(),
                phase: "started".into(),
                percent: Some(10),
                message: None,
            }],
        )
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("clone_template") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        t1.elapsed() < Duration::from_secs(4),
        "the stream took {:?}",
        t1.elapsed()
    );
    agent_on_b
        .complete(
            &claimed.operation_id,
            claimed.generation,
            Completion::Succeeded(OpResult {
                vm_id: Some("7".into()),
                ip_address: Some("10.1.1.1".into()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(customer_a.instance(&acc.instance_id).await.unwrap().status, "running");

    // Many orders, four claimers on two replicas: each operation is claimed exactly once.
    let mut ops = HashSet::new();
    for n in 0..24 {
        let via = if n % 2 == 0 { &customer_a } else { &customer_b };
        ops.insert(
            via.create_order(&order(&offering.id, &format!("m{n}")), None)
                .await
                .unwrap()
                .operation_id
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..4 {
        let url = if i % 2 == 0 { a.url.clone() } else { b.url.clone() };
        let c = Client::new(
            &url,
            Auth::Signed(RequestSigner::new(agent.key.clone(), agent.id.clone())),
        );
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(w) = c.claim(Duration::from_millis(0)).await.unwrap() {
                c.complete(
                    &w.operation_id,
                    w.generation,
                    Completion::Succeeded(OpResult::default()),
                )
                .await
                .unwrap();
                got.push(w.operation_id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "an operation was claimed twice");
    assert_eq!(unique, ops);
    assert!(a.store.verify_audit().await.unwrap().is_ok());
}

fn bearer(c: &Client) -> String {
    match customer_token_of(c) {
        Auth::Bearer(t) => t,
        _ => unreachable!(),
    }
}

/// The bearer token a test client was made with (read back from its Debug-free accessor).
fn customer_token_of(c: &Client) -> Auth {
    Auth::Bearer(c.bearer_token().expect("a bearer client").to_owned())
}
