//! Load on the control plane: N simulated agents (spread over providers) long-poll for work
//! while customers order at a steady rate. Measures claim latency (order sent → agent holds the
//! claim) and API latency (order POSTs, instance GETs), on SQLite, PostgreSQL, or two server
//! replicas on one PostgreSQL. Everything runs in this process on loopback: the numbers include
//! the agents' and customers' own signing and HTTP work on the same cores.
//!
//! `cargo run --release -p berth-bench --bin control-bench -- --db sqlite|postgres|postgres2`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_api::client::{Auth, Client};
use berth_api::httpsig::RequestSigner;
use berth_api::wire::*;
use berth_store::{PgStore, Role, SqliteStore, Store};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// `sqlite`, `postgres` or `postgres2` (two server replicas on one PostgreSQL).
    #[arg(long, default_value = "sqlite")]
    db: String,
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents are spread evenly over this many providers.
    #[arg(long, default_value_t = 250)]
    providers: usize,
    /// Orders per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
const SSH: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let _pg;
    let stores: Vec<Arc<dyn Store>> = match args.db.as_str() {
        "sqlite" => vec![Arc::new(SqliteStore::open(&dir.path().join("bench.db")).await?)],
        "postgres" | "postgres2" => {
            let pg = berth_store::testpg::Postgres::start()
                .context("PostgreSQL cannot run here (needs root and postgresql)")?;
            let n = if args.db == "postgres2" { 2 } else { 1 };
            let mut v: Vec<Arc<dyn Store>> = Vec::new();
            for _ in 0..n {
                v.push(Arc::new(PgStore::connect(&pg.url).await?));
            }
            _pg = pg;
            v
        }
        other => anyhow::bail!("--db: {other:?} is not sqlite, postgres or postgres2"),
    };
    let operator = stores[0]
        .create_api_token(Role::Operator, "", "bench", berth_server::now_ms())
        .await?;
    let mut urls = Vec::new();
    let mut servers = Vec::new();
    for s in &stores {
        let mut cfg = berth_bench::server_config("listen = \"127.0.0.1:0\"", "sqlite = \"x\"")?;
        cfg.api.body_limit_bytes = 1 << 20;
        let running = berth_server::start(cfg, s.clone()).await?;
        urls.push(format!("http://{}", running.addr));
        servers.push(running);
    }
    let op = Client::new(&urls[0], Auth::Bearer(operator.secret));
    let cust = op.create_customer("bench").await?;

    // Providers, each with an offering and its share of the agents.
    let t_setup = Instant::now();
    let mut offerings = Vec::new();
    let mut agents = Vec::new();
    let hb = Heartbeat {
        version: "bench".into(),
        capacity: CapacityReport {
            cores_total: 100_000,
            cores_free: 100_000,
            memory_mib_total: 1 << 30,
            memory_mib_free: 1 << 30,
            disk_gib_total: 1 << 30,
            disk_gib_free: 1 << 30,
            unmetered: false,
        },
        backends: vec![],
        drift: vec![],
        site_drift: None,
        pools: Vec::new(),
    };
    let per = args.agents.div_ceil(args.providers);
    for p in 0..args.providers {
        let acc = op.create_provider(&format!("p{p}")).await?;
        let pc = Client::new(&urls[0], Auth::Bearer(acc.token));
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
        offerings.push(pc.create_offering(&spec).await?.id);
        for a in 0..per.min(args.agents - agents.len()) {
            let t = pc.create_enrollment_token(&acc.id, None).await?;
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let view = Client::new(&urls[0], Auth::None)
                .enroll(&t.token, &format!("a{a}"), &key)
                .await?;
            // Agents connect to the replicas in turn.
            let url = &urls[agents.len() % urls.len()];
            let c = Client::new(url, Auth::Signed(RequestSigner::new(key, view.id)));
            c.heartbeat(&hb).await?;
            agents.push(c);
        }
    }
    eprintln!(
        "setup: {} providers, {} agents in {:.1?}",
        args.providers,
        agents.len(),
        t_setup.elapsed()
    );

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let claims: Arc<Mutex<Vec<f64>>> = Default::default();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    let n_agents = agents.len();
    for (i, c) in agents.into_iter().enumerate() {
        let (sent, claims, stopping) = (sent.clone(), claims.clone(), stopping.clone());
        // Real agents start at different times: spread the first long-polls over 3 s, so their
        // 30 s waits do not all end together.
        let offset = Duration::from_millis(3000 * i as u64 / n_agents.max(1) as u64);
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match c.claim(Duration::from_secs(30)).await {
                    Ok(Some(w)) => {
                        let at = Instant::now();
                        // The order's POST may not have returned yet: wait for its start time.
                        let start = loop {
                            if let Some(t) = sent.lock().unwrap().get(&w.operation_id).copied() {
                                break t;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        };
                        claims
                            .lock()
                            .unwrap()
                            .push(at.duration_since(start).as_secs_f64() * 1000.0);
                        let _ = c
                            .complete(
                                &w.operation_id,
                                w.generation,
                                Completion::Succeeded(OpResult::default()),
                            )
                            .await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("agent: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    // Let every agent start its long-poll.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let customers: Vec<Client> = urls
        .iter()
        .map(|u| Client::new(u, Auth::Bearer(cust.token.clone())))
        .collect();
    let api: Arc<Mutex<Vec<f64>>> = Default::default();
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut orders = Vec::new();
    let t_run = Instant::now();
    for n in 0..total as usize {
        tick.tick().await;
        let c = customers[n % customers.len()].clone();
        let (sent, api) = (sent.clone(), api.clone());
        let offering = offerings[n % offerings.len()].clone();
        orders.push(tokio::spawn(async move {
            let order = CreateOrder {
                offering_id: offering,
                name: format!("vm{n}"),
                ssh_public_key: SSH.into(),
                requester_public_key: Some(AGE.into()),
                skip_post_provision: false,
                provision: true,
            };
            let t0 = Instant::now();
            // Registered before sending: the claim can arrive before the response.
            let r = c.create_order(&order, None).await;
            api.lock().unwrap().push(t0.elapsed().as_secs_f64() * 1000.0);
            match r {
                Ok(a) => {
                    sent.lock()
                        .unwrap()
                        .insert(a.operation_id.clone().unwrap_or_default(), t0);
                    let t1 = Instant::now();
                    if c.instance(&a.instance_id).await.is_ok() {
                        api.lock().unwrap().push(t1.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                Err(e) => eprintln!("order: {e}"),
            }
        }));
    }
    for o in orders {
        o.await?;
    }
    let offered = t_run.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while claims.lock().unwrap().len() < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut c = claims.lock().unwrap().clone();
    let mut a = api.lock().unwrap().clone();
    println!(
        "| {} | {} agents / {} providers | {}/s for {}s ({:.1}s) | {}/{} | {:.1} | {:.1} | {:.1} | {:.1} |",
        args.db,
        workers.len(),
        args.providers,
        args.rate,
        args.seconds,
        offered.as_secs_f64(),
        c.len(),
        total,
        pct(&mut c, 0.5),
        pct(&mut c, 0.99),
        pct(&mut a, 0.5),
        pct(&mut a, 0.99),
    );
    std::process::exit(0);
}
