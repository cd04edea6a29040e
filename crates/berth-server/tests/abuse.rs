//! The control plane under abuse, as an outside tester attacks it: connections held open idle
//! or half-sent, bodies that never finish. Each bound answers or closes instead of starving
//! other clients.

mod common;
mod support;

use std::time::Duration;

use berth_api::wire::CreateOrder;
use common::*;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn healthz(url: &str) -> Result<String, reqwest::Error> {
    reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .text()
        .await
}

/// What the server sends until it closes the connection; panics if it keeps it open 20 s.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!(
            "the server kept the connection open; it sent {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

#[tokio::test]
async fn idle_and_half_sent_connections_do_not_lock_others_out() {
    // Heads get a whole minute, so only making room for new connections lets /healthz through.
    let ctx = TestContext::sqlite_with(|c| {
        c.limits.max_connections = 64;
        c.limits.header_timeout_seconds = 60;
    })
    .await;
    let addr = ctx.server.addr;
    let mut held = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /api/v1/offerings HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        held.push(s);
    }
    assert_eq!(healthz(&ctx.url).await.unwrap(), "ok");
    // The oldest idle connections were closed to make room; the newest are still open.
    let mut oldest = held.remove(0);
    assert_eq!(read_until_closed(&mut oldest).await, "", "closed without an answer");
}

#[tokio::test]
async fn slow_heads_and_bodies_are_cut_off() {
    let ctx = TestContext::sqlite_with(|c| {
        c.limits.header_timeout_seconds = 1;
        c.limits.body_timeout_seconds = 1;
    })
    .await;
    let addr = ctx.server.addr;

    // Nothing sent, or a head never finished: closed after the header timeout.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(!read_until_closed(&mut idle).await.contains("200 OK"));
    assert!(!read_until_closed(&mut partial).await.contains("200 OK"));

    // A kept-alive connection that goes quiet after its first request: closed alike.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut kept).await;
    assert!(answered.starts_with("HTTP/1.1 200 OK"), "{answered}");

    // A body shorter than its Content-Length: a 408 problem, then the connection closes.
    let mut short = TcpStream::connect(addr).await.unwrap();
    short
        .write_all(
            b"POST /api/v1/providers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut short).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("\"body_timeout\""),
        "{answer}"
    );

    assert_eq!(healthz(&ctx.url).await.unwrap(), "ok");
}

