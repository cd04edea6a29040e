//! Warm pools end to end: a real `berth agent` with `[[pool]]` against the Proxmox emulator and
//! a real control plane. Orders take ready machines (stopped and running pools), the pool refills;
//! a kill -9 at each step of taking or refilling leaves every machine in its pool or with exactly
//! one instance; a burst larger than the pool falls back to creates; a changed definition drains
//! and refills; pool machines count as used capacity; `berth agent drain` empties a pool.

mod browser;
mod common;
mod stack;

use std::time::{Duration, Instant};

use berth_api::wire::PoolReport;
use berth_pve_emulator::{GuestSnapshot, Timings};
use stack::{Db, Stack, run_berth};

const LONG: Duration = Duration::from_secs(60);

fn pool_toml(name: &str, ready: u32, mode: &str, disk: u64) -> String {
    format!(
        "[[pool]]\nname = \"{name}\"\ncores = 2\nmemory_mib = 2048\ndisk_gib = {disk}\nready = {ready}\nmode = \"{mode}\"\n"
    )
}

fn extra(pools: &str) -> String {
    format!("[polling]\nheartbeat_interval_seconds = 1\n{pools}")
}

/// The emulator's pool machines (carrying a pool tag).
fn pool_guests(s: &Stack) -> Vec<GuestSnapshot> {
    s.owned()
        .into_iter()
        .filter(|g| g.tags.iter().any(|t| t.starts_with("berth-pool.")))
        .collect()
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Waits until a heartbeat sent from now on reports the pool so that `ok` holds.
async fn until(s: &Stack, name: &str, what: &str, ok: impl Fn(&PoolReport) -> bool) -> PoolReport {
    let deadline = Instant::now() + LONG;
    let since = now_ms();
    loop {
        if let Some(p) = s.pool_report(name, since).await
            && ok(&p)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pool {name} never {what}: {:?}\n{}",
            s.pool_report(name, 0).await,
            s.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stack whose agent keeps `pools` (`[[pool]]` text), running, with pool `name` full at `ready`.
async fn filled(pools: &str, name: &str, ready: u32) -> Stack {
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), &extra(pools)).await.unwrap();
    s.spawn_agent();
    until(&s, name, "filled", |p| p.ready == ready).await;
    s
}

/// Polls `done` every 50 ms until it holds; `what` and the agent's log say why not after a minute.
async fn eventually(s: &Stack, what: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + LONG;
    while !done() {
        assert!(Instant::now() < deadline, "{}\n{}", what(), s.agent_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_take_ready_machines_and_the_pool_refills() {
    let mut s = filled(&pool_toml("small", 2, "stopped", 20), "small", 2).await;
    assert_eq!(pool_guests(&s).len(), 2);
    assert!(pool_guests(&s).iter().all(|g| g.status == "stopped"), "never booted");
    let clones_before = s.emu.requests().iter().filter(|r| r.path.ends_with("/clone")).count();

    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "web1").await;
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    let clone = op
        .stages
        .iter()
        .find(|st| st.stage == "clone_template")
        .expect("clone stage");
    assert!(
        clone
            .message
            .as_deref()
            .is_some_and(|m| m.contains("taken from pool small")),
        "{clone:?}"
    );
    let i = s.customer.instance(&a.instance_id).await.unwrap();
    assert_eq!(i.status, "running");
    assert!(i.ip_address.is_some());
    let mine = s.owned_by(&a.instance_id);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].name, "web1");
    assert!(
        mine[0].config.contains_key("sshkeys"),
        "the customer's key is cloud-init data"
    );
    // The pool makes up for it.
    let p = until(&s, "small", "refilled", |p| p.ready == 2 && p.hits == 1).await;
    assert_eq!(p.misses, 0);
    assert!(p.last_fill_ms.is_some());
    let clones = s.emu.requests().iter().filter(|r| r.path.ends_with("/clone")).count();
    assert_eq!(
        clones,
        clones_before + 1,
        "the order cloned nothing; the refill cloned one"
    );

    // Seen by `berth agent status` and on the provider's hypervisors page; doctor agrees.
    let cfg = s.agent_toml.display().to_string();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("[ ok ] warm pools") && text.contains("small: the backend keeps warm pools"),
        "{text}"
    );
    let out = run_berth(["agent", "status", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("small on proxmox: 2 ready wanted, stopped"), "{text}");
    assert!(
        text.contains("pool small: 2/2 ready, stopped, 1 hits, 0 misses"),
        "{text}"
    );
    let browser = browser::Browser::start(&s.url, "warm_pools").await;
    if let Some(b) = &browser {
        b.sign_in(&s.tokens.provider).await;
        b.goto("/ui/agents").await;
        b.wait_for(".pools").await;
        let text = b.text(".pools").await;
        assert!(
            text.contains("2 of 2 ready") && text.contains("small") && text.contains("1 taken"),
            "{text}"
        );
        b.shot("hypervisors-warm-pools").await;
        b.check_accessibility("hypervisors-warm-pools").await;
        b.set_width(360).await;
        b.shot("hypervisors-warm-pools-360px").await;
    }

    // Drained on request: the ready machines go, none are made; --undo fills it again.
    let out = run_berth(["agent", "drain", "--config", &cfg].map(String::from).to_vec()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until(&s, "small", "drained", |p| p.target == 0 && p.ready == 0).await;
    eventually(&s, || format!("{:?}", pool_guests(&s)), || pool_guests(&s).is_empty()).await;
    if let Some(b) = &browser {
        b.set_width(1280).await;
        b.goto("/ui/agents").await;
        b.wait_for(".pools").await;
        let text = b.text(".pools").await;
        assert!(text.contains("drained") && text.contains("small"), "{text}");
        b.shot("hypervisors-warm-pool-drained").await;
        b.check_accessibility("hypervisors-warm-pool-drained").await;
        // The operator sees every provider's pools the same way.
        b.sign_out().await;
        b.sign_in(&s.tokens.operator).await;
        b.goto("/ui/agents").await;
        b.wait_for(".pools").await;
        assert!(b.text(".pools").await.contains("drained"));
        b.shot("operator-hypervisors-warm-pool-drained").await;
        b.set_width(360).await;
        b.shot("operator-hypervisors-warm-pool-drained-360px").await;
    }
    let out = run_berth(
        ["agent", "drain", "--undo", "--config", &cfg]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(out.status.success());
    until(&s, "small", "filled again", |p| p.ready == 2).await;
    let bad = run_berth(
        ["agent", "drain", "--pool", "nope", "--config", &cfg]
            .map(String::from)
            .to_vec(),
    )
    .await;
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(
        !bad.status.success() && err.contains("--pool nope") && err.contains("small"),
        "{err}"
    );
    s.term_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pool_machine_carries_the_customers_key_and_name() {
    let mut s = filled(&pool_toml("hot", 1, "running", 20), "hot", 1).await;
    assert!(pool_guests(&s).iter().all(|g| g.status == "running"));
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "hot1").await;
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    let mine = s.owned_by(&a.instance_id);
    assert_eq!(mine.len(), 1, "{mine:?}");
    let keys = s
        .emu
        .guest_file(mine[0].vmid, "/home/berth/.ssh/authorized_keys")
        .expect("the key was put in through the guest agent");
    assert_eq!(keys.trim(), common::KEY);
    assert_eq!(
        s.emu.guest_file(mine[0].vmid, "/etc/hostname").as_deref(),
        Some("hot1\n")
    );
    s.term_agent().await;
}

/// kill -9 at each step of a take (journaled, taken) and of a refill (recorded, made): after
/// the restart the order succeeded with exactly one machine, and the pool is whole again, with
/// no machine left half-made or in two places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_taking_or_refilling_loses_nothing() {
    let mut s = Stack::start(
        Db::Sqlite,
        Timings::fast(),
        &extra(&pool_toml("small", 1, "stopped", 20)),
    )
    .await
    .unwrap();
    let offering = s.offering(&[]).await;
    for (n, point) in ["pool_take_recorded", "pool_taken", "pool_fill_recorded", "pool_filled"]
        .into_iter()
        .enumerate()
    {
        // An order takes the ready machine (the take failpoints strike), and the pool refills
        // (the fill ones do).
        s.spawn_agent_with(&[("BERTH_AGENT_FAILPOINT", point)]);
        s.wait_agent_alive().await;
        until(&s, "small", "filled", |p| p.ready == 1).await;
        let a = s.order(&offering, &format!("crash{n}")).await;
        eprintln!("== {point}: waiting for the abort");
        let log = s.dir.path().join("agent.log");
        let exit = tokio::time::timeout(LONG, s.agent_exit()).await;
        let exit = exit.unwrap_or_else(|_| {
            panic!(
                "{point} never aborted the agent\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        assert!(!exit.success(), "{point} aborts the agent\n{}", s.agent_log());
        eprintln!("== {point}: aborted");
        s.spawn_agent();
        let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
        assert_eq!(op.status, "succeeded", "{point}: {op:#?}\n{}", s.agent_log());
        assert_eq!(s.owned_by(&a.instance_id).len(), 1, "{point}: {:?}", s.owned());
        until(&s, "small", "whole again", |p| p.ready == 1 && p.filling == 0).await;
        // A pool machine without its pool tag was cut off half-made.
        let loose = || -> Vec<GuestSnapshot> {
            s.owned()
                .into_iter()
                .filter(|g| g.tags.iter().all(|t| !t.starts_with("berth-pool.")))
                .filter(|g| g.description.contains("berth-instance-id: pool-"))
                .collect()
        };
        eventually(
            &s,
            || format!("{point}: pool {:?}, loose {:?}", pool_guests(&s), loose()),
            || pool_guests(&s).len() == 1 && loose().is_empty(),
        )
        .await;
        // Every guest is the pool's or one instance's.
        s.kill_agent();
    }
}

/// A burst larger than the pool: the ready machines are taken, the rest are created (misses),
/// every order succeeds, and the pool refills afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_pool_falls_back_to_creates_and_the_pool_catches_up() {
    let mut s = filled(&pool_toml("small", 2, "stopped", 20), "small", 2).await;
    let offering = s.offering(&[]).await;
    let mut ops = Vec::new();
    for n in 0..5 {
        ops.push(s.order(&offering, &format!("burst{n}")).await);
    }
    for a in &ops {
        let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
        assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
        assert_eq!(s.owned_by(&a.instance_id).len(), 1);
    }
    let p = until(&s, "small", "caught up", |p| p.ready == 2 && p.hits + p.misses == 5).await;
    assert!(p.hits >= 2 && p.hits + p.misses == 5, "{p:?}");
    s.term_agent().await;
}

/// A pool machine not in the state its pool keeps (a stopped pool's machine someone started) is
/// replaced, not handed out and not left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_not_as_its_pool_keeps_it_is_replaced() {
    let mut s = filled(&pool_toml("small", 2, "stopped", 20), "small", 2).await;
    let started = pool_guests(&s)[0].clone();
    let id = started
        .description
        .lines()
        .find_map(|l| l.strip_prefix("berth-instance-id: "))
        .unwrap()
        .trim()
        .to_owned();
    let cfg = s.agent_toml.display().to_string();
    let out = run_berth(["vm", "start", &id, "--config", &cfg].map(String::from).to_vec()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(
        &s,
        || format!("{:?}", pool_guests(&s)),
        || {
            let pooled = pool_guests(&s);
            pooled.len() == 2 && pooled.iter().all(|g| g.status == "stopped" && g.vmid != started.vmid)
        },
    )
    .await;
    assert!(
        s.agent_log().contains("not stopped as the pool keeps it"),
        "{}",
        s.agent_log()
    );
    s.term_agent().await;
}

/// A changed definition (here the disk) drains the machines made to the old one and refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_definition_drains_and_refills() {
    let mut s = filled(&pool_toml("small", 2, "stopped", 20), "small", 2).await;
    let pool_tags = |s: &Stack| -> Vec<String> {
        pool_guests(s)
            .iter()
            .flat_map(|g| g.tags.clone())
            .filter(|t| t.starts_with("berth-pool."))
            .collect()
    };
    let old = pool_tags(&s);
    s.term_agent().await;
    let toml = std::fs::read_to_string(&s.agent_toml)
        .unwrap()
        .replace("disk_gib = 20", "disk_gib = 10");
    std::fs::write(&s.agent_toml, toml).unwrap();
    s.spawn_agent();
    eventually(
        &s,
        || format!("old {old:?}, now {:?}", pool_tags(&s)),
        || {
            let tags = pool_tags(&s);
            tags.len() == 2 && tags.iter().all(|t| !old.contains(t))
        },
    )
    .await;
    s.term_agent().await;
}

/// A backend that cannot keep pools says so: doctor fails, the agent creates every order and
/// reports why the pool is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_without_pools_says_so() {
    let Some(mut s) = Stack::manual(Db::Sqlite, Timings::fast()).await else {
        return;
    };
    s.kill_agent();
    let toml = format!(
        "{}
{}",
        std::fs::read_to_string(&s.agent_toml).unwrap(),
        pool_toml("small", 1, "stopped", 20)
    );
    std::fs::write(&s.agent_toml, toml).unwrap();
    let cfg = s.agent_toml.display().to_string();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("[FAIL] warm pools") && text.contains("the manual backend cannot keep warm pools"),
        "{text}"
    );
    s.spawn_agent();
    let p = until(&s, "small", "said why it is empty", |p| p.detail.is_some()).await;
    assert!(p.detail.unwrap().contains("cannot keep warm pools"));
    assert_eq!(p.ready, 0);
    // The provider sees why on the hypervisors page.
    if let Some(b) = browser::Browser::start(&s.url, "warm_pools_unsupported").await {
        b.sign_in(&s.tokens.provider).await;
        b.goto("/ui/agents").await;
        b.wait_for(".pools").await;
        let text = b.text(".pools").await;
        assert!(
            text.contains("0 of 1 ready") && text.contains("cannot keep warm pools"),
            "{text}"
        );
        b.shot("hypervisors-warm-pool-unsupported").await;
        b.check_accessibility("hypervisors-warm-pool-unsupported").await;
        b.set_width(360).await;
        b.shot("hypervisors-warm-pool-unsupported-360px").await;
    }
    s.term_agent().await;
}

/// Pool machines are used capacity: with room for four 2-core machines under the threshold and
/// three in the pool, the control plane admits no order the host could not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_machines_count_as_used_capacity() {
    let pools = format!(
        "[capacity]\ncores = 8\nmemory_mib = 262144\ndisk_gib = 10000\ncpu_threshold = 100\n{}",
        pool_toml("small", 3, "stopped", 20)
    );
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), &extra(&pools)).await.unwrap();
    s.spawn_agent();
    until(&s, "small", "filled", |p| p.ready == 3).await;
    let deadline = Instant::now() + LONG;
    loop {
        let agents = s.provider.agents().await.unwrap();
        let c = &agents[0].heartbeat.as_ref().unwrap().capacity;
        if c.cores_free == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.term_agent().await;
}
