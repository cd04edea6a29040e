//! Quotas: how much one account (a customer, or a provider) may hold. The server's
//! `[quotas]` gives the defaults; an operator may set other numbers for one account, kept
//! here. Checks run inside the transaction that would exceed them, serialised with every other
//! creator, so concurrent orders cannot slip past together.

use serde::{Deserialize, Serialize};

use crate::{Millis, NewAuditEntry, StoreError};

/// One account's own numbers; `None` keeps the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Instances not terminated.
    pub instances: Option<i64>,
    /// Instances recorded and not provisioned yet (`pending`).
    pub pending_instances: Option<i64>,
    /// Offerings not withdrawn (providers).
    pub offerings: Option<i64>,
    /// API tokens live (neither revoked nor expired).
    pub tokens: Option<i64>,
}

#[async_trait::async_trait]
pub trait Quotas: Send + Sync {
    /// The numbers set for `account_id` (all `None` when none were).
    async fn quota(&self, account_id: &str) -> Result<Quota, StoreError>;

    /// Sets `account_id`'s numbers (an all-`None` quota returns it to the defaults), with
    /// `audit`, in one transaction.
    async fn set_quota(
        &self,
        account_id: &str,
        quota: Quota,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<Quota, StoreError>;
}

/// Refuses (`return Err(Quota)`) an instance its account has no room for, in `$tx`.
macro_rules! check_instances {
    ($tx:expr, $new:expr, $q:expr) => {{
        use sqlx::Row as _;
        let new: &$crate::NewInstance = $new;
        let q: &$crate::InstanceQuota = $q;
        let row = sqlx::query(
            "SELECT COUNT(*) AS held, COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending
             FROM instances WHERE status <> 'terminated'
             AND (($1 IS NOT NULL AND customer_id = $1) OR ($1 IS NULL AND customer_id IS NULL AND provider_id = $2))",
        )
        .bind(new.customer_id.as_deref())
        .bind(&new.provider_id)
        .fetch_one($tx)
        .await?;
        let (held, pending): (i64, i64) = (row.try_get("held")?, row.try_get("pending")?);
        if held >= q.instances {
            return Err(StoreError::Quota {
                what: "instances",
                limit: q.instances,
            });
        }
        if new.status == "pending" && pending >= q.pending_instances {
            return Err(StoreError::Quota {
                what: "pending_instances",
                limit: q.pending_instances,
            });
        }
    }};
}
pub(crate) use check_instances;

/// Refuses (`return Err(Quota)`) an offering its provider has no room for, in `$tx`.
macro_rules! check_offerings {
    ($tx:expr, $provider_id:expr, $limit:expr) => {{
        use sqlx::Row as _;
        let limit: i64 = $limit;
        let row = sqlx::query("SELECT COUNT(*) AS held FROM offerings WHERE provider_id = $1 AND withdrawn_at IS NULL")
            .bind($provider_id)
            .fetch_one($tx)
            .await?;
        if row.try_get::<i64, _>("held")? >= limit {
            return Err(StoreError::Quota {
                what: "offerings",
                limit,
            });
        }
    }};
}
pub(crate) use check_offerings;

/// `impl Quotas` for a store, expanded by `store_impl!`.
macro_rules! quota_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::quota::Quotas for $ty {
            async fn quota(&self, account_id: &str) -> Result<$crate::quota::Quota, StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT * FROM quotas WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    None => Ok($crate::quota::Quota::default()),
                    Some(r) => Ok($crate::quota::Quota {
                        instances: r.try_get("instances")?,
                        pending_instances: r.try_get("pending_instances")?,
                        offerings: r.try_get("offerings")?,
                        tokens: r.try_get("tokens")?,
                    }),
                }
            }

            async fn set_quota(
                &self,
                account_id: &str,
                quota: $crate::quota::Quota,
                audit: NewAuditEntry,
                now: Millis,
            ) -> Result<$crate::quota::Quota, StoreError> {
                let mut tx = self.begin_write().await?;
                let known =
                    sqlx::query("SELECT id FROM customers WHERE id = $1 UNION SELECT id FROM providers WHERE id = $1")
                        .bind(account_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if known.is_none() {
                    return Err(StoreError::NotFound(format!("account {account_id}")));
                }
                sqlx::query("DELETE FROM quotas WHERE account_id = $1")
                    .bind(account_id)
                    .execute(&mut *tx)
                    .await?;
                if quota != $crate::quota::Quota::default() {
                    sqlx::query(
                        "INSERT INTO quotas (account_id, instances, pending_instances, offerings, tokens, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(account_id)
                    .bind(quota.instances)
                    .bind(quota.pending_instances)
                    .bind(quota.offerings)
                    .bind(quota.tokens)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                self.audit_in(&mut tx, audit, now).await?;
                tx.commit().await?;
                Ok(quota)
            }
        }
    };
}
pub(crate) use quota_impl;
