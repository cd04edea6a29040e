//! End to end: orders become running machines through the control plane, a real `berth agent`
//! process and the Proxmox VE emulator; and the agent survives kill -9 in every stage, a
//! control-plane crash, SIGTERM, and a steady rate of backend faults, without a second VM, an
//! orphan or a lost order. The agent talks to the real server routes through the typed client,
//! so this is also the contract test between the two.

mod common;
mod stack;

use std::time::Duration;

use berth_api::wire::*;
use stack::{Db, Stack, paced};

const LONG: Duration = Duration::from_secs(90);

fn stage<'a>(op: &'a OperationView, name: &str) -> Option<&'a StageView> {
    op.stages.iter().find(|s| s.stage == name)
}

async fn order_to_running_and_back(db: Db) {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n[polling]\nheartbeat_interval_seconds = 1\n");
    let Some(mut s) = Stack::start(db, berth_pve_emulator::Timings::fast(), &extra).await else {
        eprintln!("skipped: no PostgreSQL here");
        return;
    };
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "web1").await;
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    for name in ["clone_template", "configure_vm", "start_vm", "wait_network", "register"] {
        let st = stage(&op, name).unwrap_or_else(|| panic!("no stage {name}: {op:#?}"));
        assert_eq!(st.status, "completed", "{st:?}");
    }
    let i = s.customer.instance(&a.instance_id).await.unwrap();
    assert_eq!(i.status, "running");
    assert_eq!(i.hypervisor.as_deref(), Some("pve1"));
    assert!(
        i.ip_address
            .as_deref()
            .is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()),
        "{i:?}"
    );
    assert_eq!(i.ssh_port, Some(22));
    // Who to log in as (cloud-init's user, the backend's `ci_user`), and how, ready to paste.
    assert_eq!(i.login_user.as_deref(), Some("berth"));
    assert_eq!(
        i.ssh_command(),
        Some(format!("ssh berth@{}", i.ip_address.as_deref().unwrap()))
    );
    let vms = s.owned_by(&a.instance_id);
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(vms[0].status, "running");
    assert_eq!(i.vm_id.as_deref(), Some(vms[0].vmid.to_string().as_str()));

    // Every other kind of operation, through the same loop.
    let run = |action: &'static str| {
        let c = s.customer.clone();
        let id = a.instance_id.clone();
        async move { c.instance_action(&id, action).await.unwrap().operation_id.unwrap() }
    };
    let op = s.finished(&run("stop").await, LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}");
    assert_eq!(s.owned_by(&a.instance_id)[0].status, "stopped");
    let op = s.finished(&run("start").await, LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}");
    assert_eq!(s.owned_by(&a.instance_id)[0].status, "running");
    let r = s
        .customer
        .reconfigure(
            &a.instance_id,
            &Reconfigure {
                cores: Some(4),
                ..Reconfigure::default()
            },
        )
        .await
        .unwrap();
    let op = s.finished(r.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}");
    assert_eq!(s.customer.instance(&a.instance_id).await.unwrap().cores, 4);
    let op = s.finished(&run("terminate").await, LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}");
    assert_eq!(s.customer.instance(&a.instance_id).await.unwrap().status, "terminated");
    assert!(s.owned().is_empty(), "{:?}", s.owned());

    // The agent's metrics: operations by kind and result, lease renewals, backend calls.
    let body = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"berth_operations_total{kind="provision",result="succeeded"} 1"#,
        r#"berth_operations_total{kind="terminate",result="succeeded"} 1"#,
        "berth_stage_duration_seconds",
        "berth_backend_calls_total",
        "berth_heartbeats_total",
    ] {
        assert!(body.contains(needle), "metrics lack {needle}:\n{body}");
    }
    // Every family says what it is, and series nothing has happened to yet are there at zero.
    for family in body.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split_whitespace().next().unwrap();
        assert!(body.contains(&format!("# HELP {name} ")), "{name} has no HELP:\n{body}");
    }
    assert!(
        body.contains(r#"berth_operations_total{kind="reboot",result="failed"} 0"#),
        "{body}"
    );
    assert!(body.contains(r#"berth_claims_total{result="error"} 0"#), "{body}");
    // Its heartbeat: capacity of the emulated node, the backend healthy.
    let agents = s.provider.agents().await.unwrap();
    let hb = agents[0].heartbeat.as_ref().expect("a heartbeat");
    assert!(hb.capacity.cores_total > 0, "{hb:?}");
    assert!(hb.backends.iter().all(|b| b.healthy), "{hb:?}");
    s.kill_agent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_to_running_and_back_on_sqlite() {
    order_to_running_and_back(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_to_running_and_back_on_postgres() {
    order_to_running_and_back(Db::Postgres).await;
}

/// kill -9 inside each stage of the backend's work; the restarted agent finishes the same
/// order: one machine per instance, every instance running, nothing else in the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_every_stage_resumes_with_one_vm() {
    let mut s = Stack::start(Db::Sqlite, paced(), "").await.unwrap();
    let offering = s.offering(&[]).await;
    let stages = ["clone_template", "configure_vm", "start_vm", "wait_network"];
    let mut instances = Vec::new();
    for (n, at) in stages.iter().enumerate() {
        s.spawn_agent();
        s.wait_agent_alive().await;
        let a = s.order(&offering, &format!("vm{n}")).await;
        let op = a.operation_id.clone().unwrap();
        s.in_stage(&op, at).await;
        s.kill_agent();
        s.spawn_agent();
        let done = s.finished(&op, LONG).await;
        assert_eq!(done.status, "succeeded", "killed in {at}: {done:#?}\n{}", s.agent_log());
        assert_eq!(s.owned_by(&a.instance_id).len(), 1, "killed in {at}: {:?}", s.owned());
        assert_eq!(s.customer.instance(&a.instance_id).await.unwrap().status, "running");
        s.kill_agent();
        instances.push(a.instance_id);
    }
    assert_eq!(s.owned().len(), stages.len(), "no orphan: {:?}", s.owned());
}

/// Killed after the outcome is journaled but before the control plane has it: the restarted
/// agent delivers it without touching the backend again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_outcome_and_completion_delivers_it_after_restart() {
    let mut s = Stack::start(Db::Sqlite, berth_pve_emulator::Timings::fast(), "")
        .await
        .unwrap();
    let offering = s.offering(&[]).await;
    s.spawn_agent_with(&[("BERTH_AGENT_FAILPOINT", "before_complete")]);
    s.wait_agent_alive().await;
    let a = s.order(&offering, "web1").await;
    let status = s.agent_exit().await;
    assert!(!status.success(), "the failpoint aborts the agent");
    let clones_before = s.emu.requests().iter().filter(|r| r.path.ends_with("/clone")).count();
    assert_eq!(clones_before, 1);
    s.spawn_agent();
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    assert_eq!(s.owned_by(&a.instance_id).len(), 1);
    let clones = s.emu.requests().iter().filter(|r| r.path.ends_with("/clone")).count();
    assert_eq!(clones, 1, "the machine was not made again");
}

/// The control plane dies mid-operation and comes back on the same database: the agent kept
/// working, delivers its reports and the outcome, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_operation_loses_nothing() {
    let mut s = Stack::start(Db::Sqlite, paced(), "").await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "web1").await;
    let op = a.operation_id.clone().unwrap();
    s.in_stage(&op, "clone_template").await;
    s.kill_server().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.start_server().await;
    let done = s.finished(&op, LONG).await;
    assert_eq!(done.status, "succeeded", "{done:#?}\n{}", s.agent_log());
    assert_eq!(s.owned_by(&a.instance_id).len(), 1, "{:?}", s.owned());
    assert_eq!(s.customer.instance(&a.instance_id).await.unwrap().status, "running");
}

/// SIGTERM: the agent stops claiming, checkpoints the running work and releases its lease
/// (grace 0), exits cleanly; the next agent run finishes the order with the same machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_releases_and_the_work_resumes() {
    let mut s = Stack::start(Db::Sqlite, paced(), "shutdown_grace_seconds = 0\n")
        .await
        .unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "web1").await;
    let op = a.operation_id.clone().unwrap();
    s.in_stage(&op, "start_vm").await;
    let status = s.term_agent().await;
    assert!(status.success(), "clean exit: {status:?}\n{}", s.agent_log());
    assert!(s.agent_log().contains("checkpointed and released"), "{}", s.agent_log());
    assert_eq!(
        s.customer.operation(&op).await.unwrap().status,
        "queued",
        "released at once"
    );
    s.spawn_agent();
    let done = s.finished(&op, LONG).await;
    assert_eq!(done.status, "succeeded", "{done:#?}");
    assert_eq!(s.owned_by(&a.instance_id).len(), 1);
}

