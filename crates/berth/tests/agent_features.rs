//! The agent's other duties, end to end: post-provision commands inside the guest, reconcile
//! (drift and orphans), the host's thresholds, credentials sealed to the customer, and
//! `berth doctor` on an agent's file.

mod common;
mod stack;

use std::time::{Duration, Instant};

use berth_api::wire::*;
use berth_pve_emulator::Timings;
use stack::{AGE_ID, Db, Stack, run_berth};

const LONG: Duration = Duration::from_secs(90);

async fn drift_of(s: &Stack, instance: &str, kind: &str) -> Drift {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = s.provider.agents().await.unwrap();
        if let Some(d) = agents
            .iter()
            .filter_map(|a| a.heartbeat.as_ref())
            .flat_map(|h| h.drift.iter())
            .find(|d| d.instance_id == instance && d.kind == kind)
        {
            return d.clone();
        }
        assert!(
            Instant::now() < until,
            "no {kind} drift for {instance}: {agents:#?}\n{}",
            s.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A machine carrying Berth's marker for an instance id of the control plane's form that the
/// control plane does not know (its database restored from before the machine was made, say).
fn make_stray(s: &Stack, vmid: u32) -> String {
    let id = berth_core::InstanceId::generate().to_string();
    s.emu.add_marked_vm("pve1", vmid, "stray", &id);
    id
}

/// The offering's commands run in the guest once it is reachable, each once, in order; their
/// exit status and output tail are on the operation. A failing command fails the order with
/// its output and the machine is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_provision_commands_are_recorded_and_a_failure_cleans_up() {
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), "").await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let good = s.offering(&["echo hello from the guest", "printf 'two\\n' >&2"]).await;
    let a = s.order(&good, "web1").await;
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    let runs = &op.result.as_ref().unwrap().commands;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].exit_status, 0);
    assert_eq!(runs[0].output_tail, "hello from the guest\n");
    assert_eq!(runs[1].output_tail, "two\n");
    assert!(
        op.stages
            .iter()
            .any(|st| st.stage == "post_provision" && st.status == "completed")
    );

    let bad = s
        .offering(&["echo fine", "echo broken >&2; exit 3", "echo never"])
        .await;
    let b = s.order(&bad, "web2").await;
    let op = s.finished(b.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "failed", "{op:#?}");
    let e = op.error.unwrap();
    assert_eq!(e.code, "post_provision_failed");
    assert!(e.message.contains("exited 3") && e.message.contains("broken"), "{e:?}");
    assert!(s.owned_by(&b.instance_id).is_empty(), "cleaned up: {:?}", s.owned());
    assert_eq!(s.customer.instance(&b.instance_id).await.unwrap().status, "failed");
}

/// Killed right after a command ran: the restarted agent does not run it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ran_is_not_run_again_after_a_crash() {
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), "").await.unwrap();
    let tally = s.dir.path().join("tally");
    let first = format!("echo first >> {}", tally.display());
    let second = format!("echo second >> {}", tally.display());
    let offering = s.offering(&[&first, &second]).await;
    s.spawn_agent_with(&[("BERTH_AGENT_FAILPOINT", "after_command")]);
    s.wait_agent_alive().await;
    let a = s.order(&offering, "web1").await;
    assert!(!s.agent_exit().await.success());
    s.spawn_agent();
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    assert_eq!(
        std::fs::read_to_string(&tally).unwrap(),
        "first\nsecond\n",
        "each command ran once"
    );
    assert_eq!(op.result.unwrap().commands.len(), 2);
    assert_eq!(s.owned_by(&a.instance_id).len(), 1);
}

