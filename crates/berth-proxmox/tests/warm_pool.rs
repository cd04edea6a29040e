//! Warm pools on Proxmox (the emulator): `fill` makes a pool guest (stopped: never booted;
//! running: booted, its agent answering), `take` hands it to an instance with one digest-guarded
//! config update and personalises it; both are idempotent, a take cut off after any stage
//! finishes on a re-run with exactly one guest, and a guest is never handed to two instances.

mod common;

use std::sync::Arc;

use berth_core::{
    ErrorCode, GuestKind, InstanceId, InstanceRef, ListFilter, PoolMark, PoolMode, Provider, Stage, StagePhase, VmSpec,
};
use berth_pve_emulator::EmulatorHandle;
use common::*;
use tokio::sync::Notify;

fn mark() -> &'static PoolMark {
    static MARK: std::sync::LazyLock<PoolMark> = std::sync::LazyLock::new(|| PoolMark::new("web", "k1").unwrap());
    &MARK
}

/// A pool machine's spec: its own `pool-…` id and name, no keys.
fn pool_spec(tag: &str) -> VmSpec {
    let id = InstanceId::parse(&format!("pool-{tag}")).unwrap();
    VmSpec {
        name: id.as_str().to_owned(),
        instance_id: id,
        ssh_keys: Vec::new(),
        ..spec(GuestKind::Vm, tag)
    }
}

