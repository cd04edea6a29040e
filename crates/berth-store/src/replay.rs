//! What makes a repeated request harmless: the nonces of signed agent requests (each accepted
//! once, across every replica) and `Idempotency-Key`s (a retry replays the first answer). Keys
//! are kept [`IDEMPOTENCY_TTL_MS`]; one still "in progress" after [`IN_PROGRESS_MS`] (its
//! request died with its client or its server) is freed, so the retry runs.

use crate::{Millis, StoreError};

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_MS: Millis = 24 * 3600 * 1000;
/// A request still running after this never finished: its key is taken again. Longer than any
/// request may run (`limits.response_timeout_seconds` is at most an hour).
pub const IN_PROGRESS_MS: Millis = 3600 * 1000;

/// Where an idempotent request stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Idempotency {
    /// First time: go ahead, then record the response.
    New,
    /// Another request with this key is still running.
    InProgress,
    /// Done before: replay this status and body.
    Done(u16, serde_json::Value),
    /// The key was used for a different request.
    Mismatch,
}

#[async_trait::async_trait]
pub trait Replay: Send + Sync {
    /// `true` the first time `(keyid, nonce)` is seen; remembered until `expires_at`. Expired
    /// nonces are swept now and then. Shared by every replica on the database.
    async fn nonce_first_use(
        &self,
        keyid: &str,
        nonce: &str,
        expires_at: Millis,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Starts an idempotent request under `(scope, key)` with the request's `fingerprint`. A key
    /// older than a day, or in progress for over an hour, counts as new.
    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: Millis,
    ) -> Result<Idempotency, StoreError>;

    /// Records the response of a request begun with [`Replay::idempotency_begin`]; a response
    /// that is not to be replayed (`None`) frees the key for a retry.
    async fn idempotency_end(
        &self,
        scope: &str,
        key: &str,
        response: Option<(u16, serde_json::Value)>,
    ) -> Result<(), StoreError>;
}

/// `impl Replay` for a store, expanded by `store_impl!`.
macro_rules! replay_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::replay::Replay for $ty {
            async fn nonce_first_use(
                &self,
                keyid: &str,
                nonce: &str,
                expires_at: Millis,
                now: Millis,
            ) -> Result<bool, StoreError> {
                // Sweep now and then (about one call in 64), not on every request.
                if getrandom::u32().is_ok_and(|r| r % 64 == 0) {
                    sqlx::query("DELETE FROM nonces WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
                }
                let res =
                    sqlx::query("INSERT INTO nonces (keyid, nonce, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                        .bind(keyid)
                        .bind(nonce)
                        .bind(expires_at)
                        .execute(&self.pool)
                        .await?;
                Ok(res.rows_affected() == 1)
            }

            async fn idempotency_begin(
                &self,
                scope: &str,
                key: &str,
                fingerprint: &str,
                now: Millis,
            ) -> Result<$crate::replay::Idempotency, StoreError> {
                use sqlx::Row as _;
                let expired = now - $crate::replay::IDEMPOTENCY_TTL_MS;
                let abandoned = now - $crate::replay::IN_PROGRESS_MS;
                // Now and then every expired key goes; this one always, if it has.
                if getrandom::u32().is_ok_and(|r| r % 64 == 0) {
                    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                        .bind(expired)
                        .execute(&self.pool)
                        .await?;
                }
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2
                     AND (created_at < $3 OR (status IS NULL AND created_at < $4))",
                )
                .bind(scope)
                .bind(key)
                .bind(expired)
                .bind(abandoned)
                .execute(&self.pool)
                .await?;
                let res = sqlx::query(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(scope)
                .bind(key)
                .bind(fingerprint)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if res.rows_affected() == 1 {
                    return Ok($crate::replay::Idempotency::New);
                }
                let row = sqlx::query("SELECT fingerprint, status, response FROM idempotency_keys WHERE scope = $1 AND key = $2")
                    .bind(scope)
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?;
                if row.try_get::<String, _>("fingerprint")? != fingerprint {
                    return Ok($crate::replay::Idempotency::Mismatch);
                }
                let status: Option<i64> = row.try_get("status")?;
                let response: Option<String> = row.try_get("response")?;
                Ok(match (status, response) {
                    (Some(s), Some(r)) => $crate::replay::Idempotency::Done(s as u16, $crate::control::json_col(r)?),
                    _ => $crate::replay::Idempotency::InProgress,
                })
            }

            async fn idempotency_end(
                &self,
                scope: &str,
                key: &str,
                response: Option<(u16, serde_json::Value)>,
            ) -> Result<(), StoreError> {
                match response {
                    Some((status, body)) => {
                        sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE scope = $3 AND key = $4")
                            .bind(i64::from(status))
                            .bind(body.to_string())
                            .bind(scope)
                            .bind(key)
                            .execute(&self.pool)
                            .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
                            .bind(scope)
                            .bind(key)
                            .execute(&self.pool)
                            .await?;
                    }
                }
                Ok(())
            }
        }
    };
}
pub(crate) use replay_impl;
