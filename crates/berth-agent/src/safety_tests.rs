//! The agent's crash-safety promises, step by step against a real control plane and the Proxmox
//! VE emulator: a re-claimed operation reads its journal only after the old task is done,
//! capacity reservations end with their provision however it ends and count a machine once,
//! a cluster's other nodes do not count against this node, leases are kept on the monotonic
//! clock and fence the work when they run out, a transient error does not strand a half-made
//! machine, reconcile reads an instance again before it acts and leaves kept machines alone,
//! and journal entries that cannot be used, or name a backend that is gone, fail safely.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use berth_api::client::{Auth, Client};
use berth_api::wire::{Completion, OpError};
use berth_core::{GuestKind, InstanceId, NetworkSpec, Provider, SshPublicKey, VmSpec};
use berth_pve_emulator::Timings;

use crate::heartbeat::capacity;
use crate::lease::{Lease, now_ms};
use crate::testkit::{Flaky, KEY, Kit, proxmox};

fn slow_clone() -> Timings {
    Timings {
        clone: Duration::from_millis(1500),
        ..Timings::fast()
    }
}

fn failure(code: &str) -> Completion {
    Completion::Failed(OpError {
        code: code.into(),
        message: "decided by the task that held the operation before".into(),
    })
}

/// Item 4: a second claim of an operation waits for the task still working on it, then reads
/// the journal as that task left it (here: an outcome decided), instead of a copy from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_operation_reads_the_journal_the_old_task_left() {
    let kit = Kit::start(Timings::fast(), |e| proxmox(e, "pve1"), |_| {}).await;
    let offering = kit.offering(&[]).await;
    kit.order(&offering, "web1").await;
    let (c, lease) = kit.claim().await;
    let op = c.operation_id.clone();
    let old_task = kit.agent.lock_op(&op).await;
    let agent = kit.agent.clone();
    let claimed = c.clone();
    let second = tokio::spawn(async move { agent.take(claimed, lease).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What the old task journals before it ends.
    kit.journal(&c, "proxmox", |e| e.outcome = Some(failure("decided_before")));
    drop(old_task);
    second.await.unwrap();
    let view = kit.customer.operation(&op).await.unwrap();
    assert_eq!(view.status, "failed", "{view:#?}");
    assert_eq!(view.error.unwrap().code, "decided_before");
    assert!(
        kit.owned().is_empty(),
        "the provision was not run again: {:?}",
        kit.owned()
    );
}

/// Item 5: a provision cancelled mid-create (its lease lost, the agent stopping) gives its
/// reservation back; while the machine is being made it counts once, not reserved and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_provision_gives_its_reservation_back_and_counts_once() {
    let kit = Kit::start(
        slow_clone(),
        |e| proxmox(e, "pve1"),
        |s| {
            s.capacity.cores = Some(10);
            s.capacity.memory_mib = Some(1 << 20);
            s.capacity.disk_gib = Some(1000);
        },
    )
    .await;
    let offering = kit.offering(&[]).await;
    kit.order(&offering, "web1").await;
    let (c, lease) = kit.claim().await;
    let agent = kit.agent.clone();
    let task = tokio::spawn(async move { agent.take(c, lease).await });
    let b = &kit.agent.backends[0];
    let cfg = kit.agent.capacity_of(b);
    // The clone is under way: its machine shows in the list and is reserved.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kit.owned().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no clone started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.reserved().len(), 1);
    let during = capacity(b, cfg).await.unwrap();
    assert_eq!(during.cores_free, 8, "the machine is counted once: {during:?}");
    task.abort();
    let _ = task.await;
    assert!(b.reserved().is_empty(), "the reservation outlived its provision");
    let after = capacity(b, cfg).await.unwrap();
    assert_eq!(
        after.cores_free, 8,
        "the half-made machine still counts, once: {after:?}"
    );
}

/// Item 6: the totals are the configured node's, so only machines on that node count against
/// them; a machine on pve1 takes nothing from pve2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_capacity_counts_only_machines_on_that_node() {
    let kit = Kit::start(Timings::fast(), |e| proxmox(e, "pve2"), |_| {}).await;
    let b = &kit.agent.backends[0];
    let before = capacity(b, kit.agent.capacity_of(b)).await.unwrap();
    let on_pve1 = proxmox(&kit.emu, "pve1");
    let spec = VmSpec {
        instance_id: InstanceId::parse("11111111-2222-4333-8444-555555555555").unwrap(),
        name: "elsewhere".into(),
        kind: GuestKind::Vm,
        cores: 2,
        memory_mib: 1024,
        disk_gib: 10,
        template: None,
        ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
        user: None,
        network: NetworkSpec::default(),
    };
    on_pve1.create(&spec, &berth_core::NoProgress).await.unwrap();
    assert_eq!(kit.owned()[0].node, "pve1");
    let after = capacity(b, kit.agent.capacity_of(b)).await.unwrap();
    assert_eq!(after.cores_free, before.cores_free, "pve1's machine counted on pve2");
    assert_eq!(after.memory_mib_free, before.memory_mib_free);
}

