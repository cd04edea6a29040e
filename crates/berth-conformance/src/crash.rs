//! Crash safety: a create interrupted at every stage boundary (the future dropped, as when the
//! process is killed) and then run again must end with exactly one machine and no leftovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_core::{GuestKind, InstanceRef, ProgressSink, Stage, StageEvent, StagePhase};
use tokio::sync::Notify;

use crate::{Fixture, Recorder, create, delete, machines_of, step};

/// A sink that fires `notify` (and remembers it did) when it sees `(stage, phase)`.
struct Tripwire {
    at: (Stage, StagePhase),
    notify: Arc<Notify>,
    tripped: AtomicBool,
}

impl ProgressSink for Tripwire {
    fn event(&self, event: StageEvent) {
        if (event.stage, event.phase) == self.at {
            self.tripped.store(true, Ordering::SeqCst);
            self.notify.notify_one();
        }
    }
}

/// For each stage the backend reports: interrupt right after it starts and right after it
/// completes, run create again, and check the outcome.
pub async fn crash_between_stages(f: &Fixture, kind: GuestKind) {
    // Learn the stages this backend reports from a full run.
    let probe = f.spec_for(kind, "probe");
    let rec = Recorder::default();
    create(f, &probe, &rec).await;
    delete(f, &InstanceRef::Id(probe.instance_id.clone())).await;
    let mut stages: Vec<Stage> = rec.events().iter().map(|e| e.stage).collect();
    stages.dedup();
    assert!(!stages.is_empty(), "conformance: create reports at least one stage");

    for (n, stage) in stages.iter().enumerate() {
        for phase in [StagePhase::Started, StagePhase::Completed] {
            let tag = format!("crash{n}{}", if phase == StagePhase::Started { "s" } else { "c" });
            let spec = f.spec_for(kind, &tag);
            let notify = Arc::new(Notify::new());
            let trip = Tripwire {
                at: (*stage, phase),
                notify: notify.clone(),
                tripped: AtomicBool::new(false),
            };
            // A create that returns in the same poll as its last event cannot be cut there: that
            // is a crash after the work was done, which the re-run below must handle too.
            let interrupted = tokio::select! {
                res = step("create up to the crash point", f.provider.create(&spec, &trip)) => {
                    res.unwrap_or_else(|e| panic!("conformance: create before the crash point failed: {e}"));
                    false
                }
                _ = notify.notified() => true,
            };
            assert!(
                interrupted || trip.tripped.load(Ordering::SeqCst),
                "conformance: create finished without reporting {stage} {phase:?}"
            );

            let inst = create(f, &spec, &Recorder::default()).await;
            assert_eq!(inst.instance_id.as_ref(), Some(&spec.instance_id));
            let named = machines_of(f, &spec).await;
            assert_eq!(
                named.len(),
                1,
                "conformance: after a crash at {stage} {phase:?} and a re-run there must be exactly one machine, found {named:?}"
            );
            let id = InstanceRef::Id(spec.instance_id.clone());
            delete(f, &id).await;
            let left = machines_of(f, &spec).await;
            assert!(
                left.is_empty(),
                "conformance: crash at {stage} {phase:?} left {left:?} behind"
            );
        }
    }
}
