//! Migrations forward from a database written by an earlier release: `fixtures/release-0.1.sqlite`
//! was made by release 0.1 running the store suite (every table holds rows) and committed. The
//! current code opens a copy (running whatever migrations came since), reads the data back, and
//! the audit chain still verifies. `BERTH_UPDATE_FIXTURE=1` writes a new fixture: only when a
//! release is cut, and under a new name, never over an old one.

use std::path::PathBuf;
use std::sync::Arc;

use berth_store::{Catalog as _, InstanceFilter, SqliteStore, Store as _, suite};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn a_release_0_1_database_opens_reads_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!(
        "release-{}.sqlite",
        env!("CARGO_PKG_VERSION").rsplit_once('.').unwrap().0
    );
    if std::env::var("BERTH_UPDATE_FIXTURE").is_ok_and(|v| v == "1") && !fixture(&name).exists() {
        let store = SqliteStore::open(&dir.path().join("new.db")).await.unwrap();
        let store = Arc::new(store);
        suite::run_all(store.clone(), "fixture").await;
        store.backup_to(&fixture(&name)).await.unwrap();
    }
    let copy = dir.path().join("berth.db");
    std::fs::copy(fixture("release-0.1.sqlite"), &copy).expect("the committed fixture");
    let store = SqliteStore::open(&copy).await.expect("migrates forward");
    let v = store.verify_audit().await.unwrap().expect("the audit chain verifies");
    assert!(v.entries > 0);
    assert!(!store.providers().await.unwrap().is_empty());
    assert!(!store.customers().await.unwrap().is_empty());
    let instances = store.instances(&InstanceFilter::default()).await.unwrap();
    assert!(!instances.is_empty());
    // What was running and what finished reads back.
    for i in instances.iter().take(20) {
        store.instance(&i.id).await.unwrap();
    }
    // And the migrated database takes new work.
    let op = store
        .enqueue(
            berth_store::NewOperation {
                provider_id: "after-upgrade".into(),
                instance_id: "i".into(),
                kind: "start".into(),
                payload: serde_json::json!({}),
                agent_id: None,
            },
            1,
        )
        .await
        .unwrap();
    assert!(
        store.claim("after-upgrade", "a", 1000, 2).await.unwrap().is_some(),
        "{op:?}"
    );
}
