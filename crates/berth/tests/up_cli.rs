//! `berth up` as a real process: the control plane on SQLite, a local agent on the emulated
//! Proxmox cluster, enrolled, an offering, and (`--demo`) an order followed until it runs; then
//! SIGTERM stops it cleanly, and a second run picks up the same data directory.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::berth;

fn up(
    env: &common::Env,
    data: &std::path::Path,
    port: u16,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = berth()
        .args(["up", "--demo", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(&env.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no line with {needle:?}; output so far:\n{}", seen.join("\n")),
        }
    }
}

fn term(child: &mut std::process::Child) -> std::process::ExitStatus {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_an_order_to_a_running_vm_and_stops_cleanly() {
    let env = common::start(common::timings()).await;
    let data = env.dir.path().join("berth-data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, rx) = up(&env, &data, port);
    let mut seen = Vec::new();
    wait_for(&rx, "berth is up", &mut seen);
    // What it wrote is named, and the command it prints runs as printed (the full path).
    let keys = wait_for(&rx, "customer keys", &mut seen);
    assert!(
        keys.contains("customer.agekey") && keys.contains("id_ed25519"),
        "{keys}"
    );
    let cmd = wait_for(&rx, "order create", &mut seen);
    let exe = cmd
        .split_whitespace()
        .find(|w| w.ends_with("/berth"))
        .unwrap_or_default();
    assert!(exe.starts_with('/') && std::path::Path::new(exe).exists(), "{cmd}");
    let line = wait_for(&rx, "is running: vm", &mut seen);
    assert!(line.contains("on pve1") && line.contains("ip "), "{line}");
    let status = tokio::task::spawn_blocking(move || term(&mut child)).await.unwrap();
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
    for f in [
        "berth.db",
        "operator.token",
        "provider.token",
        "customer.token",
        "agent/enrollment.json",
    ] {
        assert!(data.join(f).exists(), "{f} missing");
    }
    let machines = env.emu.guests().into_iter().filter(|g| !g.template).count();
    assert_eq!(machines, 1);

    // Again, on the same data: same accounts and agent, one more machine.
    let (mut child, rx) = up(&env, &data, port);
    let mut seen = Vec::new();
    wait_for(&rx, "is running: vm", &mut seen);
    let status = tokio::task::spawn_blocking(move || term(&mut child)).await.unwrap();
    assert!(status.success(), "{status:?}");
    let machines = env.emu.guests().into_iter().filter(|g| !g.template).count();
    assert_eq!(machines, 2);
    let enrollments: Vec<_> = seen.iter().filter(|l| l.contains("agent ")).collect();
    assert!(!enrollments.is_empty(), "{seen:?}");
}

/// A port in use is said first, before anything is written: no data directory is left behind.
#[test]
fn a_port_in_use_is_refused_before_anything_is_written() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("berth-data");
    let out = berth()
        .args(["up", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--listen") && err.contains(&addr), "{err}");
    assert!(!data.exists(), "nothing written");
}
