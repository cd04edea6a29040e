//! Warm pools on real QEMU guests (TCG) booted from the tiny test image, both modes, checked
//! from outside the guest: a stopped pool machine boots for the first time with the customer's
//! cloud-init data (its serial console says what it received); a running one gets the customer's
//! key and host name through its guest agent (read back through the agent, as the guest has it).

mod common;

use std::time::Duration;

use berth_conformance::Recorder;
use berth_core::pool::pool_machine_id;
use berth_core::{InstanceId, InstanceRef, PoolMark, PoolMode, PowerState, Provider, VmSpec};
use common::{KEY, real_guests, spec, wait_for_text};

fn mark() -> PoolMark {
    PoolMark::new("real", "k1").unwrap()
}

fn pool_spec(id: &InstanceId) -> VmSpec {
    VmSpec {
        instance_id: id.clone(),
        name: id.to_string(),
        ssh_keys: Vec::new(),
        ..spec("unused")
    }
}

/// Unique per run: a failed earlier run may have left its guests on the shared daemon.
fn order(tag: &str) -> VmSpec {
    spec(&format!("rp{}-{tag}", std::process::id() % 100_000))
}

#[tokio::test]
async fn a_stopped_pool_machine_boots_first_with_the_customers_seed() {
    let Some((dir, p)) = real_guests() else { return };
    let from = pool_machine_id();
    let filled = p
        .fill(&pool_spec(&from), &mark(), PoolMode::Stopped, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(filled.state, PowerState::Stopped);
    let files = dir.path().join("instances").join(from.as_str());
    assert!(
        !files.join("console.log").exists(),
        "a stopped pool machine never booted"
    );

    let s = order("stopped");
    let inst = p
        .take(&from, &mark(), PoolMode::Stopped, &s, &Recorder::default())
        .await
        .unwrap();
    assert_eq!((inst.name.as_str(), inst.state), (s.name.as_str(), PowerState::Running));
    let ip = inst.ipv4.expect("an address");
    let text = wait_for_text(
        &files.join("console.log"),
        "berth-guest: ready",
        Duration::from_secs(60),
    );
    assert!(
        text.contains(&format!("berth-guest: instance-id={}", s.instance_id)),
        "{text}"
    );
    assert!(text.contains(&format!("berth-guest: hostname={}", s.name)), "{text}");
    assert!(text.contains(&format!("berth-guest: authorized_key={KEY}")), "{text}");
    assert!(text.contains(&format!("berth-guest: ipv4={ip}")), "{text}");
    p.delete(&InstanceRef::Id(s.instance_id.clone())).await.unwrap();
    assert!(!files.exists());
}

#[tokio::test]
async fn a_running_pool_machine_gets_the_customers_key_and_name_through_its_agent() {
    let Some((dir, p)) = real_guests() else { return };
    let from = pool_machine_id();
    let filled = p
        .fill(&pool_spec(&from), &mark(), PoolMode::Running, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(filled.state, PowerState::Running);
    let files = dir.path().join("instances").join(from.as_str());
    let text = wait_for_text(
        &files.join("console.log"),
        "berth-guest: ready",
        Duration::from_secs(60),
    );
    assert!(
        !text.contains(KEY),
        "the pool machine booted without the customer's key: {text}"
    );

    // Commands run through the agent with their output and status.
    let pool_ref = InstanceRef::Id(from.clone());
    let out = p
        .exec(&pool_ref, "echo out; echo err >&2; exit 3", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_status, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "err\n")
    );

    let s = order("running");
    let rec = Recorder::default();
    let taken = std::time::Instant::now();
    let inst = p.take(&from, &mark(), PoolMode::Running, &s, &rec).await.unwrap();
    let took = taken.elapsed();
    assert_eq!(inst.instance_id.as_ref(), Some(&s.instance_id));
    assert_eq!((inst.state, inst.pool.as_ref()), (PowerState::Running, None));
    assert!(inst.ipv4.is_some(), "{inst:?}");
    // A running domain keeps its libvirt name; the guest takes the order's.
    assert_eq!(inst.name, from.to_string());
    eprintln!("took the running pool machine in {took:?}");

    // From outside: what the guest has now, read through its agent.
    let id = InstanceRef::Id(s.instance_id.clone());
    let seen = p
        .exec(
            &id,
            "hostname; cat /etc/hostname; cat /home/berth/.ssh/authorized_keys",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(seen.success(), "{seen:?}");
    assert_eq!(seen.stdout, format!("{0}\n{0}\n{KEY}\n", s.name), "{seen:?}");
    // Running it again (a resumed take) changes nothing.
    let again = p
        .take(&from, &mark(), PoolMode::Running, &s, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(again.backend_id, inst.backend_id);
    p.delete(&id).await.unwrap();
    assert!(!files.exists());
}
