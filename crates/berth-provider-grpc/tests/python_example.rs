//! The protocol is language-neutral: the Python example (`examples/remote-provider-python`,
//! grpcio, code generated from the committed proto) passes the conformance suite over a Unix
//! socket, and refuses a wrong token with Berth's error code.
//!
//! Needs a Python with grpcio, grpcio-tools and grpcio-status: `BERTH_GRPC_PYTHON` names it
//! (scripts/test.sh makes one in a virtual environment). Without it the test says so and
//! skips, unless `BERTH_REQUIRE_GRPC_PYTHON` is set (CI), when that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_conformance::{Fixture, run_all};
use berth_core::{ErrorCode, GuestKind, ListFilter, Provider};
use common::*;

fn python() -> Option<PathBuf> {
    let found = std::env::var_os("BERTH_GRPC_PYTHON").map(PathBuf::from).filter(|p| {
        Command::new(p)
            .args(["-c", "import grpc, grpc_tools, grpc_status"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("BERTH_REQUIRE_GRPC_PYTHON").is_none(),
            "BERTH_REQUIRE_GRPC_PYTHON is set but BERTH_GRPC_PYTHON names no Python with grpcio, grpcio-tools and grpcio-status"
        );
        eprintln!("skipped: set BERTH_GRPC_PYTHON to a Python with grpcio, grpcio-tools and grpcio-status");
    }
    found
}

struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(python: &Path, dir: &Path) -> (Example, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/remote-provider-python/provider.py");
    let socket = dir.join("py.sock");
    std::fs::write(dir.join("token"), "py-token\n").unwrap();
    let child = Command::new(python)
        .arg(script)
        .arg("--state")
        .arg(dir.join("machines.json"))
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--token-file")
        .arg(dir.join("token"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (Example(child), socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_passes_the_conformance_suite() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut example, socket) = start(&python, dir.path());
    let until = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(example.0.try_wait().unwrap().is_none(), "the example exited");
        assert!(Instant::now() < until, "the example never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let endpoint = format!("unix:{}", socket.display());

    let stranger = remote(&with_token(config(&endpoint), dir.path(), "nope"), dir.path());
    let e = stranger.list(ListFilter::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized, "{e}");

    let remote = Arc::new(remote(
        &with_token(config(&endpoint), dir.path(), "py-token"),
        dir.path(),
    ));
    let caps = remote.capabilities().await.unwrap();
    assert!(caps.vms && !caps.containers, "{caps:?}");
    let fixture = Fixture {
        provider: remote.clone(),
        spec: Box::new(spec),
        kinds: vec![GuestKind::Vm],
    };
    run_all(&fixture).await;
    let mut ct = spec(GuestKind::Container, "ct");
    ct.kind = GuestKind::Container;
    let e = remote.create(&ct, &berth_core::NoProgress).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
    let e = remote
        .exec(
            &berth_core::InstanceRef::Backend("py-1".into()),
            "true",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported, "an RPC the example lacks: {e}");
}