/// Item 7: the lease's time comes from the control plane's answer and is counted on this
/// agent's monotonic clock: a wall clock far off (expiry read as 200 s away, or long past)
/// changes nothing.
#[tokio::test]
async fn a_lease_is_timed_by_the_answer_not_by_comparing_clocks() {
    let left = Duration::from_secs(6);
    assert_eq!(Lease::left(Some(6_000), now_ms() + 200_000), left);
    assert_eq!(Lease::left(Some(6_000), now_ms() - 200_000), left);
    // From a control plane that does not say: the old reading, bounded.
    assert_eq!(Lease::left(None, now_ms() + 10_000_000), Duration::from_secs(3600));
}

/// Item 7, end to end: the claim and the renewal say how long the lease has left, and a keeper
/// paced by it keeps a 6 s lease for longer than 2×TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keeper_keeps_a_lease_well_past_its_ttl() {
    let kit = Kit::start(Timings::fast(), |e| proxmox(e, "pve1"), |_| {}).await;
    let offering = kit.offering(&[]).await;
    kit.order(&offering, "web1").await;
    let (c, lease) = kit.claim().await;
    let ttl = c.lease_ttl_ms.expect("the claim says how long the lease has left");
    assert!((5_000..=6_000).contains(&ttl), "{ttl}");
    assert_eq!(c.body_limit_bytes, Some(64 * 1024));
    let stop = tokio_util::sync::CancellationToken::new();
    let keeper = lease.keep(stop.clone());
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert!(!lease.lost.is_cancelled(), "the lease was lost while kept");
    assert!(!lease.fenced());
    let renewed = kit.agent.client.renew(&c.operation_id, c.generation).await.unwrap();
    assert!(renewed.ttl_ms.is_some_and(|t| t > 5_000), "{renewed:?}");
    stop.cancel();
    keeper.await.unwrap();
}

/// Item 8: cut off from the control plane, the work stops on its own once the lease's time
/// (less a fifth) is over, before the lease ends: by then another agent may hold the operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_the_control_plane_fences_its_own_work() {
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::new(&format!("http://{nowhere}"), Auth::None);
    let started = tokio::time::Instant::now();
    let lease = Lease::new(client, "op-1", 1, Duration::from_secs(6), started);
    assert!(
        lease.confirm().await,
        "within its time a failed renewal does not stop the work"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let keeper = lease.keep(stop);
    tokio::time::timeout(Duration::from_secs(10), lease.lost.cancelled())
        .await
        .expect("the work is fenced");
    let at = started.elapsed();
    assert!(
        at >= Duration::from_millis(4800) && at < Duration::from_secs(6),
        "fenced at {at:?}: after the lease's time less the margin, before its end"
    );
    assert!(!lease.confirm().await, "no destructive step after the fence");
    keeper.await.unwrap();
}

/// Item 9: a transient `describe` error when a provision (re)starts is retried, not taken for
/// the end of the order; one that lasts fails the order and deletes what may have been made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_describe_error_is_retried_and_a_lasting_one_cleans_up() {
    let flaky: Arc<std::sync::Mutex<Option<Arc<Flaky>>>> = Default::default();
    let keep = flaky.clone();
    let kit = Kit::start(
        Timings::fast(),
        move |e| {
            let f = Flaky::new(proxmox(e, "pve1"));
            *keep.lock().unwrap() = Some(f.clone());
            f as Arc<dyn Provider>
        },
        |_| {},
    )
    .await;
    let flaky = flaky.lock().unwrap().clone().unwrap();
    let offering = kit.offering(&[]).await;
    flaky.describe_faults.store(1, SeqCst);
    let a = kit.order(&offering, "web1").await;
    let view = kit.run_next().await;
    assert_eq!(view.status, "succeeded", "{view:#?}");
    assert_eq!(kit.owned().len(), 1);
    assert_eq!(flaky.deletes.load(SeqCst), 0);

    flaky.describe_faults.store(100, SeqCst);
    kit.order(&offering, "web2").await;
    let view = kit.run_next().await;
    assert_eq!(view.status, "failed", "{view:#?}");
    assert_eq!(view.error.as_ref().unwrap().code, "unavailable");
    assert_eq!(flaky.deletes.load(SeqCst), 1, "what may have been made is deleted");
    assert!(view.stages.iter().any(|s| s.stage == "cleanup"), "{view:#?}");
    assert_eq!(kit.owned().len(), 1, "only web1's machine: {:?}", kit.owned());
    assert_eq!(kit.customer.instance(&a.instance_id).await.unwrap().status, "running");
}

