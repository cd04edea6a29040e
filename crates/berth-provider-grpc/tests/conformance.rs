//! The Provider conformance suite over gRPC: the Proxmox backend (against the PVE emulator)
//! served on loopback with a token, and the script backend served on a Unix socket. What
//! crosses the wire must behave exactly as the backend does in-process.

mod common;

use std::path::Path;
use std::sync::Arc;

use berth_conformance::{Fixture, Recorder, run_all};
use berth_core::{GuestKind, Provider};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_behind_grpc_conforms_for_vms_and_containers() {
    let emu = emulator().await;
    let served = serve(Arc::new(proxmox(&emu)), "127.0.0.1:0", None, Some("s3cret-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(remote(
        &with_token(config(&endpoint(&served)), dir.path(), "s3cret-token"),
        dir.path(),
    ));
    let caps = remote.capabilities().await.unwrap();
    assert!(caps.vms && caps.containers && caps.power, "{caps:?}");
    let fixture = Fixture {
        provider: remote.clone(),
        spec: Box::new(spec),
        kinds: vec![GuestKind::Vm, GuestKind::Container],
    };
    run_all(&fixture).await;

    // The stages arrive as the in-process backend reports them, in order.
    let direct = Recorder::default();
    let local = proxmox(&emu);
    let a = local.create(&spec(GuestKind::Vm, "direct"), &direct).await.unwrap();
    let over = Recorder::default();
    let b = remote.create(&spec(GuestKind::Vm, "over"), &over).await.unwrap();
    let stages = |r: &Recorder| r.events().iter().map(|e| (e.stage, e.phase)).collect::<Vec<_>>();
    assert_eq!(stages(&over), stages(&direct));
    assert_eq!((b.cores, b.memory_mib, b.kind), (a.cores, a.memory_mib, a.kind));

    // A command in the guest, as the agent's post-provision commands run it.
    let id = berth_core::InstanceRef::Id(b.instance_id.clone().unwrap());
    let long = std::time::Duration::from_secs(30);
    let out = remote
        .exec(&id, "echo hello; echo oops >&2; exit 3", long)
        .await
        .unwrap();
    assert_eq!(
        (out.exit_status, out.stdout.as_str(), out.stderr.as_str()),
        (3, "hello\n", "oops\n")
    );
    let e = remote
        .exec(&id, "sleep 5", std::time::Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.code(), berth_core::ErrorCode::Timeout, "{e}");
    for i in [&a, &b] {
        let r = berth_core::InstanceRef::Id(i.instance_id.clone().unwrap());
        remote.delete(&r).await.unwrap();
    }
    let left: Vec<_> = emu.guests().into_iter().filter(|g| !g.template).collect();
    assert!(left.is_empty(), "the suite leaves nothing behind: {left:?}");
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_backend_behind_a_unix_socket_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/script-backend");
    let mut sc = berth_script::ScriptConfig::with_command("berth_backend.py");
    sc.timeout_seconds = 60;
    sc.env.insert(
        "BERTH_EXAMPLE_STATE".into(),
        dir.path().join("state").display().to_string(),
    );
    let script = berth_script::ScriptProvider::new(sc, examples).expect("valid config");
    let socket = dir.path().join("provider.sock");
    let served = serve(Arc::new(script), &format!("unix:{}", socket.display()), None, None).await;
    let remote = Arc::new(remote(&config(&endpoint(&served)), dir.path()));
    for check in remote.validate().await {
        assert_eq!(check.status, berth_core::CheckStatus::Ok, "{check:?}");
    }
    let fixture = Fixture {
        provider: remote,
        spec: Box::new(spec),
        kinds: vec![GuestKind::Vm],
    };
    run_all(&fixture).await;
    drop(served);
}
