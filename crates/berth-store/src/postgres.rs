//! [`Store`] on PostgreSQL: embedded migrations; a claim is one `UPDATE … FROM (SELECT … FOR
//! UPDATE SKIP LOCKED)`, so concurrent claimers (in one server or several replicas) skip each
//! other's rows instead of waiting or double-claiming.

use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

use crate::*;

pub struct PgStore {
    pool: PgPool,
    signals: std::sync::Arc<crate::signal::Signals>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The `LISTEN`/`NOTIFY` channel; the payload is what to wake: a provider id (work queued) or
/// `op:<id>` (an operation got an event or finished).
const WORK_CHANNEL: &str = "berth_work";

const CLAIM: &str = "UPDATE operations
    SET status = 'running', lease_holder = $1, lease_expires_at = $2, generation = generation + 1, updated_at = $3
    FROM (
        SELECT o.seq FROM operations o
        WHERE o.provider_id = $4
          AND (o.agent_id IS NULL OR o.agent_id = $1)
          AND (o.status = 'queued' OR (o.status = 'running' AND o.lease_expires_at < $3))
          AND NOT EXISTS (
              SELECT 1 FROM operations e
              WHERE e.instance_id = o.instance_id AND e.seq < o.seq AND e.status IN ('queued', 'running'))
        ORDER BY o.seq LIMIT 1
        FOR UPDATE SKIP LOCKED) AS next
    WHERE operations.seq = next.seq
    RETURNING operations.*";

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and migrates the database.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new().max_connections(16).connect(url).await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let signals = std::sync::Arc::new(crate::signal::Signals::default());
        // Work queued by any replica rings our waiters at once (no poll tick).
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(WORK_CHANNEL).await?;
        let weak = std::sync::Arc::downgrade(&signals);
        let listener = tokio::spawn(async move {
            // PgListener reconnects by itself; a notification lost meanwhile costs one recheck.
            while let Ok(n) = listener.recv().await {
                let Some(signals) = weak.upgrade() else { break };
                signals.wake(n.payload());
            }
        });
        Ok(PgStore {
            pool,
            signals,
            listener,
        })
    }

    crate::common::store_helpers!();

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// One audit appender at a time across every server replica sharing this database.
    async fn lock_audit(&self, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(7304172917)")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn wake(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WORK_CHANNEL)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

type Db = sqlx::Postgres;

fn row_op(row: &PgRow) -> Result<Operation, StoreError> {
    operation_from_row!(row)
}

crate::common::store_impl!(
    PgStore,
    async fn claim(
        &self,
        provider_id: &str,
        holder: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<(Operation, Lease)>, StoreError> {
        check_ttl(ttl_ms)?;
        let row = sqlx::query(CLAIM)
            .bind(holder)
            .bind(now + ttl_ms)
            .bind(now)
            .bind(provider_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let op = row_op(&row)?;
        let lease = lease_of(&op);
        Ok(Some((op, lease)))
    }
);