/// The smaller defects an outside tester found: each is refused with a problem naming what is
/// wrong, in the order a caller can act on (who first, then what).
#[tokio::test]
async fn malformed_requests_get_problems_naming_what_is_wrong() {
    let w = World::build().await;
    let url = w.ctx.url.as_str();
    let (provider, customer) = (Who::Bearer(w.pa.token.clone()), Who::Bearer(w.ca.token.clone()));
    let offering = serde_json::to_value(small_offering()).unwrap();
    let bad = set(&offering, "cores", json!("many"));

    // Who is asking comes before what the body holds.
    call(url, &Who::Anonymous, POST, "/api/v1/offerings", Some(&bad))
        .await
        .assert_problem(401, "unauthenticated", None);
    call(url, &customer, POST, "/api/v1/offerings", Some(&bad))
        .await
        .assert_problem(403, "forbidden", None);
    call(url, &Who::Anonymous, GET, "/api/v1/operations/x?wait=soon", None)
        .await
        .assert_problem(401, "unauthenticated", None);

    // One JSON object, nothing after it; whole numbers may be written as floats.
    let bytes = serde_json::to_vec(&offering).unwrap();
    let bearer = |t: &str| {
        json_type(HeaderMap::from_iter([(
            AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {t}")).unwrap(),
        )]))
    };
    for tail in [&b" garbage"[..], b"{}"] {
        let body = [bytes.as_slice(), tail].concat();
        exchange(url, POST, "/api/v1/offerings", bearer(&w.pa.token), body)
            .await
            .assert_problem(422, "invalid_input", Some("body"));
    }
    exchange(url, POST, "/api/v1/offerings", bearer(&w.pa.token), b"[1, 2]".to_vec())
        .await
        .assert_problem(422, "invalid_input", Some("body"));
    // (Another name: names are unique among a provider's offerings.)
    let floats = set(&set(&offering, "cores", json!(2.0)), "name", json!("floats"));
    let made = call(url, &provider, POST, "/api/v1/offerings", Some(&floats)).await;
    assert_eq!((made.status, made.body["cores"].as_u64()), (201, Some(2)), "{made:?}");

    // Numbers and names within what the schema says.
    for (path, value, field) in [
        ("memory_mib", json!(u64::MAX), "memory_mib"),
        (
            "price",
            json!({"amount": u64::MAX, "currency": "EUR", "period": "month"}),
            "price.amount",
        ),
        ("name", json!("red\u{1b}[31malert"), "name"),
        ("name", json!("abc\u{202e}exe.pdf"), "name"),
    ] {
        call(
            url,
            &provider,
            POST,
            "/api/v1/offerings",
            Some(&set(&offering, path, value)),
        )
        .await
        .assert_problem(422, "invalid_input", Some(field));
    }
    // A reconfigure keeps the bounds of an order (schemathesis found disk_gib 0 accepted).
    let reconfigure = format!("/api/v1/instances/{}/reconfigure", w.inst_a);
    for (field, value) in [
        ("disk_gib", json!(0)),
        ("cores", json!(0)),
        ("memory_mib", json!(8)),
        ("cores", json!(null)),
    ] {
        call(url, &customer, POST, &reconfigure, Some(&json!({ field: value })))
            .await
            .assert_problem(422, "invalid_input", Some(field));
    }
    // Valid input for a machine still being made: its status answers first (a 409, not a 422;
    // a shrink of a running one is `disk_shrink`, tests/flows.rs).
    call(url, &customer, POST, &reconfigure, Some(&json!({"disk_gib": 1})))
        .await
        .assert_problem(409, "wrong_status", None);
    call(
        url,
        &Who::Bearer(w.operator.clone()),
        POST,
        "/api/v1/customers",
        Some(&json!({"name": "\u{7}bell"})),
    )
    .await
    .assert_problem(422, "invalid_input", Some("name"));

    // Query strings: unknown parameters and limits out of range are named, not ignored.
    for path in [
        "/api/v1/instances?verbose=1",
        "/api/v1/keys?sort=name",
        &format!("/api/v1/instances/{}?expand=all", w.inst_a),
    ] {
        let field = path.split_once('?').unwrap().1.split('=').next().unwrap();
        call(url, &customer, GET, path, None)
            .await
            .assert_problem(422, "invalid_input", Some(field));
    }
    let operator = Who::Bearer(w.operator.clone());
    for limit in ["0", "1000000", "-3"] {
        call(url, &operator, GET, &format!("/api/v1/audit?limit={limit}"), None)
            .await
            .assert_problem(422, "invalid_input", Some("limit"));
    }

    // Requests refused before any route: each with a problem document.
    call(url, &customer, GET, "/api/v1/instances/%FF%FE", None)
        .await
        .assert_problem(400, "bad_request", None);
    call(url, &customer, Method::DELETE, "/api/v1/offerings", None)
        .await
        .assert_problem(405, "method_not_allowed", None);
    call(
        url,
        &customer,
        GET,
        &format!("/api/v1/offerings?region={}", "a".repeat(9000)),
        None,
    )
    .await
    .assert_problem(414, "uri_too_long", None);
    let mut big = bearer(&w.ca.token);
    for n in 0..40 {
        big.insert(
            http::HeaderName::try_from(format!("x-filler-{n}")).unwrap(),
            HeaderValue::try_from("f".repeat(1000)).unwrap(),
        );
    }
    exchange(url, GET, "/api/v1/offerings", big, Vec::new())
        .await
        .assert_problem(431, "headers_too_large", None);

    // Ordering what is withdrawn or unknown; no room is worth retrying.
    let unknown = set(
        &serde_json::to_value(order(&w.offering_a, "x1")).unwrap(),
        "offering_id",
        json!("nope"),
    );
    call(url, &customer, POST, "/api/v1/orders", Some(&unknown))
        .await
        .assert_problem(404, "not_found", None);
    w.agent_a
        .client
        .heartbeat(&berth_api::wire::Heartbeat {
            capacity: berth_api::wire::CapacityReport {
                cores_free: 0,
                ..roomy().capacity
            },
            ..roomy()
        })
        .await
        .unwrap();
    let none = call(
        url,
        &customer,
        POST,
        "/api/v1/orders",
        Some(&serde_json::to_value(order(&w.offering_a, "x2")).unwrap()),
    )
    .await;
    none.assert_problem(409, "no_capacity", None);
    assert_eq!(none.body["retryable"], true, "{none:?}");
}

