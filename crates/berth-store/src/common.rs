//! What the SQLite and PostgreSQL stores share: the same SQL (sqlx binds `$N` on both), the same
//! method bodies, written once as macros expanded in each store. Each store supplies only what
//! differs: `begin_write` (SQLite takes the write lock up front), `lock_audit` (PostgreSQL
//! serialises appenders across replicas), `wake` (PostgreSQL `NOTIFY`), `row_op` and
//! its claim statement.

use crate::{InstanceChange, Millis, NewAuditEntry, OpStatus};

/// What is done under a held lease.
pub(crate) enum Held {
    Renew(Millis),
    Finish(OpStatus, Option<String>, Option<String>),
    Release,
    /// Nothing but the check (and the row lock until the transaction ends).
    Touch,
}

/// What else a finish writes in its transaction.
pub(crate) struct Also {
    pub change: Option<InstanceChange>,
    pub audit: Option<NewAuditEntry>,
}

/// Inherent helpers of a store: `held_update` and `lost`.
macro_rules! store_helpers {
    () => {
    /// Applies `change` to an operation whose lease `lease` still holds, inside `tx`.
    async fn held_update_in(
        tx: &mut sqlx::Transaction<'static, Db>,
        lease: &Lease,
        now: Millis,
        change: $crate::common::Held,
    ) -> Result<Option<Operation>, StoreError> {
        let q = match &change {
            $crate::common::Held::Renew(_) => sqlx::query(
                "UPDATE operations SET lease_expires_at = $5, updated_at = $4
                 WHERE id = $1 AND status = 'running' AND lease_holder = $2 AND generation = $3 AND lease_expires_at >= $4
                 RETURNING *",
            ),
            $crate::common::Held::Finish(..) => sqlx::query(
                "UPDATE operations SET status = $5, result = $6, error = $7, lease_holder = NULL, lease_expires_at = NULL, updated_at = $4
                 WHERE id = $1 AND status = 'running' AND lease_holder = $2 AND generation = $3 AND lease_expires_at >= $4
                 RETURNING *",
            ),
            $crate::common::Held::Release => sqlx::query(
                "UPDATE operations SET status = 'queued', lease_holder = NULL, lease_expires_at = NULL, updated_at = $4
                 WHERE id = $1 AND status = 'running' AND lease_holder = $2 AND generation = $3 AND lease_expires_at >= $4
                 RETURNING *",
            ),
            $crate::common::Held::Touch => sqlx::query(
                "UPDATE operations SET updated_at = $4
                 WHERE id = $1 AND status = 'running' AND lease_holder = $2 AND generation = $3 AND lease_expires_at >= $4
                 RETURNING *",
            ),
        };
        let q = q
            .bind(&lease.operation_id)
            .bind(&lease.holder)
            .bind(lease.generation)
            .bind(now);
        let q = match change {
            $crate::common::Held::Renew(expiry) => q.bind(expiry),
            $crate::common::Held::Finish(s, r, e) => q.bind(s.as_str()).bind(r).bind(e),
            $crate::common::Held::Release | $crate::common::Held::Touch => q,
        };
        q.fetch_optional(&mut **tx).await?.map(|row| row_op(&row)).transpose()
    }

    /// Applies `change` under a held lease, with what else goes in the same transaction.
    async fn held_update(
        &self,
        lease: &Lease,
        now: Millis,
        change: $crate::common::Held,
        also: $crate::common::Also,
    ) -> Result<Operation, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(op) = Self::held_update_in(&mut tx, lease, now, change).await? else {
            drop(tx);
            return Err(self.lost(&lease.operation_id).await);
        };
        if let Some(c) = also.change {
            sqlx::query(
                "UPDATE instances SET status = CASE WHEN status = $6 THEN status ELSE COALESCE($1, status) END, state = $2,
                 request = COALESCE($3, request), updated_at = $4 WHERE id = $5",
            )
                .bind(&c.status)
                .bind(c.state.to_string())
                .bind(c.request.map(|r| r.to_string()))
                .bind(now)
                .bind(&op.instance_id)
                .bind(c.keep_status_if)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(a) = also.audit {
            self.audit_in(&mut tx, a, now).await?;
        }
        tx.commit().await?;
        Ok(op)
    }

    /// Appends `entry` to the audit log inside `tx`, chained to the last entry.
    async fn audit_in(
        &self,
        tx: &mut sqlx::Transaction<'static, Db>,
        entry: NewAuditEntry,
        now: Millis,
    ) -> Result<AuditEntry, StoreError> {
        check_audit(&entry)?;
        self.lock_audit(tx).await?;
        let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
        let (prev_seq, prev_hash): (i64, String) = match last {
            Some(row) => {
                use sqlx::Row as _;
                (row.try_get("seq")?, row.try_get("hash")?)
            }
            None => (0, audit::GENESIS.to_owned()),
        };
        let seq = prev_seq + 1;
        let hash = audit::entry_hash(&prev_hash, seq, now, &entry);
        let row = sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(seq)
        .bind(now)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.subject)
        .bind(entry.detail.to_string())
        .bind(&prev_hash)
        .bind(&hash)
        .fetch_one(&mut **tx)
        .await?;
        audit_from_row!(&row)
    }

    /// Queues `op` inside `tx` (the caller wakes the provider after committing).
    async fn enqueue_in(
        &self,
        tx: &mut sqlx::Transaction<'static, Db>,
        op: &NewOperation,
        now: Millis,
    ) -> Result<Operation, StoreError> {
        check_new(op)?;
        let row = sqlx::query(
            "INSERT INTO operations (id, provider_id, instance_id, kind, payload, status, agent_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7) RETURNING *",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&op.provider_id)
        .bind(&op.instance_id)
        .bind(&op.kind)
        .bind(op.payload.to_string())
        .bind(op.agent_id.as_deref())
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        row_op(&row)
    }

    async fn lost(&self, id: &str) -> StoreError {
        match self.operation(id).await {
            Ok(_) => StoreError::LeaseLost(id.to_owned()),
            Err(e) => e,
        }
    }
    };
}
pub(crate) use store_helpers;

