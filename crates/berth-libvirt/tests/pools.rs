//! Warm pools on libvirt's in-process `test:///default` driver (stopped mode: the test driver
//! has no guest agent): fill, take, the commit point under a cut at each step, and a delete of
//! a pool machine's id never touching the machine once it was taken.

mod common;

use std::sync::Arc;

use berth_conformance::Recorder;
use berth_core::{
    ErrorCode, InstanceId, InstanceRef, ListFilter, PoolMark, PoolMode, PowerState, ProgressSink, Provider, Stage,
    StageEvent, StagePhase, VmSpec,
};
use berth_libvirt::LibvirtProvider;
use common::{KEY, instance_dirs, spec, test_driver};

fn mark() -> PoolMark {
    PoolMark::new("small", "k1").unwrap()
}

fn pool_spec(id: &InstanceId) -> VmSpec {
    VmSpec {
        instance_id: id.clone(),
        name: id.to_string(),
        ssh_keys: Vec::new(),
        ..spec("unused")
    }
}

async fn fill(p: &LibvirtProvider) -> InstanceId {
    let id = berth_core::pool::pool_machine_id();
    let inst = p
        .fill(&pool_spec(&id), &mark(), PoolMode::Stopped, &Recorder::default())
        .await
        .unwrap();
    assert_eq!((inst.state, inst.pool.as_ref()), (PowerState::Stopped, Some(&mark())));
    id
}

/// The owned domains: (instance id, name, pool mark).
async fn owned(p: &LibvirtProvider) -> Vec<(String, String, Option<PoolMark>)> {
    let mut v: Vec<_> = p
        .list(ListFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.instance_id.unwrap().to_string(), i.name, i.pool))
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    v
}

/// Cuts the take (a panic, as a crash) when it reports `at`.
struct CutAt(Stage, StagePhase);

impl ProgressSink for CutAt {
    fn event(&self, e: StageEvent) {
        if (e.stage, e.phase) == (self.0, self.1) {
            panic!("cut at {:?} {:?}", e.stage, e.phase);
        }
    }
}