/// Reconcile: a Berth-owned machine the control plane does not know is stopped and reported
/// as an orphan (not deleted); a machine stopped behind the control plane's back is drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_quarantines_orphans_and_reports_drift() {
    let extra = "[polling]\nheartbeat_interval_seconds = 1\nreconcile_interval_seconds = 1\n";
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), extra).await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let cfg = s.agent_toml.display().to_string();
    let orphan = make_stray(&s, 4201);
    let d = drift_of(&s, &orphan, "orphan").await;
    assert!(d.detail.unwrap().contains("no such instance"));
    let until = Instant::now() + Duration::from_secs(20);
    while s.owned_by(&orphan)[0].status != "stopped" {
        assert!(Instant::now() < until, "the orphan was not stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.owned_by(&orphan).len(), 1, "kept, not deleted");

    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "web1").await;
    assert_eq!(
        s.finished(a.operation_id.as_deref().unwrap(), LONG).await.status,
        "succeeded"
    );
    let stopped = run_berth(
        ["vm", "stop", &a.instance_id, "--config", &cfg]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    drift_of(&s, &a.instance_id, "stopped").await;
    assert_eq!(s.owned_by(&a.instance_id).len(), 1, "drift is reported, not acted on");
}

/// An operator takes a quarantined machine over with `berth agent release`: the running agent
/// stops reporting it and, once it is started by hand, leaves it running over later passes.
/// Only a machine in quarantine can be released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_orphan_is_left_alone() {
    let extra = "[polling]\nheartbeat_interval_seconds = 1\nreconcile_interval_seconds = 1\n";
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), extra).await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let cfg = s.agent_toml.display().to_string();
    let berth = |args: &[&str]| {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(["--config".into(), cfg.clone()]);
        run_berth(a)
    };
    let orphan = make_stray(&s, 4203);
    drift_of(&s, &orphan, "orphan").await;
    let until = Instant::now() + Duration::from_secs(20);
    while s.owned_by(&orphan)[0].status != "stopped" {
        assert!(Instant::now() < until, "the orphan was not stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = berth(&["agent", "status"]).await;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains(&format!("  {orphan} on ")), "{text}");

    let other = berth_core::InstanceId::generate().to_string();
    let refused = berth(&["agent", "release", &other]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not in this agent's quarantine"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let released = berth(&["agent", "release", &orphan]).await;
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );

    // The next pass no longer reports it.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let reported = s
            .provider
            .agents()
            .await
            .unwrap()
            .iter()
            .filter_map(|a| a.heartbeat.as_ref())
            .flat_map(|h| h.drift.iter())
            .any(|d| d.instance_id == orphan);
        if !reported {
            break;
        }
        assert!(Instant::now() < until, "still reported\n{}", s.agent_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Started by hand, it stays running over later passes.
    let started = berth(&["vm", "start", &orphan, "--timeout", "0s"]).await;
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.owned_by(&orphan)[0].status, "running", "{}", s.agent_log());
    let text = String::from_utf8_lossy(&berth(&["agent", "status"]).await.stdout).into_owned();
    assert!(
        text.contains("quarantine: empty") && text.contains(&format!("released: {orphan}")),
        "{text}"
    );
}

/// A metrics address the configuration names is meant: taken, the agent does not start and
/// says why (the default address taken only costs the metrics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_metrics_address_that_is_taken_stops_the_start() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let extra = format!("metrics_listen = \"127.0.0.1:{port}\"\n");
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), &extra).await.unwrap();
    s.spawn_agent();
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = s.agent_exited() {
            break status;
        }
        assert!(Instant::now() < until, "the agent kept running\n{}", s.agent_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    assert!(
        s.agent_log()
            .contains(&format!("cannot listen for metrics on 127.0.0.1:{port}")),
        "{}",
        s.agent_log()
    );
    drop(held);
}

/// With `delete_orphans` and no grace, an orphan is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_deleted_only_when_configured_after_the_grace() {
    let extra =
        "[polling]\nreconcile_interval_seconds = 1\n[reconcile]\ndelete_orphans = true\norphan_grace_seconds = 2\n";
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), extra).await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let orphan = make_stray(&s, 4202);
    let found = Instant::now();
    let until = found + Duration::from_secs(30);
    while !s.owned_by(&orphan).is_empty() {
        assert!(
            Instant::now() < until,
            "the orphan was never deleted\n{}",
            s.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found.elapsed() >= Duration::from_secs(2), "not before the grace period");
}