fn guest(emu: &EmulatorHandle, id: &str) -> berth_pve_emulator::GuestSnapshot {
    let m = marked(emu, id);
    assert_eq!(m.len(), 1, "exactly one guest carries {id}: {m:?}");
    m.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_stopped_pool_guest_is_never_booted_and_a_take_boots_it_with_the_customers_data() {
    let emu = emulator().await;
    let p = provider(&emu);
    let ps = pool_spec("s1");
    let made = p
        .fill(&ps, mark(), PoolMode::Stopped, &Events::default())
        .await
        .unwrap();
    assert_eq!(made.pool, Some(mark().clone()));
    assert_eq!(made.state, berth_core::PowerState::Stopped);
    let g = guest(&emu, "pool-s1");
    assert!(g.tags.contains(&"berth-pool.web.k1".to_owned()), "{:?}", g.tags);
    assert_eq!(g.status, "stopped");
    assert!(
        !writes(&emu).iter().any(|w| w.ends_with("/status/start")),
        "{:?}",
        writes(&emu)
    );
    // Idempotent: a second fill finds it.
    let again = p
        .fill(&ps, mark(), PoolMode::Stopped, &Events::default())
        .await
        .unwrap();
    assert_eq!(again.backend_id, made.backend_id);
    let listed = p.list(ListFilter::default()).await.unwrap();
    let pooled: Vec<_> = listed.iter().filter(|i| i.pool.is_some()).collect();
    assert_eq!(pooled.len(), 1, "{listed:?}");

    // Taken, with a larger disk: the customer's name, keys and size; started; one guest.
    let mut order = spec(GuestKind::Vm, "take1");
    order.disk_gib = 20;
    let ev = Events::default();
    let inst = p
        .take(&ps.instance_id, mark(), PoolMode::Stopped, &order, &ev)
        .await
        .unwrap();
    assert_eq!(inst.backend_id, made.backend_id);
    assert_eq!(inst.instance_id.as_ref(), Some(&order.instance_id));
    assert_eq!(inst.pool, None);
    assert!(inst.ipv4.is_some(), "{inst:?}");
    assert_eq!(inst.disk_gib, Some(20));
    let g = guest(&emu, "vm-take1");
    assert_eq!(g.name, "vm-take1");
    assert!(!g.tags.iter().any(|t| t.contains("pool")), "{:?}", g.tags);
    assert!(
        g.config.get("sshkeys").is_some_and(|k| k.contains("ssh-ed25519")),
        "{:?}",
        g.config
    );
    assert!(marked(&emu, "pool-s1").is_empty(), "the pool machine's marker moved");
    let said: Vec<_> = ev
        .list()
        .into_iter()
        .filter(|e| e.stage == Stage::CloneTemplate && e.phase == StagePhase::Completed)
        .collect();
    assert!(
        said[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("taken from pool web")),
        "{said:?}"
    );
    // Idempotent by the instance; the pool machine is not there for another order.
    let again = p
        .take(&ps.instance_id, mark(), PoolMode::Stopped, &order, &Events::default())
        .await
        .unwrap();
    assert_eq!(again.backend_id, inst.backend_id);
    let other = spec(GuestKind::Vm, "take2");
    let e = p
        .take(&ps.instance_id, mark(), PoolMode::Stopped, &other, &Events::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(marked(&emu, "vm-take2").is_empty());
}

#[tokio::test]
async fn a_running_pool_guest_gets_the_host_name_and_keys_through_its_agent() {
    let emu = emulator().await;
    let p = provider(&emu);
    let ps = pool_spec("r1");
    let made = p
        .fill(&ps, mark(), PoolMode::Running, &Events::default())
        .await
        .unwrap();
    assert_eq!(made.state, berth_core::PowerState::Running);
    assert!(made.ipv4.is_some());
    let vmid: u32 = made.backend_id.parse().unwrap();
    let order = spec(GuestKind::Vm, "run1");
    let ev = Events::default();
    let inst = p
        .take(&ps.instance_id, mark(), PoolMode::Running, &order, &ev)
        .await
        .unwrap();
    assert_eq!(inst.backend_id, made.backend_id);
    assert!(inst.ipv4.is_some());
    assert_eq!(inst.login_user.as_deref(), Some("berth"));
    let keys = emu
        .guest_file(vmid, "/home/berth/.ssh/authorized_keys")
        .expect("the keys were written");
    assert_eq!(keys.trim(), order.ssh_keys[0].as_str());
    assert_eq!(emu.guest_file(vmid, "/etc/hostname").as_deref(), Some("vm-run1\n"));
    assert!(
        emu.guest_file(vmid, "/etc/cloud/cloud.cfg.d/99-berth-pool.cfg")
            .is_some()
    );
    // No second start; the PVE name stays (renaming would change cloud-init's data).
    let g = guest(&emu, "vm-run1");
    assert_eq!(g.name, "pool-r1");
    let skipped = ev
        .list()
        .into_iter()
        .any(|e| e.stage == Stage::StartVm && e.phase == StagePhase::Skipped);
    assert!(skipped, "{:?}", ev.list());
}

#[tokio::test]
async fn a_machine_of_another_definition_or_taken_already_is_not_handed_out() {
    let emu = emulator().await;
    let p = provider(&emu);
    let ps = pool_spec("k2");
    p.fill(&ps, mark(), PoolMode::Stopped, &Events::default())
        .await
        .unwrap();
    let newer = PoolMark::new("web", "k2").unwrap();
    let order = spec(GuestKind::Vm, "stale");
    let e = p
        .take(&ps.instance_id, &newer, PoolMode::Stopped, &order, &Events::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(e.to_string().contains("no longer in pool web"), "{e}");
    assert!(marked(&emu, "vm-stale").is_empty());
    assert_eq!(guest(&emu, "pool-k2").status, "stopped");

    // Two orders race for one machine: exactly one gets it.
    let p = Arc::new(p);
    let (a, b) = (spec(GuestKind::Vm, "race-a"), spec(GuestKind::Vm, "race-b"));
    let (ea, eb) = (Events::default(), Events::default());
    let (ra, rb) = tokio::join!(
        p.take(&ps.instance_id, mark(), PoolMode::Stopped, &a, &ea),
        p.take(&ps.instance_id, mark(), PoolMode::Stopped, &b, &eb)
    );
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} / {rb:?}");
    let lost = ra.err().or(rb.err()).unwrap();
    assert_eq!(lost.code(), ErrorCode::NotFound, "{lost}");
    assert_eq!(marked(&emu, "vm-race-a").len() + marked(&emu, "vm-race-b").len(), 1);
}

/// A delete of a pool machine (the keeper draining it) racing a take: the take either commits
/// first and the machine is the instance's (the delete leaves it), or the machine is retired
/// first and the take finds it gone. Never a taken machine destroyed.
#[tokio::test]
async fn a_delete_racing_a_take_never_destroys_the_taken_machine() {
    let emu = emulator().await;
    let p = Arc::new(provider(&emu));
    for n in 0..6 {
        let ps = pool_spec(&format!("d{n}"));
        p.fill(&ps, mark(), PoolMode::Stopped, &Events::default())
            .await
            .unwrap();
        let order = spec(GuestKind::Vm, &format!("dt{n}"));
        let ev = Events::default();
        let r = InstanceRef::Id(ps.instance_id.clone());
        let (taken, deleted) = tokio::join!(p.take(&ps.instance_id, mark(), PoolMode::Stopped, &order, &ev), async {
            // Staggered so the delete lands before, during and after the hand-over.
            tokio::time::sleep(std::time::Duration::from_millis(n * 3)).await;
            p.delete(&r).await
        });
        deleted.expect("delete");
        match taken {
            Ok(_) => assert_eq!(
                marked(&emu, order.instance_id.as_str()).len(),
                1,
                "round {n}: taken and kept"
            ),
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::NotFound, "round {n}: {e}");
                assert!(marked(&emu, order.instance_id.as_str()).is_empty(), "round {n}");
            }
        }
        assert!(
            marked(&emu, ps.instance_id.as_str()).is_empty(),
            "round {n}: the pool machine is gone"
        );
    }
}