/// `impl Store for $ty`: the methods both databases implement alike, plus the store's own
/// `claim` (passed in).
macro_rules! store_impl {
    ($ty:ty, $($claim:tt)*) => {
        #[async_trait::async_trait]
        impl $crate::Store for $ty {
        $($claim)*
    async fn enqueue(&self, op: NewOperation, now: Millis) -> Result<Operation, StoreError> {
        let mut tx = self.begin_write().await?;
        let queued = self.enqueue_in(&mut tx, &op, now).await?;
        tx.commit().await?;
        // After the commit: a lost wake-up only waits for the recheck.
        let _ = self.wake(&$crate::signal_for(&op)).await;
        Ok(queued)
    }

    async fn operation(&self, id: &str) -> Result<Operation, StoreError> {
        match sqlx::query("SELECT * FROM operations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => row_op(&row),
            None => Err(StoreError::NotFound(format!("operation {id}"))),
        }
    }

    async fn renew(&self, lease: &Lease, ttl_ms: i64, now: Millis) -> Result<Lease, StoreError> {
        check_ttl(ttl_ms)?;
        let op = self
            .held_update(lease, now, $crate::common::Held::Renew(now + ttl_ms), $crate::common::Also { change: None, audit: None })
            .await?;
        Ok(lease_of(&op))
    }

    async fn complete(
        &self,
        lease: &Lease,
        outcome: Outcome,
        change: Option<$crate::InstanceChange>,
        audit: Option<NewAuditEntry>,
        now: Millis,
    ) -> Result<Operation, StoreError> {
        let (s, r, e) = outcome_columns(&outcome);
        let op = self
            .held_update(lease, now, $crate::common::Held::Finish(s, r, e), $crate::common::Also { change, audit })
            .await?;
        // After the commit: a lost wake-up only waits for the recheck.
        let _ = self.wake(&format!("op:{}", op.id)).await;
        // The instance's next operation may be claimable now.
        // After the commit: a lost wake-up only waits for the recheck.
        let _ = self.wake(&op.provider_id).await;
        Ok(op)
    }

    async fn release(&self, lease: &Lease, now: Millis) -> Result<(), StoreError> {
        let op = self
            .held_update(lease, now, $crate::common::Held::Release, $crate::common::Also { change: None, audit: None })
            .await?;
        // After the commit: a lost wake-up only waits for the recheck.
        let _ = self.wake(&op.provider_id).await;
        Ok(())
    }

    fn work_signal(&self, provider_id: &str) -> std::sync::Arc<tokio::sync::Notify> {
        self.signals.get(provider_id)
    }

    async fn append_audit(&self, entry: NewAuditEntry, now: Millis) -> Result<AuditEntry, StoreError> {
        let mut tx = self.begin_write().await?;
        let e = self.audit_in(&mut tx, entry, now).await?;
        tx.commit().await?;
        Ok(e)
    }

    async fn create_provider(&self, name: &str, now: Millis) -> Result<Provider, StoreError> {
        agents::check_name("name", name)?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO providers (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| $crate::control::name_taken(e, "provider", name))?;
        Ok(Provider {
            id,
            name: name.to_owned(),
            created_at: now,
        })
    }

    async fn create_enrollment_token(
        &self,
        provider_id: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<EnrollmentToken, StoreError> {
        if !(60_000..=30 * 24 * 3_600_000).contains(&ttl_ms) {
            return Err(StoreError::Invalid {
                field: "ttl",
                reason: format!("a setup token lasts 1 minute to 30 days (got {ttl_ms} ms)"),
            });
        }
        let secret = agents::new_secret()?;
        let res = sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, provider_id, expires_at, created_at)
             SELECT $1, id, $2, $3 FROM providers WHERE id = $4",
        )
        .bind(agents::token_hash(&secret))
        .bind(now + ttl_ms)
        .bind(now)
        .bind(provider_id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("provider {provider_id}")));
        }
        Ok(EnrollmentToken {
            secret,
            provider_id: provider_id.to_owned(),
            expires_at: now + ttl_ms,
        })
    }

    async fn enroll_agent(&self, token: &str, name: &str, public_key: &str, now: Millis) -> Result<Agent, StoreError> {
        agents::check_name("name", name)?;
        agents::check_public_key(public_key)?;
        let mut tx = self.begin_write().await?;
        let used = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING provider_id",
        )
        .bind(now)
        .bind(agents::token_hash(token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = used else {
            return Err(StoreError::BadToken);
        };
        let provider_id: String = {
            use sqlx::Row as _;
            row.try_get("provider_id")?
        };
        let inserted = sqlx::query(
            "INSERT INTO agents (id, provider_id, name, public_key, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&provider_id)
        .bind(name)
        .bind(public_key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            // Dropping the transaction rolls back: the token stays usable.
            Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                return Err(StoreError::Conflict("this public key is already enrolled".into()));
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        agents::agent_from_row!(&row)
    }

    async fn agent(&self, id: &str) -> Result<Agent, StoreError> {
        match sqlx::query("SELECT * FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => agents::agent_from_row!(&row),
            None => Err(StoreError::NotFound(format!("agent {id}"))),
        }
    }

    async fn revoke_agent(&self, id: &str, now: Millis) -> Result<Agent, StoreError> {
        sqlx::query("UPDATE agents SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.agent(id).await
    }

    async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after_seq)
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| audit_from_row!(r)).collect()
    }
        }
        $crate::control_impl::control_impl!($ty);
        $crate::inbox::inbox_impl!($ty);
        $crate::quota::quota_impl!($ty);
        $crate::replay::replay_impl!($ty);
        $crate::tokens::tokens_impl!($ty);
    };
}
pub(crate) use store_impl;