/// A machine made with `berth vm create` on the backend a running agent drives is not the
/// agent's: over several reconcile passes, with `delete_orphans` and no grace, it keeps running
/// and is never reported; the CLI says an agent drives the backend, and refuses an id of the
/// control plane's form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_made_by_the_cli_next_to_an_agent_are_left_alone() {
    let extra = "[polling]\nheartbeat_interval_seconds = 1\nreconcile_interval_seconds = 1\n\
                 [reconcile]\ndelete_orphans = true\norphan_grace_seconds = 0\n";
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), extra).await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let cfg = s.agent_toml.display().to_string();
    let create = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "vm",
            "create",
            "--name",
            "byhand",
            "--ssh-key",
            common::KEY,
            "--config",
            &cfg,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        run_berth(args)
    };
    let made = create(&["--output", "json"]).await;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let note = String::from_utf8_lossy(&made.stderr);
    assert!(
        note.contains("an agent of") && note.contains("leaves it alone"),
        "{note}"
    );
    let vm: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let id = vm["instance_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("vm-"), "{vm}");
    // A stray of the control plane's form is found and deleted meanwhile: reconcile ran.
    let orphan = make_stray(&s, 4203);
    let until = Instant::now() + Duration::from_secs(30);
    while !s.owned_by(&orphan).is_empty() {
        assert!(
            Instant::now() < until,
            "the orphan was never deleted\n{}",
            s.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mine = s.owned_by(&id);
    assert_eq!(mine.len(), 1, "{}", s.agent_log());
    assert_eq!(mine[0].status, "running", "{}", s.agent_log());
    let agents = s.provider.agents().await.unwrap();
    let reported: Vec<_> = agents
        .iter()
        .filter_map(|a| a.heartbeat.as_ref())
        .flat_map(|h| h.drift.iter())
        .filter(|d| d.instance_id == id)
        .collect();
    assert!(reported.is_empty(), "{reported:?}");

    let uuid = berth_core::InstanceId::generate().to_string();
    let refused = create(&["--instance-id", &uuid]).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("instance_id") && err.contains("control plane"), "{err}");
    assert!(s.owned_by(&uuid).is_empty());
}

/// A host at its threshold: the heartbeat's capacity makes the control plane refuse the next
/// order (`no_capacity`), and the agent itself refuses what would cross its threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_host_gets_no_more_work() {
    let extra =
        "[polling]\nheartbeat_interval_seconds = 1\n[capacity]\ncores = 4\nmemory_mib = 65536\ndisk_gib = 1000\n";
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), extra).await.unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await; // 2 cores: 4 × 90 % leaves room for one
    let a = s.order(&offering, "web1").await;
    assert_eq!(
        s.finished(a.operation_id.as_deref().unwrap(), LONG).await.status,
        "succeeded"
    );
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s
            .customer
            .create_order(
                &CreateOrder {
                    offering_id: offering.clone(),
                    name: "web2".into(),
                    ssh_public_key: common::KEY.into(),
                    requester_public_key: Some(stack::age_public()),
                    skip_post_provision: false,
                    provision: true,
                },
                None,
            )
            .await;
        match r {
            Err(e) if e.code() == Some("no_capacity") => break,
            Err(e) => panic!("{e}"),
            Ok(accepted) => {
                // The heartbeat had not caught up yet; then the agent refuses it itself.
                let op = s.finished(accepted.operation_id.as_deref().unwrap(), LONG).await;
                assert_eq!(op.status, "failed", "{op:#?}");
                assert_eq!(op.error.unwrap().code, "quota_exceeded");
                assert!(s.owned_by(&accepted.instance_id).is_empty());
            }
        }
        assert!(Instant::now() < until, "the control plane kept taking orders");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let hb = s.provider.agents().await.unwrap()[0].heartbeat.clone().unwrap();
    assert_eq!(hb.capacity.cores_total, 4);
    assert_eq!(hb.capacity.cores_free, 2);
}

