//! Running commands inside guests (`Provider::exec`) against the emulator, whose guest agent runs
//! them for real: output and exit status, waiting for the agent, timeouts, ownership, and what
//! cannot run commands at all.

mod common;

use std::time::{Duration, Instant};

use berth_core::{ErrorCode, GuestKind, InstanceId, InstanceRef, PowerOp, Provider, ProviderError};
use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Timings};
use common::*;

const LONG: Duration = Duration::from_secs(20);

/// Creates a running VM; returns the reference exec takes.
async fn vm(p: &impl Provider, tag: &str) -> InstanceRef {
    let spec = spec(GuestKind::Vm, tag);
    p.create(&spec, &Events::default()).await.expect("create");
    InstanceRef::Id(spec.instance_id)
}

/// `agent/exec` requests the emulator answered, as (status, reason-less params).
fn exec_calls(emu: &EmulatorHandle) -> Vec<(u16, Vec<(String, String)>)> {
    emu.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/agent/exec"))
        .map(|r| (r.status, r.params))
        .collect()
}

#[tokio::test]
async fn a_command_succeeds_with_its_output() {
    let emu = emulator().await;
    let p = provider(&emu);
    let id = vm(&p, "exec-ok").await;
    let out = p
        .exec(&id, "echo hello; printf '%s\\n' \"$((6 * 7))\"", LONG)
        .await
        .expect("exec");
    assert_eq!(out.exit_status, 0);
    assert_eq!(out.stdout, "hello\n42\n");
    assert_eq!(out.stderr, "");
    assert!(!out.truncated);
    // One start, sent as a JSON array run by /bin/sh -c; the emulator's schema check passed.
    let calls = exec_calls(&emu);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, 200);
    assert_eq!(
        calls[0].1,
        vec![(
            "command".to_owned(),
            r#"["/bin/sh","-c","echo hello; printf '%s\\n' \"$((6 * 7))\""]"#.to_owned()
        )]
    );
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn a_failing_command_reports_its_status_and_stderr() {
    let emu = emulator().await;
    let p = provider(&emu);
    let id = vm(&p, "exec-fail").await;
    let out = p
        .exec(&id, "echo partial; echo 'no such package' >&2; exit 3", LONG)
        .await
        .expect("a failing command is not an error");
    assert_eq!(out.exit_status, 3);
    assert!(!out.success());
    assert_eq!(out.stdout, "partial\n");
    assert_eq!(out.stderr, "no such package\n");
    let killed = p.exec(&id, "kill -9 $$", LONG).await.expect("exec");
    assert_eq!(killed.exit_status, 128 + 9);
}

#[tokio::test]
async fn exec_waits_for_the_guest_agent() {
    let emu = emulator().await;
    let p = provider(&emu);
    let id = vm(&p, "exec-wait").await;
    // After this reboot the agent answers only 700 ms later.
    emu.set_timings(Timings {
        agent_ready: Duration::from_millis(700),
        ..Timings::fast()
    });
    p.power(&id, PowerOp::Reboot).await.expect("reboot");
    let started = Instant::now();
    let out = p
        .exec(&id, "echo up", LONG)
        .await
        .expect("exec after the agent came up");
    assert_eq!(out.stdout, "up\n");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = exec_calls(&emu).iter().map(|c| c.0).collect();
    assert!(statuses.len() >= 2, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == 500), "{statuses:?}");
}

