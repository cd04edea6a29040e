//! The dashboard's numbers: how soon a stage the agent reported is visible in a real browser
//! (headless Chromium; a MutationObserver stamps each stage as it turns completed, against the
//! agent's send time on the same clock), the server time of the instance list with 1,000
//! instances, and the bytes a page costs (HTML plus stylesheet plus htmx, raw and gzipped).
//! The control plane runs in this process on SQLite; this process is also the agent (signed
//! requests), so the stages come exactly when it says.
//!
//! `cargo run --release -p berth-bench --bin web-bench` (needs Debian's chromium and chromium-driver)

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use berth_api::client::{Auth, Client};
use berth_api::httpsig::RequestSigner;
use berth_api::wire::*;
use berth_store::{Catalog as _, Role, SqliteStore};
use clap::Parser;
use thirtyfour::prelude::*;

#[derive(Parser, Debug)]
struct Args {
    /// Operations whose six stages are watched in the browser.
    #[arg(long, default_value_t = 20)]
    ops: usize,
    /// Instances in the list page measurement.
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Requests per page measurement.
    #[arg(long, default_value_t = 50)]
    requests: usize,
}

const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
const SSH: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bench";
const STAGES: [&str; 6] = [
    "clone_template",
    "configure_vm",
    "start_vm",
    "wait_network",
    "post_provision",
    "register",
];

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