#[tokio::test]
async fn rates_are_limited_per_credential_and_recover() {
    let ctx = TestContext::sqlite_with(|c| {
        c.limits.credential_rate = 2;
        c.limits.credential_burst = 5;
    })
    .await;
    let (_, customer) = ctx.customer("bob").await;
    let mut limited = None;
    for _ in 0..20 {
        match customer.keys().await {
            Ok(_) => {}
            Err(e) => {
                limited = Some(e);
                break;
            }
        }
    }
    let e = limited.expect("a burst past the limit is refused");
    assert_eq!(e.code(), Some("rate_limited"), "{e}");
    // Another credential is not held up; /healthz never is.
    let (_, other) = ctx.customer("carol").await;
    other.keys().await.unwrap();
    assert_eq!(healthz(&ctx.url).await.unwrap(), "ok");
    // The answer says when to come back, and then the request passes.
    let raw = reqwest::Client::new()
        .get(format!("{}/api/v1/keys", ctx.url))
        .bearer_auth(customer.bearer_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 429);
    let wait: u64 = raw.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    customer.keys().await.unwrap();
}

#[tokio::test]
async fn lists_come_in_pages_linked_to_the_next() {
    let ctx = TestContext::sqlite().await;
    let (pid, provider) = ctx.provider("acme").await;
    let (cid, customer) = ctx.customer("bob").await;
    let offering = provider.create_offering(&small_offering()).await.unwrap();
    let _ = pid;
    let mut made = Vec::new();
    for n in 0..5 {
        let o = CreateOrder {
            provision: false,
            ..order(&offering.id, &format!("m{n}"))
        };
        made.push(customer.create_order(&o, None).await.unwrap().instance_id);
    }
    let w = Who::Bearer(customer.bearer_token().unwrap().to_owned());
    let first = call(&ctx.url, &w, GET, "/api/v1/instances?limit=2", None).await;
    let ids = |a: &Answer| -> Vec<String> {
        a.body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), made[..2]);
    let link = first.headers["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!("</api/v1/instances?limit=2&after={}>; rel=\"next\"", made[1])
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let second = call(&ctx.url, &w, GET, next, None).await;
    assert_eq!(ids(&second), made[2..4]);
    let last = call(
        &ctx.url,
        &w,
        GET,
        &format!("/api/v1/instances?limit=2&after={}", made[3]),
        None,
    )
    .await;
    assert_eq!(ids(&last), made[4..]);
    assert!(!last.headers.contains_key("link"), "the last page links nowhere");
    // The typed client follows the links: every instance, in order.
    let all: Vec<String> = customer.instances().await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(all, made);
    let _ = cid;
}

#[tokio::test]
async fn event_streams_end_after_their_lifetime() {
    let ctx = TestContext::sqlite_with(|c| c.limits.stream_max_seconds = 1).await;
    let (pid, provider) = ctx.provider("acme").await;
    let (_, customer) = ctx.customer("bob").await;
    let agent = ctx.agent(&pid, &provider).await;
    agent.client.heartbeat(&roomy()).await.unwrap();
    let offering = provider.create_offering(&small_offering()).await.unwrap();
    let a = customer.create_order(&order(&offering.id, "s1"), None).await.unwrap();
    // Nobody works on it: the stream would run forever, but ends on its own.
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/operations/{}/events",
            ctx.url,
            a.operation_id.unwrap()
        ))
        .bearer_auth(customer.bearer_token().unwrap())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("the stream ends by itself");
    assert!(!body.contains("event: done"), "{body}");
}