#[tokio::test]
async fn timeouts_name_the_command() {
    let emu = emulator().await;
    let p = provider(&emu);
    let id = vm(&p, "exec-slow").await;
    let started = Instant::now();
    let e = p
        .exec(&id, "sleep 5", Duration::from_millis(400))
        .await
        .expect_err("sleep outlives the timeout");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("sleep 5"), "{e}");
    assert!(e.is_retryable());

    // An agent that never comes up: the command is never started.
    emu.set_timings(Timings {
        agent_ready: Duration::from_secs(600),
        ..Timings::fast()
    });
    p.power(&id, PowerOp::Reboot).await.expect("reboot");
    let before = exec_calls(&emu).len();
    let e = p
        .exec(&id, "touch /tmp/never", Duration::from_millis(300))
        .await
        .expect_err("no agent");
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(e.to_string().contains("touch /tmp/never"), "{e}");
    let after = exec_calls(&emu);
    assert!(after.len() > before, "it tried");
    assert!(after[before..].iter().all(|c| c.0 == 500), "{after:?}");
}

#[tokio::test]
async fn a_reboot_during_a_command_ends_the_wait() {
    let emu = emulator().await;
    let p = std::sync::Arc::new(provider(&emu));
    let id = vm(p.as_ref(), "exec-reboot").await;
    let running = tokio::spawn({
        let (p, id) = (p.clone(), id.clone());
        async move { p.exec(&id, "sleep 10", LONG).await }
    });
    // Once the command runs, reboot the guest: the agent forgets it.
    for _ in 0..500 {
        if exec_calls(&emu).iter().any(|c| c.0 == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    p.power(&id, PowerOp::Reboot).await.expect("reboot");
    let e = running.await.unwrap().expect_err("the command died with the guest");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains("Invalid parameter 'pid'"), "{e}");
}

#[tokio::test]
async fn machines_berth_does_not_own_are_refused() {
    let emu = emulator().await;
    let p = provider(&emu);
    // Running, agent up: only the ownership rule stops the command.
    emu.add_foreign_vm("pve1", 105, "legacy-db");
    let e = p
        .exec(&InstanceRef::Backend("105".into()), "true", LONG)
        .await
        .expect_err("foreign");
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    assert!(e.to_string().contains("not managed by Berth"), "{e}");
    // The template is not Berth's either.
    let e = p
        .exec(&InstanceRef::Backend("9000".into()), "true", LONG)
        .await
        .expect_err("template");
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    assert!(exec_calls(&emu).is_empty());
}

#[tokio::test]
async fn unknown_instances_are_not_found() {
    let emu = emulator().await;
    let p = provider(&emu);
    let missing = InstanceRef::Id(InstanceId::parse("vm-nowhere").unwrap());
    let e = p.exec(&missing, "true", LONG).await.expect_err("unknown id");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    let e = p
        .exec(&InstanceRef::Backend("4711".into()), "true", LONG)
        .await
        .expect_err("unknown VMID");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(exec_calls(&emu).is_empty());
}

#[tokio::test]
async fn stopped_vms_and_containers_cannot_run_commands() {
    let emu = emulator().await;
    let p = provider(&emu);
    let id = vm(&p, "exec-stopped").await;
    p.power(&id, PowerOp::Stop).await.expect("stop");
    let started = Instant::now();
    let e = p.exec(&id, "true", LONG).await.expect_err("stopped");
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    assert!(e.to_string().contains("not running"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for a stopped VM"
    );

    let spec = spec(GuestKind::Container, "exec-ct");
    p.create(&spec, &Events::default()).await.expect("create");
    let e = p
        .exec(&InstanceRef::Id(spec.instance_id), "true", LONG)
        .await
        .expect_err("container");
    assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
    assert!(e.to_string().contains("no QEMU guest agent"), "{e}");
}

#[tokio::test]
async fn output_beyond_the_agents_limit_is_flagged() {
    let emu = Emulator::start(EmulatorConfig {
        timings: Timings::fast(),
        exec_output_limit: 8,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let p = provider(&emu);
    let id = vm(&p, "exec-big").await;
    let out = p.exec(&id, "seq 1 100; echo e >&2", LONG).await.expect("exec");
    assert_eq!(out.exit_status, 0);
    assert_eq!(out.stdout, "1\n2\n3\n4\n");
    assert_eq!(out.stderr, "e\n");
    assert!(out.truncated);
}
