//! The conformance suite against the manual backend, with the operator working through the
//! CLI: a background operator polls `berth vm list --pending` and answers every request with
//! `berth vm complete`, as a person at a terminal would.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_conformance::{Fixture, run_all};
use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey, VmSpec};
use common::{KEY, berth};

/// Returns how many requests it completed.
fn operator(config: PathBuf, stop: Arc<AtomicBool>) -> u32 {
    let (mut n, mut completed) = (0u32, 0u32);
    while !stop.load(Ordering::SeqCst) {
        let out = berth()
            .args(["vm", "list", "--pending", "--output", "json", "--config"])
            .arg(&config)
            .output();
        let pending: Vec<serde_json::Value> = out
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default();
        for p in pending {
            n += 1;
            let id = p["instance_id"].as_str().unwrap_or_default().to_owned();
            let ip = format!("198.51.100.{}", n % 250 + 1);
            // A request may be withdrawn meanwhile (deleted by the suite): that failure is fine.
            let done = berth()
                .args(["vm", "complete", &id, "--ip", &ip, "--config"])
                .arg(&config)
                .output();
            if done.is_ok_and(|o| o.status.success()) {
                completed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    completed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_backend_conforms_with_an_operator_at_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(
        &path,
        "[provisioner]\ntype = \"manual\"\n\n[provisioner.manual]\nstate_dir = \"requests\"\npoll_interval_ms = 50\n",
    )
    .unwrap();
    let config = berth_agent::load_config(&path).unwrap();
    let provider = berth_agent::build_provider(&config, &config.backends[0]).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let op = std::thread::spawn({
        let (path, stop) = (path.clone(), stop.clone());
        move || operator(path, stop)
    });
    let fixture = Fixture {
        provider,
        spec: Box::new(|kind: GuestKind, tag: &str| VmSpec {
            instance_id: InstanceId::parse(&format!("man-{tag}-{}", kind)).unwrap(),
            name: format!("man-{tag}"),
            kind,
            cores: 2,
            memory_mib: 2048,
            disk_gib: 20,
            template: None,
            ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
            user: None,
            network: NetworkSpec::default(),
        }),
        kinds: vec![GuestKind::Vm],
    };
    run_all(&fixture).await;
    stop.store(true, Ordering::SeqCst);
    let completed = op.join().unwrap();
    // lifecycle, idempotent, delete-twice, list, the crash probe and two crash points each
    // needed an operator's answer.
    assert!(
        completed >= 7,
        "the operator completed only {completed} requests through the CLI"
    );
}
