//! Test support shared by the integration tests: specs, providers over a temp state dir, an
//! auto-completing operator, and a loopback webhook server that records what it is sent.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey, VmSpec};
use berth_manual::{ManualConfig, ManualProvider, OperatorDetails};

pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

pub fn spec(kind: GuestKind, tag: &str) -> VmSpec {
    VmSpec {
        instance_id: InstanceId::parse(&format!("man-{tag}")).unwrap(),
        name: format!("mn-{tag}"),
        kind,
        cores: 2,
        memory_mib: 2048,
        disk_gib: 20,
        template: None,
        ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
        user: None,
        network: NetworkSpec::default(),
    }
}

/// A config for tests: fast polling and backoff, state in `dir`.
pub fn config(dir: &Path, webhook: Option<String>) -> ManualConfig {
    ManualConfig {
        notification_webhook: webhook,
        state_dir: dir.join("state"),
        poll_interval_ms: 10,
        webhook_backoff_ms: 10,
        webhook_timeout_seconds: 5,
        ..ManualConfig::default()
    }
}

pub fn provider(dir: &Path, webhook: Option<String>) -> ManualProvider {
    ManualProvider::new(config(dir, webhook), dir).expect("valid config")
}

pub fn details(n: u8) -> OperatorDetails {
    OperatorDetails {
        ipv4: Some(format!("192.0.2.{n}").parse().unwrap()),
        ipv6: None,
        ssh_port: Some(2222),
        root_password: None,
    }
}

/// Waits (bounded) until `provider` lists `id` as pending.
pub async fn until_pending(provider: &ManualProvider, id: &InstanceId) {
    for _ in 0..2000 {
        if provider.pending().await.unwrap().iter().any(|p| &p.instance_id == id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id} never became pending");
}

/// Completes every pending request as it appears, until aborted.
pub fn auto_operator(operator: Arc<ManualProvider>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n: u8 = 1;
        loop {
            for p in operator.pending().await.expect("pending") {
                // A create may be racing us; only a real error is fatal.
                match operator.complete(&p.instance_id, details(n)).await {
                    Ok(_) | Err(berth_manual::OperatorError::NotPending { .. }) => {}
                    Err(e) => panic!("operator could not complete {}: {e}", p.instance_id),
                }
                n = n.wrapping_add(1).max(1);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// A loopback webhook that records every JSON body and answers 500 to the first `fail_first`.
#[derive(Clone, Default)]
pub struct Hook {
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    pub fail_first: Arc<AtomicUsize>,
    pub status_when_failing: Arc<Mutex<u16>>,
}

impl Hook {
    pub fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["text"].as_str().expect("a text field").to_owned())
            .collect()
    }
    pub fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

async fn receive(State(hook): State<Hook>, Json(body): Json<serde_json::Value>) -> StatusCode {
    hook.bodies.lock().unwrap().push(body);
    let failing = hook
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::from_u16(*hook.status_when_failing.lock().unwrap()).unwrap()
    } else {
        StatusCode::OK
    }
}

/// Starts the webhook on 127.0.0.1 (port 0); returns it and its URL (with a fake token path).
pub async fn webhook(fail_first: usize) -> (Hook, String) {
    let hook = Hook::default();
    hook.fail_first.store(fail_first, Ordering::SeqCst);
    *hook.status_when_failing.lock().unwrap() = 500;
    let app = axum::Router::new()
        .route("/services/T0/B0/tok-secret-7", axum::routing::post(receive))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hook, format!("http://{addr}/services/T0/B0/tok-secret-7"))
}

/// Every file name in the state directory.
pub fn state_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