fn gzipped(data: &[u8]) -> anyhow::Result<usize> {
    use std::io::Write as _;
    let mut gz = std::process::Command::new("gzip")
        .arg("-9c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("gzip")?;
    gz.stdin.take().context("stdin")?.write_all(data)?;
    Ok(gz.wait_with_output()?.stdout.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("bench.db")).await?);
    let operator = store
        .create_api_token(Role::Operator, "", "bench", berth_server::now_ms())
        .await?;
    let cfg = berth_bench::server_config("listen = \"127.0.0.1:0\"", "sqlite = \"x\"")?;
    let server = berth_server::start_app(cfg, store, berth_web::app).await?;
    let url = format!("http://{}", server.addr);
    let op = Client::new(&url, Auth::Bearer(operator.secret));
    let prov = op.create_provider("p").await?;
    let pc = Client::new(&url, Auth::Bearer(prov.token));
    let spec = OfferingSpec {
        name: "s".into(),
        cores: 1,
        memory_mib: 512,
        disk_gib: 10,
        bandwidth_mbps: None,
        template: None,
        price: None,
        region: None,
        labels: Default::default(),
        post_provision_commands: vec![],
    };
    let offering = pc.create_offering(&spec).await?.id;
    let t = pc.create_enrollment_token(&prov.id, None).await?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let view = Client::new(&url, Auth::None).enroll(&t.token, "a", &key).await?;
    let agent = Client::new(&url, Auth::Signed(RequestSigner::new(key, view.id)));
    let big = 1 << 30;
    agent
        .heartbeat(&Heartbeat {
            version: "bench".into(),
            capacity: CapacityReport {
                cores_total: big,
                cores_free: big,
                memory_mib_total: big,
                memory_mib_free: big,
                disk_gib_total: big,
                disk_gib_free: big,
                unmetered: false,
            },
            backends: vec![],
            drift: vec![],
            site_drift: None,
            pools: Vec::new(),
        })
        .await?;
    let cust = op.create_customer("c").await?;
    let customer = Client::new(&url, Auth::Bearer(cust.token.clone()));
    let order = |name: String, provision: bool| CreateOrder {
        offering_id: offering.clone(),
        name,
        ssh_public_key: SSH.into(),
        requester_public_key: Some(AGE.into()),
        skip_post_provision: false,
        provision,
    };

    // The browser, signed in as the customer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut chromedriver = std::process::Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("chromedriver (apt-get install chromium chromium-driver)")?;
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary("/usr/bin/chromium")?;
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
    ] {
        caps.add_arg(a)?;
    }
    let started = Instant::now();
    let driver = loop {
        match WebDriver::new(format!("http://127.0.0.1:{port}"), caps.clone()).await {
            Ok(d) => break d,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    driver.goto(format!("{url}/ui/sign-in")).await?;
    driver
        .find(By::Css("#token"))
        .await?
        .send_keys(cust.token.as_str())
        .await?;
    driver.find(By::Css("main form button")).await?.click().await?;

    // Stage visibility.
    let mut lat = Vec::new();
    for n in 0..args.ops {
        let a = customer.create_order(&order(format!("live{n}"), true), None).await?;
        let op_id = a.operation_id.context("an operation")?;
        let w = agent.claim(Duration::from_secs(5)).await?.context("the claim")?;
        anyhow::ensure!(w.operation_id == op_id, "claimed another operation");
        driver.goto(format!("{url}/ui/operations/{op_id}")).await?;
        driver
            .execute(
                "window.seen = {}; new MutationObserver(() => {
                   for (const li of document.querySelectorAll('#progress li[data-status=completed]')) {
                     if (!(li.dataset.stage in window.seen)) window.seen[li.dataset.stage] = Date.now();
                   }
                 }).observe(document.getElementById('progress'), {subtree: true, childList: true, attributes: true});",
                vec![],
            )
            .await?;
        // Let the page open its stream before the first report.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sent = Vec::new();
        for s in STAGES {
            let ev = |phase: &str| EventReport {
                stage: s.into(),
                phase: phase.into(),
                percent: None,
                message: None,
            };
            agent.report(&op_id, w.generation, vec![ev("started")]).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            sent.push(now_ms());
            agent.report(&op_id, w.generation, vec![ev("completed")]).await?;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let result = OpResult {
            ip_address: Some("10.0.0.5".into()),
            ..OpResult::default()
        };
        agent
            .complete(&op_id, w.generation, Completion::Succeeded(result))
            .await?;
        let t0 = Instant::now();
        while driver
            .find(By::Css("#progress p.status[data-status=succeeded]"))
            .await
            .is_err()
        {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(10), "the page never showed the end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen: std::collections::HashMap<String, f64> =
            driver.execute("return window.seen", vec![]).await?.convert()?;
        for (s, at) in STAGES.iter().zip(&sent) {
            let shown = seen.get(*s).with_context(|| format!("stage {s} never showed"))?;
            lat.push(shown - at);
        }
    }
    let samples = lat.len();
    let (p50, p95, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.95), pct(&mut lat, 1.0));
    println!(
        "stage visible after the agent reported it: {samples} stages, p50 {p50:.0} ms, p95 {p95:.0} ms, max {max:.0} ms"
    );

    // The instance list with many instances.
    let t_fill = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt as _;
    for n in 0..args.instances.saturating_sub(args.ops) {
        let (c, o) = (customer.clone(), order(format!("rec{n}"), false));
        pending.push(async move { c.create_order(&o, None).await });
        if pending.len() >= 8 {
            pending.next().await.context("an order")??;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    eprintln!("{} instances recorded in {:.1?}", args.instances, t_fill.elapsed());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed_in = http
        .post(format!("{url}/ui/sign-in"))
        .header("origin", &url)
        .form(&[("token", cust.token.as_str()), ("next", "/ui")])
        .send()
        .await?;
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .context("a cookie")?
        .to_owned();
    let timing = |path: String, bearer: bool| {
        let (http, cookie, url, token) = (http.clone(), cookie.clone(), url.clone(), cust.token.clone());
        async move {
            let mut ms = Vec::new();
            let mut body = Vec::new();
            for _ in 0..args.requests {
                let req = http.get(format!("{url}{path}"));
                let req = if bearer {
                    req.bearer_auth(&token)
                } else {
                    req.header("cookie", &cookie)
                };
                let t = Instant::now();
                let r = req.send().await?;
                anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
                body = r.bytes().await?.to_vec();
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok((pct(&mut ms.clone(), 0.5), pct(&mut ms, 0.95), body))
        }
    };
    let n = args.instances;
    let (a50, a95, _) = timing("/api/v1/instances".into(), true).await?;
    println!("GET /api/v1/instances ({n} instances): p50 {a50:.1} ms, p95 {a95:.1} ms");
    let (l50, l95, list) = timing("/ui/instances".into(), false).await?;
    println!("GET /ui/instances ({n} instances, first 50 shown): p50 {l50:.1} ms, p95 {l95:.1} ms");
    let last = n.div_ceil(50);
    let (g50, g95, _) = timing(format!("/ui/instances?page={last}"), false).await?;
    println!("GET /ui/instances?page={last}: p50 {g50:.1} ms, p95 {g95:.1} ms");

    // What a page weighs.
    let mut assets = 0;
    let mut assets_gz = 0;
    for a in ["berth.css", "htmx.min.js", "hx-sse.min.js"] {
        let b = http.get(format!("{url}/ui/assets/{a}")).send().await?.bytes().await?;
        assets += b.len();
        assets_gz += gzipped(&b)?;
    }
    println!("assets (stylesheet, htmx, hx-sse): {assets} bytes, {assets_gz} gzipped");
    let (_, _, catalogue) = timing("/ui/catalogue".into(), false).await?;
    for (name, page) in [("instance list (50 rows)", &list), ("catalogue", &catalogue)] {
        let gz = gzipped(page)?;
        println!(
            "{name}: {} + {assets} bytes, {} KB gzipped with everything it loads",
            page.len(),
            (gz + assets_gz).div_ceil(1024)
        );
    }

    let _ = driver.quit().await;
    let _ = chromedriver.kill();
    server.shutdown().await?;
    Ok(())
}
