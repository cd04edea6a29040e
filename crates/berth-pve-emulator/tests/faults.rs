//! Every `Fault` variant behaves like the real error it imitates, is consumed per matching request,
//! and the random fault rate produces transient failures.

mod common;

use std::time::Duration;

use berth_pve_emulator::{Fault, FaultRule};
use common::start;
use serde_json::json;

fn rule(method: Option<&str>, path: &str, fault: Fault, times: u32) -> FaultRule {
    FaultRule {
        method: method.map(str::to_string),
        path_contains: path.to_string(),
        fault,
        times,
    }
}

#[tokio::test]
async fn http_faults_answer_with_their_status_and_are_consumed() {
    let api = start().await;
    api.h.inject(rule(
        Some("GET"),
        "/cluster/resources",
        Fault::Http {
            status: 595,
            message: "Connection refused".into(),
        },
        1,
    ));
    api.h.inject(rule(
        None,
        "/tasks",
        Fault::Http {
            status: 596,
            message: "tls_process_server_certificate: certificate verify failed".into(),
        },
        1,
    ));
    api.h.inject(rule(
        None,
        "/nodes/pve2/qemu",
        Fault::Http {
            status: 599,
            message: "Too many redirections".into(),
        },
        1,
    ));
    let r = api.get("/cluster/resources").await;
    assert_eq!((r.status, r.reason.as_str()), (595, "Connection refused"));
    assert_eq!(r.body, json!({"data": null, "message": "Connection refused\n"}));
    assert_eq!(api.get("/cluster/resources").await.status, 200);
    let r = api.get("/nodes/pve1/tasks").await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (596, "tls_process_server_certificate: certificate verify failed")
    );
    assert_eq!(api.get("/nodes/pve2/qemu").await.status, 599);
    assert_eq!(api.get("/nodes/pve2/qemu").await.status, 200);
}

#[tokio::test]
async fn lock_timeout_names_the_config_lock() {
    let api = start().await;
    api.clone_9000(101, &[]).await;
    api.h.inject(rule(Some("PUT"), "/config", Fault::LockTimeout, 2));
    let r = api.put("/nodes/pve1/qemu/101/config", &[("cores", "2")]).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            500,
            "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
        )
    );
    // GETs do not match the PUT rule.
    assert_eq!(api.get("/nodes/pve1/qemu/101/config").await.status, 200);
    assert_eq!(
        api.put("/nodes/pve1/qemu/101/config", &[("cores", "2")]).await.status,
        500
    );
    assert_eq!(
        api.put("/nodes/pve1/qemu/101/config", &[("cores", "2")]).await.status,
        200
    );
    api.h.inject(rule(None, "/clone", Fault::LockTimeout, 1));
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "102")]).await;
    assert_eq!(
        r.reason,
        "can't lock file '/var/lock/qemu-server/lock-102.conf' - got timeout"
    );
    assert!(api.guest(102).is_none());
}

#[tokio::test]
async fn task_failure_on_clone_removes_the_partial_vm() {
    let api = start().await;
    let msg = "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout";
    api.h.inject(rule(
        Some("POST"),
        "/clone",
        Fault::TaskFailure { message: msg.into() },
        1,
    ));
    let upid = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "103")])
        .await
        .upid();
    let st = api.wait_task(&upid).await;
    assert_eq!(st["exitstatus"], msg);
    assert_eq!(api.task_log(&upid).await.last().unwrap(), &format!("TASK ERROR: {msg}"));
    assert!(api.guest(103).is_none());
    let r = api.get("/nodes/pve1/qemu/103/status/current").await;
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/103.conf' does not exist"
    );
    assert_eq!(api.get("/nodes/pve1/tasks?errors=1").await.body["total"], 1);
    // The next clone is unaffected.
    api.clone_9000(103, &[]).await;
}