/// Transient backend faults (5xx, lock timeouts, failed tasks) on a tenth of the requests:
/// every order ends running or failed with a reason, no instance has two machines, and a
/// failed one leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_faults_end_every_order_cleanly() {
    let mut s = Stack::start(Db::Sqlite, berth_pve_emulator::Timings::fast(), "concurrency = 4\n")
        .await
        .unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    s.emu.set_fault_rate(0.1);
    let mut orders = Vec::new();
    for n in 0..8 {
        orders.push(s.order(&offering, &format!("f{n}")).await);
    }
    let mut running = 0;
    for a in &orders {
        let op = s
            .finished(a.operation_id.as_deref().unwrap(), Duration::from_secs(180))
            .await;
        let vms = s.owned_by(&a.instance_id);
        match op.status.as_str() {
            "succeeded" => {
                running += 1;
                assert_eq!(vms.len(), 1, "{vms:?}");
            }
            _ => {
                let e = op.error.as_ref().expect("a failure says why");
                assert!(!e.code.is_empty() && !e.message.is_empty(), "{e:?}");
                assert!(vms.is_empty(), "a failed order left {vms:?}");
            }
        }
    }
    s.emu.set_fault_rate(0.0);
    let faults = s.emu.requests().iter().filter(|r| r.status >= 500).count();
    assert!(faults > 0, "the emulator injected faults");
    assert_eq!(s.owned().len(), running, "{:?}", s.owned());
    assert!(running > 0, "with retries most orders get through");
}

/// The agent is frozen past its lease (SIGSTOP for longer than the 6 s lease): on waking, it
/// finds the lease's time over (or its renewal refused), stops that work cleanly, the operation
/// is claimed again and finished from the journal, with one machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_work_and_it_is_finished_once() {
    let mut s = Stack::start(Db::Sqlite, paced(), "").await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "web1").await;
    let op = a.operation_id.clone().unwrap();
    s.in_stage(&op, "clone_template").await;
    s.signal_agent(rustix::process::Signal::STOP);
    tokio::time::sleep(Duration::from_secs(9)).await;
    s.signal_agent(rustix::process::Signal::CONT);
    let done = s.finished(&op, LONG).await;
    assert_eq!(done.status, "succeeded", "{done:#?}\n{}", s.agent_log());
    let log = s.agent_log();
    assert!(
        log.contains("lease lost") || log.contains("lease is gone") || log.contains("ran out without a renewal"),
        "{log}"
    );
    assert_eq!(s.owned_by(&a.instance_id).len(), 1, "{:?}", s.owned());
}
