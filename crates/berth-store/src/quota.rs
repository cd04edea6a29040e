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

/// What a provider lets one customer hold of its instances (on top of the customer's own
/// quota); `None`: no bound of the provider's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerQuota {
    pub instances: Option<i64>,
    pub pending_instances: Option<i64>,
}

impl CustomerQuota {
    /// These numbers, each one not set taken from `fallback`.
    pub fn or(self, fallback: CustomerQuota) -> CustomerQuota {
        CustomerQuota {
            instances: self.instances.or(fallback.instances),
            pending_instances: self.pending_instances.or(fallback.pending_instances),
        }
    }
}

/// The customer key of a provider's numbers for every customer without its own.
pub const EVERY_CUSTOMER: &str = "default";

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

    /// What `provider_id` set for `customer_id` (or [`EVERY_CUSTOMER`]) exactly.
    async fn customer_quota(&self, provider_id: &str, customer_id: &str) -> Result<CustomerQuota, StoreError>;

    /// Every customer `provider_id` set numbers for, by customer id.
    async fn customer_quotas(
        &self,
        provider_id: &str,
        page: &crate::Page,
    ) -> Result<Vec<(String, CustomerQuota)>, StoreError>;

    /// Sets what `provider_id` lets `customer_id` (or [`EVERY_CUSTOMER`]) hold (all `None`:
    /// removes it), with `audit`, in one transaction. Unknown provider or customer: `NotFound`.
    async fn set_customer_quota(
        &self,
        provider_id: &str,
        customer_id: &str,
        quota: CustomerQuota,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<CustomerQuota, StoreError>;
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
        let p = q.of_provider;
        if let Some(customer) = new.customer_id.as_deref()
            && (p.instances.is_some() || p.pending_instances.is_some())
        {
            let row = sqlx::query(
                "SELECT COUNT(*) AS held, COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending
                 FROM instances WHERE status <> 'terminated' AND customer_id = $1 AND provider_id = $2",
            )
            .bind(customer)
            .bind(&new.provider_id)
            .fetch_one($tx)
            .await?;
            let (held, pending): (i64, i64) = (row.try_get("held")?, row.try_get("pending")?);
            if let Some(limit) = p.instances.filter(|l| held >= *l) {
                return Err(StoreError::Quota {
                    what: "provider_instances",
                    limit,
                });
            }
            if let Some(limit) = p.pending_instances.filter(|l| new.status == "pending" && pending >= *l) {
                return Err(StoreError::Quota {
                    what: "provider_pending_instances",
                    limit,
                });
            }
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
                // Serialised with every other writer (PostgreSQL takes no lock until the
                // audit append otherwise): two sets at once must not both insert.
                self.lock_audit(&mut tx).await?;
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

            async fn customer_quota(
                &self,
                provider_id: &str,
                customer_id: &str,
            ) -> Result<$crate::quota::CustomerQuota, StoreError> {
                let row = sqlx::query("SELECT * FROM customer_quotas WHERE provider_id = $1 AND customer_id = $2")
                    .bind(provider_id)
                    .bind(customer_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    None => Default::default(),
                    Some(r) => $crate::quota::customer_quota_of(&r)?,
                })
            }

            async fn customer_quotas(
                &self,
                provider_id: &str,
                page: &$crate::Page,
            ) -> Result<Vec<(String, $crate::quota::CustomerQuota)>, StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT * FROM customer_quotas WHERE provider_id = $1 AND customer_id > $2
                     ORDER BY customer_id LIMIT $3",
                )
                .bind(provider_id)
                .bind(page.after.as_deref().unwrap_or(""))
                .bind(page.limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("customer_id")?, $crate::quota::customer_quota_of(r)?)))
                    .collect()
            }

            async fn set_customer_quota(
                &self,
                provider_id: &str,
                customer_id: &str,
                quota: $crate::quota::CustomerQuota,
                audit: NewAuditEntry,
                now: Millis,
            ) -> Result<$crate::quota::CustomerQuota, StoreError> {
                let mut tx = self.begin_write().await?;
                self.lock_audit(&mut tx).await?;
                let provider = sqlx::query("SELECT id FROM providers WHERE id = $1")
                    .bind(provider_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if provider.is_none() {
                    return Err(StoreError::NotFound(format!("provider {provider_id}")));
                }
                if customer_id != $crate::quota::EVERY_CUSTOMER {
                    let customer = sqlx::query("SELECT id FROM customers WHERE id = $1")
                        .bind(customer_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if customer.is_none() {
                        return Err(StoreError::NotFound(format!("customer {customer_id}")));
                    }
                }
                sqlx::query("DELETE FROM customer_quotas WHERE provider_id = $1 AND customer_id = $2")
                    .bind(provider_id)
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?;
                if quota != $crate::quota::CustomerQuota::default() {
                    sqlx::query(
                        "INSERT INTO customer_quotas (provider_id, customer_id, instances, pending_instances, updated_at)
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(provider_id)
                    .bind(customer_id)
                    .bind(quota.instances)
                    .bind(quota.pending_instances)
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

/// A `customer_quotas` row's numbers.
pub(crate) fn customer_quota_of<R>(r: &R) -> Result<CustomerQuota, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(CustomerQuota {
        instances: r.try_get("instances")?,
        pending_instances: r.try_get("pending_instances")?,
    })
}
