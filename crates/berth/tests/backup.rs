//! Backup and restore of the control plane (SQLite) with real processes: `berth server backup`
//! copies the database while orders are being placed and worked on; after the server is stopped,
//! `berth server restore` refuses to replace the database without `--force`, then puts the
//! backup in place (its audit chain verified); the restarted control plane verifies, and the
//! agent finishes every operation the backup holds, making no machine twice.

mod common;
mod stack;

use std::time::{Duration, Instant};

use berth_pve_emulator::Timings;
use stack::{Db, Stack, run_berth};

const LONG: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_orders_run_restores_and_finishes_the_work() {
    // Room for every order: the emulator's node (16 CPUs at the 90 % threshold) holds seven of
    // these 2-core machines, and an eighth order the backup catches (a loaded machine starts the
    // backup later) would fail "the host is full" for a reason that is not the backup's.
    let mut s = Stack::start(
        Db::Sqlite,
        Timings::fast(),
        "[polling]\nheartbeat_interval_seconds = 1\n[capacity]\ncores = 64\nmemory_mib = 262144\ndisk_gib = 10000\n",
    )
    .await
    .unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let config = s.dir.path().join("server-cli.toml");
    std::fs::write(
        &config,
        format!("[database]\nsqlite = \"{}\"\n", s.dir.path().join("berth.db").display()),
    )
    .unwrap();
    let backup = s.dir.path().join("backup.db");
    let args = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let cfg = config.display().to_string();
    let to = backup.display().to_string();

    // Orders go on while the backup is taken.
    let (_, out) = tokio::join!(
        async {
            for n in 0..12 {
                s.order(&offering, &format!("web{n}")).await;
            }
        },
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            run_berth(args(&["server", "backup", "--config", &cfg, "--to", &to])).await
        }
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("chain verified"), "{text}");
    let again = run_berth(args(&["server", "backup", "--config", &cfg, "--to", &to])).await;
    assert!(!again.status.success(), "a backup never overwrites");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);

    // Restore: never over a database by accident; then in place, verified.
    s.kill_server().await;
    let refused = run_berth(args(&["server", "restore", "--config", &cfg, "--from", &to])).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let restored = run_berth(args(&["server", "restore", "--config", &cfg, "--from", &to, "--force"])).await;
    let text = String::from_utf8_lossy(&restored.stdout);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(text.contains("chain verified"), "{text}");
    assert!(text.contains("queued again, their leases void"), "{text}");
    assert!(s.dir.path().join("berth.db.before-restore").exists());

    // The restarted control plane verifies, and the work the backup holds is finished.
    s.start_server().await;
    let verify = run_berth(args(&["audit", "verify", "--config", &cfg])).await;
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let kept = s.operator.instances().await.unwrap();
    assert!(!kept.is_empty(), "the backup holds the orders placed before it");
    let until = Instant::now() + LONG;
    for i in &kept {
        loop {
            let now = s.operator.instance(&i.id).await.unwrap();
            if now.status == "running" {
                break;
            }
            assert!(
                Instant::now() < until,
                "{} still {} after the restore (last error: {:?}):\n{}",
                i.name,
                now.status,
                now.last_error,
                s.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(s.owned_by(&i.id).len(), 1, "one machine for {}", i.name);
    }
    s.term_agent().await;
}
