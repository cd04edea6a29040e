//! API tokens over their life: an account is made with its first token and its audit entry
//! in one transaction; an account's tokens are listed (never their secrets), made with a name
//! and an expiry, revoked, and rotated (a new secret under the same name and lifetime, the old
//! one revoked, in one transaction). A token's id is the first 16 hex digits of its hash: it
//! names the token without revealing anything that opens it.

use crate::{ApiToken, Millis, NewAuditEntry, Role, StoreError};

/// What is known of a token: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    /// The provider or customer id; empty for operators.
    pub subject: String,
    pub name: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// A token made now: its secret (shown once) and what is kept of it.
#[derive(Debug)]
pub struct Issued {
    pub token: ApiToken,
    pub info: TokenInfo,
}

#[async_trait::async_trait]
pub trait Tokens: Send + Sync {
    /// A provider or customer named `name`, its first API token (`initial`) and `audit`
    /// (its subject filled in), in one transaction: all three or none.
    async fn create_account(
        &self,
        role: Role,
        name: &str,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<(String, Issued), StoreError>;

    /// The tokens of `(role, subject)`, oldest first, revoked and expired ones included.
    async fn tokens(&self, role: Role, subject: &str) -> Result<Vec<TokenInfo>, StoreError>;

    /// A new token for `(role, subject)` named `name`, valid until `expires_at` (`None`: until
    /// revoked), with `audit`; refused (`Quota`) when the account already has `max` live ones.
    #[allow(clippy::too_many_arguments)]
    async fn issue_token(
        &self,
        role: Role,
        subject: &str,
        name: &str,
        expires_at: Option<Millis>,
        max: i64,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<Issued, StoreError>;

    /// Revokes `(role, subject)`'s token `id` (`NotFound` if it has none such; revoking twice is
    /// harmless). The last live operator token is not revoked (`Conflict`): nobody could
    /// operate the control plane after it.
    async fn revoke_token(
        &self,
        role: Role,
        subject: &str,
        id: &str,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<TokenInfo, StoreError>;

    /// A new secret for `(role, subject)`'s live token `id`: same name, same lifetime from now;
    /// the old secret is revoked in the same transaction.
    async fn rotate_token(
        &self,
        role: Role,
        subject: &str,
        id: &str,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<Issued, StoreError>;
}

macro_rules! token_from_row {
    ($r:expr) => {{
        use sqlx::Row as _;
        let r = $r;
        Ok::<_, $crate::StoreError>($crate::tokens::TokenInfo {
            id: r.try_get("id")?,
            role: $crate::Role::parse(&r.try_get::<String, _>("role")?)?,
            subject: r.try_get("subject")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }};
}
pub(crate) use token_from_row;

/// `impl Tokens` for a store, expanded by `store_impl!`.
macro_rules! tokens_impl {
    ($ty:ty) => {
        impl $ty {
            /// Stores `token` in `tx` and reads back what is kept of it.
            async fn insert_token_in(
                tx: &mut sqlx::Transaction<'static, Db>,
                token: &$crate::ApiToken,
                name: &str,
                expires_at: Option<Millis>,
                now: Millis,
            ) -> Result<$crate::tokens::TokenInfo, StoreError> {
                $crate::agents::check_name("name", name)?;
                let row = sqlx::query(
                    "INSERT INTO api_tokens (token_hash, role, subject, name, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     RETURNING substr(token_hash, 1, 16) AS id, role, subject, name, created_at, expires_at, revoked_at",
                )
                .bind($crate::agents::token_hash(&token.secret))
                .bind(token.role.as_str())
                .bind(&token.subject)
                .bind(name)
                .bind(now)
                .bind(expires_at)
                .fetch_one(&mut **tx)
                .await?;
                $crate::tokens::token_from_row!(&row)
            }

            async fn revoke_in(
                tx: &mut sqlx::Transaction<'static, Db>,
                role: $crate::Role,
                subject: &str,
                id: &str,
                now: Millis,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1
                     WHERE role = $2 AND subject = $3 AND substr(token_hash, 1, 16) = $4",
                )
                .bind(now)
                .bind(role.as_str())
                .bind(subject)
                .bind(id)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn token_in(
                tx: &mut sqlx::Transaction<'static, Db>,
                role: $crate::Role,
                subject: &str,
                id: &str,
            ) -> Result<$crate::tokens::TokenInfo, StoreError> {
                let row = sqlx::query(
                    "SELECT substr(token_hash, 1, 16) AS id, role, subject, name, created_at, expires_at, revoked_at
                     FROM api_tokens WHERE role = $1 AND subject = $2 AND substr(token_hash, 1, 16) = $3",
                )
                .bind(role.as_str())
                .bind(subject)
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
                $crate::tokens::token_from_row!(&row)
            }
        }

        #[async_trait::async_trait]
        impl $crate::tokens::Tokens for $ty {
            async fn create_account(
                &self,
                role: $crate::Role,
                name: &str,
                audit: NewAuditEntry,
                now: Millis,
            ) -> Result<(String, $crate::tokens::Issued), StoreError> {
                $crate::agents::check_name("name", name)?;
                let insert = match role {
                    $crate::Role::Provider => "INSERT INTO providers (id, name, created_at) VALUES ($1, $2, $3)",
                    $crate::Role::Customer => "INSERT INTO customers (id, name, created_at) VALUES ($1, $2, $3)",
                    $crate::Role::Operator => {
                        return Err(StoreError::Invalid {
                            field: "role",
                            reason: "operators are no account".into(),
                        });
                    }
                };
                let id = uuid::Uuid::new_v4().to_string();
                let mut tx = self.begin_write().await?;
                sqlx::query(insert)
                    .bind(&id)
                    .bind(name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::control::name_taken(e, "provider", name))?;
                let token = $crate::ApiToken::generate(role, &id)?;
                let info = Self::insert_token_in(&mut tx, &token, "initial", None, now).await?;
                let mut audit = audit;
                audit.subject = format!("{}:{id}", role.as_str());
                self.audit_in(&mut tx, audit, now).await?;
                tx.commit().await?;
                Ok((id, $crate::tokens::Issued { token, info }))
            }

            async fn tokens(&self, role: $crate::Role, subject: &str) -> Result<Vec<$crate::tokens::TokenInfo>, StoreError> {
                let rows = sqlx::query(
                    "SELECT substr(token_hash, 1, 16) AS id, role, subject, name, created_at, expires_at, revoked_at
                     FROM api_tokens WHERE role = $1 AND subject = $2 ORDER BY created_at, token_hash",
                )
                .bind(role.as_str())
                .bind(subject)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| $crate::tokens::token_from_row!(r)).collect()
            }

            async fn issue_token(
                &self,
                role: $crate::Role,
                subject: &str,
                name: &str,
                expires_at: Option<Millis>,
                max: i64,
                audit: NewAuditEntry,
                now: Millis,
            ) -> Result<$crate::tokens::Issued, StoreError> {
                use sqlx::Row as _;
                let mut tx = self.begin_write().await?;
                self.lock_audit(&mut tx).await?;
                let live: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM api_tokens WHERE role = $1 AND subject = $2 AND revoked_at IS NULL
                     AND (expires_at IS NULL OR expires_at > $3)",
                )
                .bind(role.as_str())
                .bind(subject)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
                if live >= max {
                    return Err(StoreError::Quota { what: "tokens", limit: max });
                }
                let token = $crate::ApiToken::generate(role, subject)?;
                let info = Self::insert_token_in(&mut tx, &token, name, expires_at, now).await?;
                let mut audit = audit;
                audit.subject = format!("token:{}", info.id);
                self.audit_in(&mut tx, audit, now).await?;
                tx.commit().await?;
                Ok($crate::tokens::Issued { token, info })
            }

            async fn revoke_token(
                &self,
                role: $crate::Role,
                subject: &str,
                id: &str,
                audit: NewAuditEntry,
                now: Millis,
            ) -> Result<$crate::tokens::TokenInfo, StoreError> {
                let mut tx = self.begin_write().await?;
                self.lock_audit(&mut tx).await?;
                let before = Self::token_in(&mut tx, role, subject, id).await?;
                if before.revoked_at.is_some() {
                    return Ok(before);
                }
                if role == $crate::Role::Operator {
                    use sqlx::Row as _;
                    let live: i64 = sqlx::query(
                        "SELECT COUNT(*) AS n FROM api_tokens WHERE role = 'operator' AND revoked_at IS NULL
                         AND (expires_at IS NULL OR expires_at > $1)",
                    )
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                    if live <= 1 {
                        return Err(StoreError::Conflict(
                            "this is the last operator token: make another one before revoking it".into(),
                        ));
                    }
                }
                Self::revoke_in(&mut tx, role, subject, id, now).await?;
                let mut audit = audit;
                audit.subject = format!("token:{id}");
                self.audit_in(&mut tx, audit, now).await?;
                let after = Self::token_in(&mut tx, role, subject, id).await?;
                tx.commit().await?;
                Ok(after)
            }

            async fn rotate_token(
                &self,
                role: $crate::Role,
                subject: &str,
                id: &str,
                audit: NewAuditEntry,
                now: Millis,
            ) -> Result<$crate::tokens::Issued, StoreError> {
                let mut tx = self.begin_write().await?;
                self.lock_audit(&mut tx).await?;
                let old = Self::token_in(&mut tx, role, subject, id).await?;
                if old.revoked_at.is_some() || old.expires_at.is_some_and(|e| e <= now) {
                    return Err(StoreError::Conflict(format!(
                        "token {id} is revoked or expired; make a new one instead"
                    )));
                }
                let expires_at = old.expires_at.map(|e| now + (e - old.created_at));
                let token = $crate::ApiToken::generate(role, subject)?;
                let info = Self::insert_token_in(&mut tx, &token, &old.name, expires_at, now).await?;
                Self::revoke_in(&mut tx, role, subject, id, now).await?;
                let mut audit = audit;
                audit.subject = format!("token:{id}");
                if let Some(d) = audit.detail.as_object_mut() {
                    d.insert("new_token".into(), serde_json::Value::String(info.id.clone()));
                }
                self.audit_in(&mut tx, audit, now).await?;
                tx.commit().await?;
                Ok($crate::tokens::Issued { token, info })
            }
        }
    };
}
pub(crate) use tokens_impl;