/// A stopped pool's machine that is running (someone started it) is not handed out: its first
/// boot is over, so the customer's cloud-init data would not apply.
#[tokio::test]
async fn a_machine_not_in_its_pools_state_is_not_handed_out() {
    let emu = emulator().await;
    let p = provider(&emu);
    let ps = pool_spec("st1");
    p.fill(&ps, mark(), PoolMode::Stopped, &Events::default())
        .await
        .unwrap();
    p.power(&InstanceRef::Id(ps.instance_id.clone()), berth_core::PowerOp::Start)
        .await
        .unwrap();
    let order = spec(GuestKind::Vm, "st-order");
    let e = p
        .take(&ps.instance_id, mark(), PoolMode::Stopped, &order, &Events::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(e.to_string().contains("running, not stopped"), "{e}");
    assert!(marked(&emu, "vm-st-order").is_empty());
}

struct Tripwire {
    at: (Stage, StagePhase),
    hit: Arc<Notify>,
}

impl berth_core::ProgressSink for Tripwire {
    fn event(&self, e: berth_core::StageEvent) {
        if (e.stage, e.phase) == self.at {
            self.hit.notify_one();
        }
    }
}

/// A take dropped right after each of its stage events, then run again: one guest, the
/// instance's, running; the pool machine gone from the pool.
#[tokio::test]
async fn a_take_cut_off_after_any_stage_finishes_on_a_rerun() {
    let emu = emulator().await;
    let p = provider(&emu);
    let points = [
        (Stage::CloneTemplate, StagePhase::Started),
        (Stage::CloneTemplate, StagePhase::Completed),
        (Stage::ConfigureVm, StagePhase::Started),
        (Stage::StartVm, StagePhase::Started),
        (Stage::StartVm, StagePhase::Completed),
        (Stage::WaitNetwork, StagePhase::Started),
    ];
    for mode in [PoolMode::Stopped, PoolMode::Running] {
        for (n, at) in points.into_iter().enumerate() {
            let tag = format!("c{}{n}", if mode == PoolMode::Stopped { "s" } else { "r" });
            let ps = pool_spec(&tag);
            p.fill(&ps, mark(), mode, &Events::default()).await.unwrap();
            let order = spec(GuestKind::Vm, &format!("o{tag}"));
            let hit = Arc::new(Notify::new());
            let trip = Tripwire { at, hit: hit.clone() };
            tokio::select! {
                biased;
                _ = hit.notified() => {}
                r = p.take(&ps.instance_id, mark(), mode, &order, &trip) => { r.expect("take"); }
            };
            let inst = p
                .take(&ps.instance_id, mark(), mode, &order, &Events::default())
                .await
                .unwrap_or_else(|e| panic!("{mode} after {at:?}: {e}"));
            let mine = marked(&emu, order.instance_id.as_str());
            let pooled = marked(&emu, ps.instance_id.as_str());
            assert_eq!(mine.len() + pooled.len(), 1, "{mode} after {at:?}: {mine:?} {pooled:?}");
            assert_eq!(mine.len(), 1, "{mode} after {at:?}: the instance has it");
            assert_eq!(inst.state, berth_core::PowerState::Running);
            p.delete(&InstanceRef::Id(order.instance_id.clone())).await.unwrap();
        }
    }
}
