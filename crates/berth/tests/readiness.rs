//! `Type=notify` units: `berth server` tells systemd it is ready only once it answers, and
//! `berth agent` once it works for its control plane (`READY=1` on `$NOTIFY_SOCKET`).

mod common;
mod stack;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use berth_pve_emulator::Timings;
use common::berth;
use stack::{Db, Stack};

/// `GET /healthz` over a plain socket: the whole answer.
fn healthz(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening when it said READY=1");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// What arrives on the notify socket within 60 s.
fn notified(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1 within 60 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_server_says_ready_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[database]\nsqlite = \"{}\"\n",
            dir.path().join("b.db").display()
        ),
    )
    .unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut child = berth()
        .args(["server", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let said = notified(&socket);
    // Ready means ready: the port answers at once.
    let answer = healthz(port);
    let _ = child.kill();
    let _ = child.wait();
    assert!(said.starts_with("READY=1\n"), "{said:?}");
    assert!(
        said.contains(&format!("STATUS=listening on http://127.0.0.1:{port}")),
        "{said:?}"
    );
    assert!(
        answer.ends_with("\r\n\r\nok"),
        "healthz right after READY=1: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_says_ready_once_it_works_for_its_control_plane() {
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), "").await.unwrap();
    let path = s.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    s.spawn_agent_with(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let said = tokio::task::spawn_blocking(move || notified(&socket)).await.unwrap();
    assert!(said.starts_with("READY=1\n"), "{said:?}");
    assert!(said.contains(&format!("STATUS=working for {}", s.url)), "{said:?}");
    s.wait_agent_alive().await;
}