/// Item 11: just before it stops or deletes an orphan, reconcile reads the instance again: one
/// that is live now (re-provisioned since the list was read) keeps its machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reads_the_instance_again_before_acting() {
    let kit = Kit::start(Timings::fast(), |e| proxmox(e, "pve1"), |_| {}).await;
    let offering = kit.offering(&[]).await;
    let a = kit.order(&offering, "web1").await;
    assert_eq!(kit.run_next().await.status, "succeeded");
    assert!(
        !kit.agent.still_orphaned(&a.instance_id).await,
        "a running instance is no orphan"
    );
    assert!(kit.agent.still_orphaned("99999999-2222-4333-8444-555555555555").await);
}

/// Item 11: a machine kept after a failed post-provision command (`keep_failed`) is reported,
/// never stopped or deleted by reconcile, over several passes, with `delete_orphans` on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_leaves_a_kept_machine_running() {
    let kit = Kit::start(
        Timings::fast(),
        |e| proxmox(e, "pve1"),
        |s| {
            s.post_provision.keep_failed = true;
            s.reconcile.delete_orphans = true;
            s.reconcile.orphan_grace_seconds = 0;
        },
    )
    .await;
    let offering = kit.offering(&["exit 3"]).await;
    let a = kit.order(&offering, "web1").await;
    let view = kit.run_next().await;
    assert_eq!(view.status, "failed", "{view:#?}");
    for _ in 0..3 {
        let drift = kit.agent.reconcile_once().await.unwrap();
        assert!(
            drift.iter().any(|d| d.instance_id == a.instance_id && d.kind == "kept"),
            "{drift:?}"
        );
    }
    let vms = kit.owned();
    assert_eq!(vms.len(), 1, "kept, not deleted");
    assert_eq!(vms[0].status, "running", "kept, not stopped");
}

/// Item 12: a provision whose journal entry was damaged does not start over (its commands
/// could run twice): it fails, saying why, and leaves no machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_entry_fails_its_provision_safely() {
    let kit = Kit::start(Timings::fast(), |e| proxmox(e, "pve1"), |_| {}).await;
    let tally = kit.dir.path().join("tally");
    let offering = kit.offering(&[&format!("echo ran >> {}", tally.display())]).await;
    let a = kit.order(&offering, "web1").await;
    let journal = kit.agent.settings.journal_dir();
    let (c, lease) = kit.claim().await;
    std::fs::write(
        journal.join(format!("{}.json", c.operation_id)),
        b"{\"operation_id\": trunc",
    )
    .unwrap();
    kit.agent.journal.load_all().unwrap();
    kit.agent.take(c.clone(), lease).await;
    let view = kit.customer.operation(&c.operation_id).await.unwrap();
    assert_eq!(view.status, "failed", "{view:#?}");
    assert!(view.error.unwrap().message.contains("history"), "says why");
    assert!(!tally.exists(), "no command ran");
    assert!(kit.owned().is_empty(), "{:?}", kit.owned());
    assert_eq!(kit.customer.instance(&a.instance_id).await.unwrap().status, "failed");
}

/// Item 12: work whose journal names a backend no longer configured fails, naming it, instead
/// of running on another backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_gone_from_the_configuration_fails_its_work() {
    let kit = Kit::start(Timings::fast(), |e| proxmox(e, "pve1"), |_| {}).await;
    let offering = kit.offering(&[]).await;
    kit.order(&offering, "web1").await;
    let (c, lease) = kit.claim().await;
    kit.journal(&c, "old-cluster", |_| {});
    kit.agent.take(c.clone(), lease).await;
    let view = kit.customer.operation(&c.operation_id).await.unwrap();
    assert_eq!(view.status, "failed", "{view:#?}");
    assert!(view.error.unwrap().message.contains("old-cluster"));
    assert!(kit.owned().is_empty());
}

/// Item 12: a journal entry of an operation another agent finished no longer keeps its
/// instance busy: reconcile finds the operation finished and drops the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_work_finished_elsewhere_is_dropped() {
    let kit = Kit::start(Timings::fast(), |e| proxmox(e, "pve1"), |_| {}).await;
    let offering = kit.offering(&[]).await;
    let a = kit.order(&offering, "web1").await;
    let (c, _lease) = kit.claim().await;
    kit.journal(&c, "proxmox", |_| {});
    let busy = kit.agent.busy_instances().await;
    assert!(busy.contains(&a.instance_id), "unfinished work keeps its instance busy");
    // Finished under that lease by someone else's hand.
    kit.agent
        .client
        .complete(&c.operation_id, c.generation, failure("elsewhere"))
        .await
        .unwrap();
    let busy = kit.agent.busy_instances().await;
    assert!(!busy.contains(&a.instance_id), "{busy:?}");
    assert!(kit.agent.journal.load_all().unwrap().is_empty());
}
