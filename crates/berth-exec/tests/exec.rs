//! berth-exec against real processes: cleared environment, stdin, timeouts and dropped futures
//! killing the whole process group, bounded output, and no deadlock on chatty stderr.

use std::time::Duration;

use berth_exec::{DEFAULT_PATH, ExecError, ExecSpec, run};

const LONG: Duration = Duration::from_secs(120);

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new("/bin/sh", LONG).arg("-c").arg(script).arg("sh")
}

/// True once `pid` no longer runs (gone, or a zombie waiting for init). Waits a bounded while:
/// a SIGKILL'd process may take a moment to be torn down.
async fn wait_gone(pid: u32) -> bool {
    for _ in 0..200 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
                if state == Some('Z') {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn environment_is_cleared_except_what_the_spec_names() {
    let out = run(ExecSpec::new("/usr/bin/env", LONG).env("BERTH_TEST_VAR", "x y"))
        .await
        .unwrap();
    out.check_success().unwrap();
    let mut vars: Vec<&str> = out.stdout_utf8().unwrap().lines().collect();
    vars.sort();
    assert_eq!(
        vars,
        vec!["BERTH_TEST_VAR=x y", "LC_ALL=C.UTF-8", &format!("PATH={DEFAULT_PATH}")],
        "only the defaults and the named variable reach the child"
    );
    let out = run(ExecSpec::new("/usr/bin/env", LONG).env("PATH", "/bin"))
        .await
        .unwrap();
    assert!(out.stdout_utf8().unwrap().lines().any(|l| l == "PATH=/bin"));
}

#[tokio::test]
async fn stdin_is_delivered_and_never_shown() {
    let out = run(sh("cat").stdin(b"hello\nworld".to_vec())).await.unwrap();
    assert_eq!(out.stdout, b"hello\nworld");

    let spec = sh("exit 3").stdin(b"supersecret-stdin".to_vec());
    assert!(!format!("{spec:?}").contains("supersecret"));
    let out = run(spec).await.unwrap();
    let err = out.check_success().unwrap_err();
    assert!(matches!(err, ExecError::Failed { .. }), "{err:?}");
    assert!(!err.to_string().contains("supersecret"), "{err}");
    assert!(!format!("{err:?}").contains("supersecret"));
    // A command that ignores its stdin is fine even with a large one.
    let out = run(sh("exit 0").stdin(vec![b'x'; 1 << 20])).await.unwrap();
    out.check_success().unwrap();
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let spec = ExecSpec::new("/bin/sh", Duration::from_secs(3))
        .arg("-c")
        .arg("sleep 60 & echo $! > \"$1\"; sleep 60")
        .arg("sh")
        .arg(&pidfile);
    let err = run(spec).await.unwrap_err();
    match &err {
        ExecError::Timeout { program, after, .. } => {
            assert_eq!(program, "/bin/sh");
            assert_eq!(*after, Duration::from_secs(3));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("timed out after 3s"), "{err}");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(wait_gone(pid).await, "the grandchild {pid} survived the timeout");
}

#[tokio::test]
async fn dropping_the_future_kills_the_process_group() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let fut = run(sh("sleep 60 & echo $! >&2; wait").stderr_lines(tx));
    let pid: u32 = tokio::select! {
        res = fut => panic!("the command should still be running: {res:?}"),
        line = rx.recv() => line.unwrap().trim().parse().unwrap(),
    };
    // `fut` was dropped by select!.
    assert!(wait_gone(pid).await, "the grandchild {pid} survived the dropped future");
}

#[tokio::test]
async fn background_jobs_do_not_outlive_the_main_process() {
    // Without the straggler kill, `sleep` would hold stdout open until the timeout.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let out = run(ExecSpec::new("/bin/sh", Duration::from_secs(60))
        .arg("-c")
        .arg("sleep 60 & echo $! >&2; echo done")
        .stderr_lines(tx))
    .await
    .unwrap();
    assert_eq!(out.stdout_utf8().unwrap(), "done\n");
    let pid: u32 = rx.recv().await.unwrap().trim().parse().unwrap();
    assert!(wait_gone(pid).await, "the background job {pid} survived");
}

#[tokio::test]
async fn a_detached_descendant_holding_the_pipes_does_not_cause_a_false_timeout() {
    // `setsid` puts `sleep` in its own session, out of reach of the group kill, and it keeps
    // stdout/stderr open: `run` must still return once the main process has exited.
    // The main process waits until the descendant is in its own session (it touched the
    // marker), so the group kill cannot race it.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("detached");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let res = run(ExecSpec::new("/bin/sh", Duration::from_secs(30))
        .arg("-c")
        .arg(
            "setsid /bin/sh -c 'echo $$ >&2; : > \"$1\"; exec sleep 30' sh \"$1\" & \
             while [ ! -e \"$1\" ]; do sleep 0.01; done; echo ok",
        )
        .arg("sh")
        .arg(&marker)
        .stderr_lines(tx))
    .await;
    let pid: Option<i32> = rx.recv().await.and_then(|l| l.trim().parse().ok());
    if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let out = res.expect("the command finished; a detached descendant is not a timeout");
    out.check_success().unwrap();
    assert_eq!(out.stdout_utf8().unwrap(), "ok\n");
}

#[tokio::test]
async fn too_much_output_is_refused_and_the_command_killed() {
    let err = run(sh("yes berth").max_stdout(10_000)).await.unwrap_err();
    match &err {
        ExecError::OutputTooLarge { limit, .. } => assert_eq!(*limit, 10_000),
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("more than 10000 bytes"), "{err}");
    let out = run(sh("head -c 10000 /dev/zero").max_stdout(10_000)).await.unwrap();
    assert_eq!(out.stdout.len(), 10_000, "exactly the limit is allowed");
}

#[tokio::test]
async fn chatty_stderr_does_not_deadlock_and_keeps_a_bounded_tail() {
    let script = "head -c 2000000 /dev/zero | tr '\\0' 'x' | fold -w 100 >&2; \
                  head -c 200000 /dev/zero | tr '\\0' 'y'; echo 'last line' >&2";
    let out = run(sh(script).stderr_tail(1000)).await.unwrap();
    out.check_success().unwrap();
    assert_eq!(out.stdout.len(), 200_000);
    assert!(out.stderr_tail.len() <= 1000, "{}", out.stderr_tail.len());
    assert!(out.stderr_tail.ends_with("last line"), "{}", out.stderr_tail);
}

#[tokio::test]
async fn errors_name_the_program_and_redact_the_stderr_tail() {
    let err = run(ExecSpec::new("/nonexistent/berth-prog", LONG)).await.unwrap_err();
    assert!(matches!(err, ExecError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/berth-prog"), "{err}");

    let out = run(sh("echo 'root_password=hunter2 failed' >&2; exit 4"))
        .await
        .unwrap();
    let err = out.check_success().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/bin/sh") && text.contains("failed"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("root_password=<redacted>"), "{text}");

    let out = run(sh("printf 'ok\\377'")).await.unwrap();
    match out.stdout_utf8() {
        Err(ExecError::NotUtf8 { valid_up_to, .. }) => assert_eq!(valid_up_to, 2),
        other => panic!("expected NotUtf8, got {other:?}"),
    }
}
