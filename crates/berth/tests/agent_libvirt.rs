//! End to end on real hardware virtualisation: an order through the control plane (SQLite and
//! PostgreSQL) and a real `berth agent` becomes a real QEMU guest on a private libvirtd (started
//! by `scripts/test-libvirtd.sh` in its own namespaces; guests on QEMU user networking), reports
//! its address, and is terminated. Skips without root or libvirt unless BERTH_REQUIRE_LIBVIRT=1.

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_pve_emulator::Timings;
use stack::{Db, Stack};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn skip(why: &str) -> Option<(String, PathBuf)> {
    if std::env::var("BERTH_REQUIRE_LIBVIRT").as_deref() == Ok("1") {
        panic!("BERTH_REQUIRE_LIBVIRT=1 but the libvirt end-to-end test cannot run: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// The private libvirtd's URI and the tiny guest image, or why not.
fn prerequisites() -> Option<(String, PathBuf)> {
    if !rustix::process::geteuid().is_root() {
        return skip("needs root (libvirtd in its own namespaces)");
    }
    if !["/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64"]
        .iter()
        .all(|p| Path::new(p).exists())
    {
        return skip("libvirtd or qemu-system-x86_64 is not installed");
    }
    let out = Command::new("bash")
        .arg(workspace().join("scripts/test-libvirtd.sh"))
        .arg("start")
        .output()
        .unwrap();
    if !out.status.success() {
        return skip(&format!("test-libvirtd.sh: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let uri = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let images = workspace().join("target/berth-test-image");
    std::fs::create_dir_all(&images).unwrap();
    let built = Command::new("bash")
        .arg(workspace().join("scripts/build-test-image.sh"))
        .arg(&images)
        .output()
        .unwrap();
    if !built.status.success() {
        return skip(&format!(
            "build-test-image.sh: {}",
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    Some((uri, images))
}

/// A running pool of one machine of the offering's size, emptied when the agent stops.
const POOL: &str = "[polling]\nheartbeat_interval_seconds = 1\n[[pool]]\nname = \"tiny\"\ntemplate = \"berth-test\"\n\
                    cores = 1\nmemory_mib = 256\ndisk_gib = 1\nready = 1\nmode = \"running\"\ndrain_on_shutdown = true\n";

/// An order on a real guest; with `pool`, once the agent's running pool is full, so the order
/// takes the pool machine.
async fn order_a_real_vm(db: Db, name: &str, pool: bool) {
    let Some((uri, images)) = prerequisites() else { return };
    let instances = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        // QEMU runs as another user: it must reach the instance files.
        std::fs::set_permissions(instances.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let backend = format!(
        r#"[provisioner]
type = "libvirt"

[provisioner.libvirt]
uri = "{uri}"
images_dir = "{images}"
instances_dir = "{instances}"
template = "berth-test"
network = "user"
domain_type = "qemu"
network_timeout_seconds = 240
"#,
        images = images.display(),
        instances = instances.path().join("vms").display(),
    );
    let mut extra = "[capacity]\ncores = 16\nmemory_mib = 16384\ndisk_gib = 4\n".to_owned();
    if pool {
        extra.push_str(POOL);
    }
    let Some(mut s) = Stack::start_with_backend(db, Timings::fast(), Some(backend), &extra).await else {
        eprintln!("skipped: no PostgreSQL here");
        return;
    };
    s.spawn_agent();
    s.wait_agent_alive().await;
    if pool {
        let until = std::time::Instant::now() + Duration::from_secs(300);
        while s.pool_report("tiny", 0).await.is_none_or(|p| p.ready < 1) {
            assert!(
                std::time::Instant::now() < until,
                "the pool never filled\n{}",
                s.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let spec = berth_api::wire::OfferingSpec {
        name: "tiny".into(),
        cores: 1,
        memory_mib: 256,
        disk_gib: 1,
        bandwidth_mbps: None,
        template: Some("berth-test".into()),
        price: None,
        region: None,
        labels: Default::default(),
        post_provision_commands: Vec::new(),
    };
    let offering = s.provider.create_offering(&spec).await.unwrap().id;
    let a = s.order(&offering, name).await;
    let op = s
        .finished(a.operation_id.as_deref().unwrap(), Duration::from_secs(400))
        .await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    let clone = op
        .stages
        .iter()
        .find(|st| st.stage == "clone_template")
        .expect("clone stage");
    assert_eq!(
        clone
            .message
            .as_deref()
            .is_some_and(|m| m.contains("taken from pool tiny")),
        pool,
        "{clone:?}"
    );
    let i = s.customer.instance(&a.instance_id).await.unwrap();
    assert_eq!(i.status, "running");
    assert!(i.ip_address.is_some(), "the guest reported an address: {i:?}");
    assert!(i.vm_id.is_some());
    let t = s.customer.instance_action(&a.instance_id, "terminate").await.unwrap();
    let op = s
        .finished(t.operation_id.as_deref().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(op.status, "succeeded", "{op:#?}");
    if pool {
        // Stopped, the agent empties its pool (the refill may be under way: it is cut and removed).
        assert!(s.term_agent().await.success(), "{}", s.agent_log());
    } else {
        s.kill_agent();
    }
    let left: Vec<_> = std::fs::read_dir(instances.path().join("vms"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "terminate left {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_to_a_real_vm_on_sqlite() {
    order_a_real_vm(Db::Sqlite, "e2e-sqlite", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_takes_a_running_pool_machine_of_real_vms() {
    order_a_real_vm(Db::Sqlite, "e2e-pool", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_to_a_real_vm_on_postgres() {
    order_a_real_vm(Db::Postgres, "e2e-postgres", false).await;
}