/// The example script backend as README shows it (no `[capacity]`), keeping its state in `dir`.
fn script_backend(dir: &std::path::Path) -> String {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/script-backend/berth_backend.py");
    format!(
        "[provisioner]\ntype = \"script\"\n\n[provisioner.script]\ncommand = \"{}\"\ntimeout_seconds = 30\nenv = {{ BERTH_EXAMPLE_STATE = \"{}\" }}\n",
        example.display(),
        dir.display()
    )
}

/// A script backend cannot tell its host's totals: without `[capacity]` it is unmetered (orders
/// are not limited) and `berth doctor` warns so; a `[capacity]` missing a figure would refuse
/// every order and fails; a whole one shows the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_what_limits_a_backend_that_cannot_tell_its_capacity() {
    let scratch = tempfile::tempdir().unwrap();
    let s = Stack::start_with_backend(Db::Sqlite, Timings::fast(), Some(script_backend(scratch.path())), "")
        .await
        .unwrap();
    let cfg = s.agent_toml.display().to_string();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text.lines().find(|l| l.contains("capacity")).unwrap_or_default();
    assert!(
        line.starts_with("[warn]") && line.contains("without a capacity check") && line.contains("[capacity]"),
        "{text}"
    );

    let plain = std::fs::read_to_string(&s.agent_toml).unwrap();
    std::fs::write(&s.agent_toml, format!("{plain}\n[capacity]\ncores = 8\n")).unwrap();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    let line = text.lines().find(|l| l.contains("capacity")).unwrap_or_default();
    assert!(
        line.starts_with("[FAIL]") && line.contains("no_capacity") && line.contains("memory_mib"),
        "{text}"
    );

    let with = format!("{plain}\n[capacity]\ncores = 8\nmemory_mib = 16384\ndisk_gib = 200\n");
    std::fs::write(&s.agent_toml, with).unwrap();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text.lines().find(|l| l.contains("capacity")).unwrap_or_default();
    assert!(line.starts_with("[ ok ]") && line.contains("cores"), "{text}");
}

/// A script backend's generated root password reaches the customer only as age ciphertext, and
/// `berth instance credentials` opens it with the customer's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sealed_to_the_requester() {
    let scratch = tempfile::tempdir().unwrap();
    let backend = script_backend(scratch.path());
    let extra = "[capacity]\ncores = 64\nmemory_mib = 262144\ndisk_gib = 10000\n";
    let mut s = Stack::start_with_backend(Db::Sqlite, Timings::fast(), Some(backend), extra)
        .await
        .unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "web1").await;
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    let i = s.customer.instance(&a.instance_id).await.unwrap();
    let sealed = i.credentials.expect("credentials");
    assert!(sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"), "{sealed}");
    let machine: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(scratch.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "json"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let password = machine["root_password"].as_str().unwrap().to_owned();
    assert!(!sealed.contains(&password));
    assert!(!s.agent_log().contains(&password), "the agent never logs it");

    let identity = s.dir.path().join("me.agekey");
    std::fs::write(&identity, format!("{AGE_ID}\n")).unwrap();
    let token = s.dir.path().join("customer.token");
    std::fs::write(&token, s.customer.bearer_token().unwrap()).unwrap();
    let out = run_berth(vec![
        "instance".into(),
        "credentials".into(),
        a.instance_id.clone(),
        "--identity".into(),
        identity.display().to_string(),
        "--server".into(),
        s.url.clone(),
        "--token-file".into(),
        token.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("password {password}")), "{text}");
}

/// `berth doctor` on the agent's file: the key, the enrollment, the control plane knowing the
/// key, and the backend; a revoked agent fails the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_agent_side() {
    let s = Stack::start(Db::Sqlite, Timings::fast(), "").await.unwrap();
    let cfg = s.agent_toml.display().to_string();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("control plane") && text.contains("knows this key"),
        "{text}"
    );
    let agent = s.provider.agents().await.unwrap().remove(0);
    s.provider.revoke_agent(&agent.id).await.unwrap();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAIL") && text.contains("control plane"), "{text}");
}