#[tokio::test]
async fn task_warnings_are_success_with_warn_lines() {
    let api = start().await;
    api.clone_9000(104, &[]).await;
    api.h
        .inject(rule(None, "/status/start", Fault::TaskWarnings { count: 2 }, 1));
    let upid = api.post("/nodes/pve1/qemu/104/status/start", &[]).await.upid();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "WARNINGS: 2");
    let log = api.task_log(&upid).await;
    assert_eq!(log.iter().filter(|l| l.starts_with("WARN: ")).count(), 2);
    assert_eq!(log.last().unwrap(), "TASK WARNINGS: 2");
    assert_eq!(api.guest(104).unwrap().status, "running");
}

#[tokio::test]
async fn next_id_race_takes_the_id_first() {
    let api = start().await;
    api.h.inject(rule(None, "/clone", Fault::NextIdRace, 1));
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "150")]).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "unable to create VM 150: config file already exists")
    );
    let foreign = api.guest(150).expect("a foreign VM took the id");
    assert_eq!((foreign.node.as_str(), foreign.status.as_str()), ("pve1", "running"));
    api.h.inject(rule(Some("GET"), "/cluster/nextid", Fault::NextIdRace, 1));
    let r = api.get("/cluster/nextid?vmid=151").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"], json!({"vmid": "VM 151 already exists"}));
    api.h
        .inject(rule(Some("POST"), "/nodes/pve1/lxc", Fault::NextIdRace, 1));
    let form = [
        ("vmid", "152"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("rootfs", "local-lvm:4"),
    ];
    let r = api.post("/nodes/pve1/lxc", &form).await;
    assert_eq!(r.reason, "VM 152 already exists on node 'pve1'");
}

#[tokio::test]
async fn delay_still_answers() {
    let api = start().await;
    api.h.inject(rule(
        Some("GET"),
        "/version",
        Fault::Delay(Duration::from_millis(30)),
        1,
    ));
    let r = api.get("/version").await;
    assert_eq!(r.status, 200);
    assert!(api.h.requests().iter().any(|q| q.path == "/version" && q.status == 200));
}

/// `set_latency` holds every answer back at least that long (a real API's round trip).
#[tokio::test]
async fn latency_holds_every_answer_back() {
    let api = start().await;
    api.h.set_latency(Duration::from_millis(40));
    for _ in 0..2 {
        let t = std::time::Instant::now();
        assert_eq!(api.get("/version").await.status, 200);
        assert!(t.elapsed() >= Duration::from_millis(40), "{:?}", t.elapsed());
    }
}

#[tokio::test]
async fn no_worker_upid_starts_nothing() {
    let api = start().await;
    api.clone_9000(105, &[]).await;
    api.h
        .inject(rule(Some("POST"), "/status/start", Fault::NoWorkerUpid, 1));
    let r = api.post("/nodes/pve1/qemu/105/status/start", &[]).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "got no worker upid - start worker failed")
    );
    assert_eq!(api.guest(105).unwrap().status, "stopped");
    assert_eq!(api.h.running_tasks(), 0);
    let st = api
        .run_task(api.post("/nodes/pve1/qemu/105/status/start", &[]).await)
        .await;
    assert_eq!(st["exitstatus"], "OK");
}

#[tokio::test]
async fn random_faults_are_transient_and_clearable() {
    let api = start().await;
    api.clone_9000(106, &[]).await;
    api.h.set_fault_rate(1.0);
    let r = api.get("/version").await;
    assert_eq!(r.status, 595);
    let r = api.put("/nodes/pve1/qemu/106/config", &[("cores", "2")]).await;
    assert_eq!(
        r.reason,
        "can't lock file '/var/lock/qemu-server/lock-106.conf' - got timeout"
    );
    let upid = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "107")])
        .await
        .upid();
    api.h.set_fault_rate(0.0);
    let st = api.wait_task(&upid).await;
    assert!(st["exitstatus"].as_str().unwrap().starts_with("clone failed: "), "{st}");
    assert!(api.guest(107).is_none());
    api.h.inject(rule(None, "/version", Fault::NoWorkerUpid, 5));
    api.h.clear_faults();
    assert_eq!(api.get("/version").await.status, 200);
    assert_eq!(
        api.put("/nodes/pve1/qemu/106/config", &[("cores", "2")]).await.status,
        200
    );
}