#[tokio::test]
async fn a_stopped_pool_machine_is_taken_renamed_grown_and_started_with_the_customers_seed() {
    let Some(s) = test_driver() else { return };
    let p = &s.provider;
    let from = fill(p).await;
    assert_eq!(owned(p).await, vec![(from.to_string(), from.to_string(), Some(mark()))]);
    // Filling again is idempotent and never starts it.
    let again = p
        .fill(&pool_spec(&from), &mark(), PoolMode::Stopped, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(again.state, PowerState::Stopped);

    let order = VmSpec {
        disk_gib: 2,
        ..spec("web1")
    };
    // What a take cut off before its commit left: removed by the next take.
    let dir = s.dir.path().join("instances").join(from.as_str());
    std::fs::write(dir.join("seed-earlier.iso"), "an earlier customer's data").unwrap();
    let rec = Recorder::default();
    let inst = p.take(&from, &mark(), PoolMode::Stopped, &order, &rec).await.unwrap();
    assert_eq!(inst.instance_id.as_ref(), Some(&order.instance_id));
    assert_eq!(
        (inst.name.as_str(), inst.state, inst.pool),
        ("vm-web1", PowerState::Running, None)
    );
    assert_eq!(inst.disk_gib, Some(2), "a larger disk is a resize");
    assert!(inst.login_user.is_some());
    let details: Vec<String> = rec.events().iter().filter_map(|e| e.detail.clone()).collect();
    assert!(
        details.iter().any(|d| d.starts_with("taken from pool small")),
        "{details:?}"
    );
    // The customer's cloud-init data is on the seed the domain boots with, in the pool
    // machine's directory (which the instance keeps).
    assert!(!dir.join("seed-earlier.iso").exists());
    let seed = std::fs::read(dir.join("seed-web1.iso")).unwrap();
    let text = String::from_utf8_lossy(&seed);
    assert!(text.contains(KEY) && text.contains("instance-id: \"web1\""), "the seed");
    assert_eq!(instance_dirs(s.dir.path()), vec![from.to_string()]);
    assert_eq!(owned(p).await, vec![("web1".into(), "vm-web1".into(), None)]);

    // Taken: no second order gets it, and a take resumed for the same order finishes it again.
    let other = p
        .take(&from, &mark(), PoolMode::Stopped, &spec("web2"), &Recorder::default())
        .await
        .unwrap_err();
    assert_eq!(other.code(), ErrorCode::NotFound, "{other}");
    let resumed = p
        .take(&from, &mark(), PoolMode::Stopped, &order, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(resumed.backend_id, inst.backend_id);
    // A fill re-run for the pool machine's id (its record outlived a crash) is refused: the
    // directory is the instance's now.
    let refill = p
        .fill(&pool_spec(&from), &mark(), PoolMode::Stopped, &Recorder::default())
        .await
        .unwrap_err();
    assert_eq!(refill.code(), ErrorCode::Conflict, "{refill}");
    assert!(!std::fs::read(dir.join("seed-web1.iso")).unwrap().is_empty());

    // The pool machine's id is gone; deleting it (a drain that raced the take) leaves the
    // instance and its files alone. The instance's delete removes them.
    let pool_ref = InstanceRef::Id(from.clone());
    assert_eq!(
        p.delete(&pool_ref).await.unwrap(),
        berth_core::DeleteOutcome::AlreadyAbsent
    );
    assert!(dir.join("disk.qcow2").exists());
    assert_eq!(
        p.describe(&InstanceRef::Id(order.instance_id.clone()))
            .await
            .unwrap()
            .state,
        PowerState::Running
    );
    p.delete(&InstanceRef::Id(order.instance_id.clone())).await.unwrap();
    assert_eq!(instance_dirs(s.dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_take_that_cannot_happen_changes_nothing() {
    let Some(s) = test_driver() else { return };
    let p = &s.provider;
    let from = fill(p).await;
    let before = owned(p).await;
    let cases = [
        // Another pool, or another definition of this one.
        (
            PoolMark::new("small", "k2").unwrap(),
            PoolMode::Stopped,
            spec("w1"),
            ErrorCode::NotFound,
        ),
        // The pool keeps it running, and it is not.
        (mark(), PoolMode::Running, spec("w2"), ErrorCode::NotFound),
        // The order's name is another domain's (the test driver's own "test").
        (
            mark(),
            PoolMode::Stopped,
            VmSpec {
                name: "test".into(),
                ..spec("w3")
            },
            ErrorCode::Conflict,
        ),
    ];
    for (m, mode, order, code) in cases {
        let e = p.take(&from, &m, mode, &order, &Recorder::default()).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert_eq!(owned(p).await, before, "after {e}");
    }
    let gone = berth_core::pool::pool_machine_id();
    let e = p
        .take(&gone, &mark(), PoolMode::Stopped, &spec("w4"), &Recorder::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
}

/// A take cut at each step: before the commit the machine is still in the pool; after it, the
/// order's take resumed finishes it. Either way exactly one domain, and nothing left over.
#[tokio::test]
async fn a_take_cut_at_each_step_leaves_the_machine_in_the_pool_or_with_exactly_one_instance() {
    let Some(s) = test_driver() else { return };
    let p = Arc::new(s.provider);
    let cuts = [
        (Stage::CloneTemplate, StagePhase::Started, false),
        (Stage::CloneTemplate, StagePhase::Completed, true),
        (Stage::ConfigureVm, StagePhase::Completed, true),
        (Stage::StartVm, StagePhase::Completed, true),
    ];
    for (i, (stage, phase, committed)) in cuts.into_iter().enumerate() {
        let from = fill(&p).await;
        let order = spec(&format!("cut{i}"));
        let (p2, f2, o2) = (p.clone(), from.clone(), order.clone());
        let cut = tokio::spawn(async move {
            p2.take(&f2, &mark(), PoolMode::Stopped, &o2, &CutAt(stage, phase))
                .await
        })
        .await;
        assert!(cut.is_err(), "the take was cut at {stage:?} {phase:?}");
        let now = owned(&p).await;
        let still = (from.to_string(), from.to_string(), Some(mark()));
        if committed {
            assert!(!now.contains(&still), "cut at {stage:?} {phase:?}: {now:?}");
            let inst = p
                .take(&from, &mark(), PoolMode::Stopped, &order, &Recorder::default())
                .await
                .unwrap();
            assert_eq!(
                (inst.name.as_str(), inst.state),
                (order.name.as_str(), PowerState::Running)
            );
        } else {
            assert!(now.contains(&still), "cut at {stage:?} {phase:?}: {now:?}");
            p.delete(&InstanceRef::Id(from.clone())).await.unwrap();
            continue;
        }
        let now = owned(&p).await;
        assert_eq!(
            now.iter().filter(|(id, _, _)| id == order.instance_id.as_str()).count(),
            1,
            "{now:?}"
        );
        assert!(now.iter().all(|(_, _, pool)| pool.is_none()), "{now:?}");
        p.delete(&InstanceRef::Id(order.instance_id.clone())).await.unwrap();
    }
    assert_eq!(owned(&p).await, Vec::new());
    assert_eq!(instance_dirs(s.dir.path()), Vec::<String>::new());
}
