//! The store suite against SQLite (a temp file) and a real PostgreSQL that the test starts itself
//! (`initdb` + `pg_ctl` as the `postgres` user, on a loopback port, in a temp directory).

use std::sync::Arc;

use berth_store::testpg::Postgres;
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
                agent_id: None,
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

/// After a restore, leases the backup holds are void: an agent that was handed the operation
/// after the backup (with the generation the restored row would hand out again) is refused, and
/// the work is claimed afresh under a generation past any it could hold.
#[tokio::test]
async fn a_restore_voids_every_lease_the_backup_holds() {
    use berth_store::{NewOperation, Store as _, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
    let new = |instance: &str| NewOperation {
        provider_id: "p".into(),
        instance_id: instance.into(),
        kind: "provision".into(),
        payload: serde_json::json!({}),
        agent_id: None,
    };
    store.enqueue(new("a"), 0).await.unwrap();
    store.enqueue(new("b"), 0).await.unwrap();
    let (_, held) = store.claim("p", "agent-1", 60_000, 1).await.unwrap().unwrap();
    // What the restored row would hand out again, and what that agent may hold.
    assert_eq!(held.generation, 1);
    assert_eq!(
        store.void_leases(2).await.unwrap(),
        2,
        "the claimed one and the queued one"
    );
    assert!(matches!(
        store.renew(&held, 60_000, 3).await,
        Err(StoreError::LeaseLost(_))
    ));
    let (op, again) = store.claim("p", "agent-1", 60_000, 4).await.unwrap().unwrap();
    assert_eq!(op.id, held.operation_id, "the same work, claimed afresh at once");
    assert_eq!(again.generation, berth_store::sqlite::RESTORE_FENCE + 2);
}