/// `VmHWM` (peak resident memory) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One customer with many recorded instances, and ten clients reading all of them at once:
/// the server holds a page per request, never the whole list (the outside test took it from
/// 41 MiB to 732 MiB with 35k instances and 10 parallel unpaged lists).
#[tokio::test]
async fn many_instances_read_at_once_cost_pages_not_lists() {
    const INSTANCES: usize = 6_000;
    const READERS: usize = 10;
    /// What the server may grow by while the readers run (the test reads and drops pages).
    const BOUND_MIB: u64 = 40;
    let ctx = TestContext::sqlite().await;
    let (pid, _) = ctx.provider("acme").await;
    let (cid, customer) = ctx.customer("bob").await;
    let request = serde_json::json!({"name": "x", "cores": 1, "memory_mib": 512, "disk_gib": 10,
        "ssh_public_key": SSH_KEY, "requester_public_key": AGE_KEY, "skip_post_provision": false,
        "post_provision_commands": ["echo one", "echo two"], "template": "debian-12-generic-amd64"});
    for n in 0..INSTANCES {
        let new = berth_store::NewInstance {
            provider_id: pid.clone(),
            customer_id: Some(cid.clone()),
            offering_id: None,
            agent_id: None,
            status: "pending".into(),
            request: request.clone(),
            quota: None,
        };
        let audit = berth_store::NewAuditEntry {
            actor: "test".into(),
            action: "order.created".into(),
            subject: String::new(),
            detail: serde_json::json!({"n": n}),
        };
        ctx.store
            .create_instance(new, None, audit, berth_server::now_ms())
            .await
            .unwrap();
    }
    let token = customer.bearer_token().unwrap().to_owned();
    let before = peak_rss_kib();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (url, token) = (ctx.url.clone(), token.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut next = Some("/api/v1/instances".to_owned());
                let mut seen = 0;
                while let Some(path) = next.take() {
                    let resp = http
                        .get(format!("{url}{path}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    next = resp.headers().get("link").map(|l| {
                        l.to_str()
                            .unwrap()
                            .trim_start_matches('<')
                            .split('>')
                            .next()
                            .unwrap()
                            .to_owned()
                    });
                    seen += resp.json::<Vec<serde_json::Value>>().await.unwrap().len();
                }
                seen
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), INSTANCES);
    }
    let grown = (peak_rss_kib() - before) / 1024;
    eprintln!("peak resident memory grew by {grown} MiB ({READERS} readers, {INSTANCES} instances, default pages)");
    assert!(grown < BOUND_MIB, "peak memory grew by {grown} MiB reading pages");
}

/// Behind a proxy (`api.trusted_proxies`), the client is the address the proxy forwarded for:
/// each such client gets its own allowance. From a peer not trusted, `X-Forwarded-For` is
/// not believed (anyone could send it to dodge the limit).
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    async fn until_limited(url: &str, forwarded_for: &str) -> usize {
        let http = reqwest::Client::new();
        for n in 1..=20 {
            let r = http
                .get(format!("{url}/api/v1/offerings"))
                .header("x-forwarded-for", forwarded_for)
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                return n;
            }
        }
        panic!("{forwarded_for}: never limited");
    }
    async fn status(url: &str, forwarded_for: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{url}/api/v1/offerings"))
            .header("x-forwarded-for", forwarded_for)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    for trusted in [true, false] {
        let ctx = TestContext::sqlite_with(|c| {
            c.limits.address_rate = 1;
            c.limits.address_burst = 3;
            if trusted {
                c.api.trusted_proxies = vec!["127.0.0.1/32".into()];
            }
        })
        .await;
        assert!(until_limited(&ctx.url, "203.0.113.1").await <= 5);
        let other = status(&ctx.url, "198.51.100.2").await;
        if trusted {
            assert_ne!(other, 429, "another client behind the proxy is not held up");
        } else {
            assert_eq!(other, 429, "an untrusted peer's X-Forwarded-For is not believed");
        }
    }
}
