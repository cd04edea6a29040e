//! [`Store`] on SQLite: one file, WAL, embedded migrations. SQLite has one writer; each claim is
//! one `UPDATE … RETURNING` inside a `BEGIN IMMEDIATE` transaction, so concurrent claimers queue
//! on the write lock (with a busy timeout) instead of failing on a stale snapshot.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow};

use crate::*;

/// How far a restore raises unfinished operations' generations: more claims than any one
/// operation gets between a backup and its restore.
pub const RESTORE_FENCE: i64 = 1 << 20;

pub struct SqliteStore {
    pool: SqlitePool,
    signals: std::sync::Arc<crate::signal::Signals>,
}

const CLAIM: &str = "UPDATE operations
    SET status = 'running', lease_holder = ?1, lease_expires_at = ?2, generation = generation + 1, updated_at = ?3
    WHERE seq = (
        SELECT o.seq FROM operations o
        WHERE o.provider_id = ?4
          AND (o.agent_id IS NULL OR o.agent_id = ?1)
          AND (o.status = 'queued' OR (o.status = 'running' AND o.lease_expires_at < ?3))
          AND NOT EXISTS (
              SELECT 1 FROM operations e
              WHERE e.instance_id = o.instance_id AND e.seq < o.seq AND e.status IN ('queued', 'running'))
        ORDER BY o.seq LIMIT 1)
    RETURNING *";

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore {
            pool,
            signals: Default::default(),
        })
    }

    /// After a restore: every lease the restored database holds is void. An agent may have been
    /// handed later generations of these operations after the backup was taken (a claim is the
    /// row's generation + 1), so each unfinished operation is queued again with its generation
    /// raised past any it could have reached since ([`RESTORE_FENCE`]): every such agent's next
    /// report is `lease_lost`, and the work is claimed afresh (the agent resumes it from its
    /// journal). Answers how many operations it queued again.
    pub async fn void_leases(&self, now: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET status = 'queued', lease_holder = NULL, lease_expires_at = NULL,
                 generation = generation + ?1, updated_at = ?2
             WHERE status IN ('queued', 'running')",
        )
        .bind(RESTORE_FENCE)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// An online, consistent copy of the whole database into the new file `to` (`VACUUM INTO`):
    /// one snapshot, while writers go on. Mode 0600 (it holds token hashes and the audit log).
    pub async fn backup_to(&self, to: &Path) -> Result<(), StoreError> {
        if to.exists() {
            return Err(StoreError::Invalid {
                field: "to",
                reason: format!("{} exists: a backup never overwrites a file", to.display()),
            });
        }
        let target = to.to_str().ok_or_else(|| StoreError::Invalid {
            field: "to",
            reason: format!("{} is not a UTF-8 path", to.display()),
        })?;
        sqlx::query("VACUUM INTO ?1").bind(target).execute(&self.pool).await?;
        let io = |e: std::io::Error| StoreError::Backend(format!("finishing the backup {}: {e}", to.display()));
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        std::fs::File::open(to).and_then(|f| f.sync_all()).map_err(io)?;
        Ok(())
    }

    /// Closes every connection (the WAL is checkpointed into the file).
    pub async fn close(self) {
        self.pool.close().await;
    }

    crate::common::store_helpers!();

    /// A transaction holding SQLite's write lock from the start, so a read-then-write never
    /// fails on a stale snapshot.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Appenders are already serialised by the write lock.
    async fn lock_audit(&self, _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn wake(&self, key: &str) -> Result<(), StoreError> {
        self.signals.wake(key);
        Ok(())
    }
}

type Db = sqlx::Sqlite;

fn row_op(row: &SqliteRow) -> Result<Operation, StoreError> {
    operation_from_row!(row)
}

crate::common::store_impl!(
    SqliteStore,
    async fn claim(
        &self,
        provider_id: &str,
        holder: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<(Operation, Lease)>, StoreError> {
        check_ttl(ttl_ms)?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(CLAIM)
            .bind(holder)
            .bind(now + ttl_ms)
            .bind(now)
            .bind(provider_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let op = row_op(&row)?;
        let lease = lease_of(&op);
        Ok(Some((op, lease)))
    }
);
