//! A remote that hangs, answers garbage or refuses a spec: a clear, bounded error, never a
//! hung caller; a spec the remote refuses names its field.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, DeleteOutcome, ErrorCode, GuestKind, Instance, InstanceRef, ListFilter, PowerOp,
    ProgressSink, Provider, ProviderError, ReconfigureOutcome, Resize, Template, VmSpec,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every call waits forever (a backend stuck on a dead hypervisor); with `creates`, a create
/// takes a moment instead and counts how many run at once.
#[derive(Default)]
struct Hangs {
    creates: Option<Arc<Creates>>,
}

#[derive(Default)]
struct Creates {
    running: AtomicUsize,
    most: AtomicUsize,
}

async fn forever<T>() -> T {
    futures::future::pending().await
}

#[async_trait]
impl Provider for Hangs {
    fn backend(&self) -> &'static str {
        "hangs"
    }
    async fn validate(&self) -> Vec<Check> {
        forever().await
    }
    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        forever().await
    }
    async fn create(&self, spec: &VmSpec, _: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        let Some(c) = &self.creates else { return forever().await };
        let now = c.running.fetch_add(1, Ordering::SeqCst) + 1;
        c.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.running.fetch_sub(1, Ordering::SeqCst);
        Ok(Instance {
            instance_id: Some(spec.instance_id.clone()),
            backend_id: "1".into(),
            kind: GuestKind::Vm,
            node: None,
            name: spec.name.clone(),
            state: berth_core::PowerState::Running,
            ipv4: None,
            ipv6: None,
            cores: None,
            memory_mib: None,
            disk_gib: None,
            ssh_port: None,
            login_user: None,
            root_password: None,
            pool: None,
        })
    }
    async fn describe(&self, _: &InstanceRef) -> Result<Instance, ProviderError> {
        forever().await
    }
    async fn list(&self, _: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        forever().await
    }
    async fn power(&self, _: &InstanceRef, _: PowerOp) -> Result<Instance, ProviderError> {
        forever().await
    }
    async fn reconfigure(&self, _: &InstanceRef, _: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        forever().await
    }
    async fn delete(&self, _: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        forever().await
    }
    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        forever().await
    }
    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        forever().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_remote_is_a_timeout_naming_the_call() {
    let served = serve(Arc::new(Hangs::default()), "127.0.0.1:0", None, None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&endpoint(&served));
    c.call_timeout_secs = 1;
    c.create_timeout_secs = 1;
    let r = remote(&c, dir.path());
    let e = r.describe(&InstanceRef::Backend("101".into())).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(e.to_string().contains("did not answer describe"), "{e}");
    assert!(e.is_retryable());
    let e = r
        .create(&spec(GuestKind::Vm, "hang"), &berth_core::NoProgress)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(e.to_string().contains("did not finish the create"), "{e}");
    let checks = r.validate().await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, berth_core::CheckStatus::Fail, "{checks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_answers_garbage_or_is_gone_is_unavailable() {
    // Something that is not a gRPC server: it hears the client out and answers junk.
    let junk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = junk.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = junk.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 24];
                let _ = s.read_exact(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let r = remote(&config(&format!("http://{addr}")), dir.path());
    // Which of the two hyper reports depends on which of its tasks sees the bad frame first:
    // the protocol error itself (internal), or the connection it closed (unavailable).
    let e = tokio::time::timeout(Duration::from_secs(30), r.list(ListFilter::default()))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(matches!(e.code(), ErrorCode::Internal | ErrorCode::Unavailable), "{e}");
    assert!(
        e.to_string().contains(&addr.to_string()),
        "the error names the remote: {e}"
    );

    // Nobody listening: refused at once, retryable, and it says where it tried.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = remote(&config(&format!("http://{gone}")), dir.path());
    let e = tokio::time::timeout(Duration::from_secs(30), r.capacity())
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains(&gone.to_string()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_remote_refuses_names_its_field_and_makes_nothing() {
    let emu = emulator().await;
    let served = serve(Arc::new(proxmox(&emu)), "127.0.0.1:0", None, None).await;
    let dir = tempfile::tempdir().unwrap();
    let r = remote(&config(&endpoint(&served)), dir.path());
    let mut bad = spec(GuestKind::Vm, "bad");
    bad.cores = 0;
    match r.create(&bad, &berth_core::NoProgress).await {
        Err(ProviderError::InvalidSpec { field, reason }) => {
            assert_eq!(field, "cores");
            assert!(reason.contains("between 1 and"), "{reason}");
        }
        other => panic!("expected invalid cores, got {other:?}"),
    }
    let mut bad = spec(GuestKind::Vm, "bad2");
    bad.template = Some("no-such-template".into());
    let e = r.create(&bad, &berth_core::NoProgress).await.unwrap_err();
    assert_ne!(
        e.code(),
        ErrorCode::Unavailable,
        "a refusal is not a transport failure: {e}"
    );
    assert!(emu.guests().iter().all(|g| g.template), "nothing was made");
}

/// A retry that reaches the server while the first create of the instance still runs there
/// (its client vanished unnoticed) waits for it; other instances are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_of_one_instance_run_one_at_a_time_on_the_server() {
    let creates = Arc::new(Creates::default());
    let provider = Hangs {
        creates: Some(creates.clone()),
    };
    let served = serve(Arc::new(provider), "127.0.0.1:0", None, None).await;
    let dir = tempfile::tempdir().unwrap();
    let c = config(&endpoint(&served));
    // Two clients, two connections, as a retry after a dead connection would be.
    let (a, b) = (remote(&c, dir.path()), remote(&c, dir.path()));
    let s = spec(GuestKind::Vm, "twice");
    let (x, y) = tokio::join!(
        a.create(&s, &berth_core::NoProgress),
        b.create(&s, &berth_core::NoProgress)
    );
    assert!(x.is_ok() && y.is_ok(), "{x:?} {y:?}");
    assert_eq!(creates.most.load(Ordering::SeqCst), 1, "one at a time for one instance");
    let (one, two) = (spec(GuestKind::Vm, "one"), spec(GuestKind::Vm, "two"));
    let (x, y) = tokio::join!(
        a.create(&one, &berth_core::NoProgress),
        b.create(&two, &berth_core::NoProgress)
    );
    assert!(x.is_ok() && y.is_ok(), "{x:?} {y:?}");
    assert_eq!(creates.most.load(Ordering::SeqCst), 2, "two instances at once");
}
