//! Migrations forward from a database written by an earlier release: `fixtures/release-0.1.sqlite.sql`
//! (`scripts/sqlite-dump.py`) and `fixtures/release-0.1.pg.sql` (`pg_dump`) were made by release
//! 0.1 running the store suite (every table holds rows) and committed as text. The test builds a
//! database from each dump, opens it with the current code (running whatever migrations came
//! since), reads the data back, and the audit chain still verifies. `BERTH_UPDATE_FIXTURE=1` writes new fixtures: only when a release
//! is cut, and under a new name, never over an old one.

use std::path::PathBuf;
use std::sync::Arc;

use berth_store::testpg::Postgres;
use berth_store::{InstanceFilter, Page, PgStore, SqliteStore, Store, suite};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn a_release_0_1_database_opens_reads_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("release-{}.sqlite.sql", release());
    if std::env::var("BERTH_UPDATE_FIXTURE").is_ok_and(|v| v == "1") && !fixture(&name).exists() {
        let written = dir.path().join("written.db");
        let store = Arc::new(SqliteStore::open(&written).await.unwrap());
        suite::run_all(store.clone(), "fixture").await;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/sqlite-dump.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(&written)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(fixture(&name), out.stdout).unwrap();
    }
    // The database, built from the committed dump.
    let dump = std::fs::read_to_string(fixture("release-0.1.sqlite.sql")).expect("the committed fixture");
    let copy = dir.path().join("berth.db");
    // Rows go in table by table, in name order: references are checked once all are there.
    let options =
        <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&format!("sqlite://{}", copy.display()))
            .unwrap()
            .create_if_missing(true)
            .foreign_keys(false);
    let raw = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump)).execute(&raw).await.unwrap();
    let dangling = sqlx::query("PRAGMA foreign_key_check").fetch_all(&raw).await.unwrap();
    assert!(dangling.is_empty(), "{} rows reference nothing", dangling.len());
    raw.close().await;
    let store = SqliteStore::open(&copy).await.expect("migrates forward");
    reads_back_and_takes_work(&store).await;
}

fn release() -> String {
    env!("CARGO_PKG_VERSION").rsplit_once('.').unwrap().0.to_owned()
}

#[tokio::test]
async fn a_release_0_1_postgres_dump_restores_migrates_and_verifies() {
    let Some(pg) = Postgres::start() else { return };
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(pg.program(program))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let name = format!("release-{}.pg.sql", release());
    if std::env::var("BERTH_UPDATE_FIXTURE").is_ok_and(|v| v == "1") && !fixture(&name).exists() {
        run("psql", &[&pg.url, "-q", "-c", "CREATE DATABASE written"]);
        let store = PgStore::connect(&pg.url_of("written")).await.unwrap();
        suite::run_all(Arc::new(store), "fixture").await;
        let file = fixture(&name).display().to_string();
        run(
            "pg_dump",
            &["--no-owner", "--no-privileges", "--file", &file, &pg.url_of("written")],
        );
    }
    run("psql", &[&pg.url, "-q", "-c", "CREATE DATABASE restored"]);
    let dump = fixture("release-0.1.pg.sql").display().to_string();
    run(
        "psql",
        &[&pg.url_of("restored"), "-q", "-v", "ON_ERROR_STOP=1", "-f", &dump],
    );
    let store = PgStore::connect(&pg.url_of("restored"))
        .await
        .expect("migrates forward");
    reads_back_and_takes_work(&store).await;
}

async fn reads_back_and_takes_work(store: &dyn Store) {
    let v = store.verify_audit().await.unwrap().expect("the audit chain verifies");
    assert!(v.entries > 0);
    assert!(!store.providers(&Page::all()).await.unwrap().is_empty());
    assert!(!store.customers(&Page::all()).await.unwrap().is_empty());
    let instances = store.instances(&InstanceFilter::default(), &Page::all()).await.unwrap();
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
