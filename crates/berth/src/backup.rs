//! `berth server backup` and `berth server restore`: the control plane's database copied while
//! it runs (SQLite `VACUUM INTO`: one consistent snapshot) and put back. A restore migrates the
//! copy to this release and verifies its audit chain before it replaces anything; the database
//! it replaces is kept beside it. PostgreSQL is backed up with its own tools (the messages say
//! how).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_server::ServerConfig;
use berth_store::{SqliteStore, Store as _};

const PG: &str = "this control plane uses PostgreSQL: back it up with `pg_dump --format=custom --file FILE URL` \
     (consistent while Berth runs) and restore with `pg_restore --clean --if-exists --dbname URL FILE`, then run \
     `berth audit verify` (docs/operations.md)";

fn sqlite_path(config: &Path) -> anyhow::Result<PathBuf> {
    let cfg = ServerConfig::load(config)?;
    match cfg.database.sqlite {
        Some(p) => Ok(p),
        None => bail!("{PG}"),
    }
}

pub async fn backup(config: &Path, to: &Path) -> anyhow::Result<ExitCode> {
    let db = sqlite_path(config)?;
    if !db.exists() {
        bail!("{} does not exist: nothing to back up", db.display());
    }
    let store = SqliteStore::open(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    store.backup_to(to).await?;
    store.close().await;
    let copy = SqliteStore::open(to).await?;
    let v = copy.verify_audit().await?;
    copy.close().await;
    match v {
        Ok(v) => println!(
            "backed up {} to {} ({} audit entries, chain verified)",
            db.display(),
            to.display(),
            v.entries
        ),
        Err(b) => println!(
            "backed up {} to {}; note: its audit chain is broken ({b}), as it was in the database",
            db.display(),
            to.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(config: &Path, from: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let db = sqlite_path(config)?;
    if !from.is_file() {
        bail!("--from {}: no such file", from.display());
    }
    if db.exists() && !force {
        bail!(
            "{} exists: stop `berth server`, then pass --force to replace it (it is kept as {}.before-restore)",
            db.display(),
            db.display()
        );
    }
    // The copy is checked where it will live, never the backup itself (migrating it would
    // change it).
    let staged = sibling(&db, "restoring");
    for f in wal_files(&staged) {
        let _ = std::fs::remove_file(f);
    }
    std::fs::copy(from, &staged).with_context(|| format!("copying {} to {}", from.display(), staged.display()))?;
    let store = SqliteStore::open(&staged)
        .await
        .with_context(|| format!("{} is not a Berth database", from.display()))?;
    let verified = store.verify_audit().await?;
    // Leases held when the backup was taken are void: the agents' work is claimed afresh.
    let requeued = match &verified {
        Ok(_) => store.void_leases(crate::decl_cmd::now_ms()).await?,
        Err(_) => 0,
    };
    store.close().await;
    let v = match verified {
        Ok(v) => v,
        Err(b) => {
            let _ = std::fs::remove_file(&staged);
            bail!("the backup's audit chain does not verify ({b}); nothing was replaced");
        }
    };
    if db.exists() {
        let kept = sibling(&db, "before-restore");
        std::fs::rename(&db, &kept).with_context(|| format!("keeping {}", db.display()))?;
        // A WAL left beside the old file belongs to it, not to the restored one.
        for (old, new) in wal_files(&db).into_iter().zip(wal_files(&kept)) {
            if old.exists() {
                std::fs::rename(&old, &new)?;
            }
        }
    }
    std::fs::rename(&staged, &db).with_context(|| format!("putting the restored database at {}", db.display()))?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    println!(
        "restored {} from {} ({} audit entries, chain verified; {requeued} unfinished operation(s) queued again, their leases void); start `berth server` again",
        db.display(),
        from.display(),
        v.entries
    );
    Ok(ExitCode::SUCCESS)
}

/// `berth.db` → `berth.db.<suffix>`.
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(format!(".{suffix}"));
    PathBuf::from(s)
}

/// SQLite's `<file>-wal` and `<file>-shm`.
fn wal_files(db: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    })
}
