//! The store suite against SQLite (a temp file) and a real PostgreSQL that the test starts itself
//! (`initdb` + `pg_ctl` as the `postgres` user, on a loopback port, in a temp directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use berth_store::{PgStore, SqliteStore, suite};

#[tokio::test]
async fn sqlite_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
    suite::run_all(Arc::new(store), "sqlite").await;
    // Tampering, straight in the database file, as an attacker with file access would.
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("berth.db").display()))
        .await
        .unwrap();
    let reopen = || async { SqliteStore::open(&dir.path().join("berth.db")).await.unwrap() };
    tamper_checks(&raw, &|| Box::pin(reopen())).await;
    // Reopening migrates nothing twice and keeps the data.
    let again = SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
    use berth_store::Store as _;
    assert!(again.claim("sqlite-rt", "x", 1000, 0).await.unwrap().is_none());
}

/// Set to 1 (as `scripts/test.sh` does) to fail instead of skipping without PostgreSQL.
const REQUIRE_ENV: &str = "BERTH_REQUIRE_POSTGRES";

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A throwaway PostgreSQL server; stopped (immediately) on drop.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    url: String,
}

impl Postgres {
    fn start() -> Option<Postgres> {
        let skip = |why: String| {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_ENV}=1 but PostgreSQL cannot run: {why}");
            }
            eprintln!("skipped: {why}");
            None
        };
        let Some(bin) = pg_bin() else {
            return skip("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)".into());
        };
        if !rustix::process::geteuid().is_root() {
            return skip("starting PostgreSQL as the postgres user needs root".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        let as_pg = |program: &Path| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        };
        let out = as_pg(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=100",
            sock.display()
        );
        let out = as_pg(&bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .arg("start")
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{log}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Postgres {
            bin,
            data,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            _dir: dir,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

#[tokio::test]
async fn postgres_passes_the_store_suite() {
    let Some(pg) = Postgres::start() else { return };
    let store = PgStore::connect(&pg.url).await.unwrap();
    suite::run_all(Arc::new(store), "pg").await;
    let raw = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let url = pg.url.clone();
    tamper_checks_pg(&raw, &url).await;
    // A second server process on the same database (a replica) shares the queue, and its
    // long-polls wake when the other one queues work (LISTEN/NOTIFY).
    let a = Arc::new(PgStore::connect(&pg.url).await.unwrap());
    let b = Arc::new(PgStore::connect(&pg.url).await.unwrap());
    suite::long_poll_wakes_when_work_arrives(a.clone(), b.clone(), "replica-poll").await;
    use berth_store::{NewOperation, Outcome, Store as _};
    let op = a
        .enqueue(
            NewOperation {
                provider_id: "replicas".into(),
                instance_id: "i".into(),
                kind: "provision".into(),
                payload: serde_json::json!({}),
            },
            0,
        )
        .await
        .unwrap();
    let (got, lease) = b.claim("replicas", "agent", 1000, 1).await.unwrap().unwrap();
    assert_eq!(got.id, op.id);
    assert!(a.claim("replicas", "agent-2", 1000, 2).await.unwrap().is_none());
    a.finish(&lease, Outcome::Succeeded(serde_json::json!({})), 3)
        .await
        .unwrap();
}

use berth_store::Store;

type Reopen<'a> = dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = SqliteStore> + 'a>> + 'a;

/// Edits, deletions and reorderings are each caught, at the entry where the chain breaks.
async fn tamper_checks(raw: &sqlx::SqlitePool, reopen: &Reopen<'_>) {
    let s = reopen().await;
    sqlx::query("UPDATE audit_log SET detail = '{\"n\":999}' WHERE seq = 40")
        .execute(raw)
        .await
        .unwrap();
    let b = s.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(b.seq, 40, "{b}");
    assert!(b.reason.contains("edited"), "{b}");
    sqlx::query("DELETE FROM audit_log WHERE seq >= 40")
        .execute(raw)
        .await
        .unwrap();
    assert_eq!(
        s.verify_audit().await.unwrap().unwrap().entries,
        39,
        "a clean truncation keeps a valid prefix"
    );
    sqlx::query("DELETE FROM audit_log WHERE seq = 20")
        .execute(raw)
        .await
        .unwrap();
    let b = s.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(b.seq, 21, "{b}");
    assert!(b.reason.contains("deleted or reordered"), "{b}");
    sqlx::query("UPDATE audit_log SET seq = 20 WHERE seq = 30")
        .execute(raw)
        .await
        .unwrap();
    let b = s.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(b.seq, 20, "a moved entry no longer chains: {b}");
}

async fn tamper_checks_pg(raw: &sqlx::PgPool, url: &str) {
    let s = PgStore::connect(url).await.unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'customer:someone-else' WHERE seq = 5")
        .execute(raw)
        .await
        .unwrap();
    let b = s.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(b.seq, 5, "{b}");
    assert!(b.reason.contains("edited"), "{b}");
    sqlx::query("DELETE FROM audit_log WHERE seq = 5")
        .execute(raw)
        .await
        .unwrap();
    let b = s.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(b.seq, 6, "{b}");
}
