//! What a person submits for an operation that waits on them (the manual backend's
//! `waiting_for_operator` stage), kept until the agent running the operation has taken it and
//! said how applying it went. One input per operation; a new one is accepted only after the
//! agent could not apply the last. Nothing secret is kept: a root password arrives here already
//! sealed to the requester's age key.

use crate::{Lease, Millis, StoreError};

/// What the caller asks to keep.
pub struct NewInput {
    pub operation_id: String,
    /// `complete`, `fail` or `cancel`.
    pub action: String,
    pub body: serde_json::Value,
    /// Who submitted it (an audit actor).
    pub submitted_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorInput {
    pub operation_id: String,
    pub action: String,
    pub body: serde_json::Value,
    pub submitted_by: String,
    pub submitted_at: Millis,
    /// When the agent said it took it.
    pub taken_at: Option<Millis>,
    /// Why the agent could not apply it.
    pub error: Option<String>,
}

#[async_trait::async_trait]
pub trait Inbox: Send + Sync {
    /// Keeps `input` for its operation and wakes whoever follows the operation (the agent's
    /// long-poll among them). `Conflict` while an earlier input waits for the agent or was
    /// applied; one the agent could not apply is replaced.
    async fn submit_input(&self, input: NewInput, now: Millis) -> Result<OperatorInput, StoreError>;

    /// The operation's input, if any.
    async fn input(&self, operation_id: &str) -> Result<Option<OperatorInput>, StoreError>;

    /// The agent holding `lease` took the input (`error`: why it could not apply it).
    /// `LeaseLost` when the lease is not held; `NotFound` without an input waiting.
    async fn take_input(&self, lease: &Lease, error: Option<&str>, now: Millis) -> Result<OperatorInput, StoreError>;
}

macro_rules! input_from_row {
    ($r:expr) => {{
        use sqlx::Row as _;
        let r = $r;
        Ok::<_, $crate::StoreError>($crate::inbox::OperatorInput {
            operation_id: r.try_get("operation_id")?,
            action: r.try_get("action")?,
            body: $crate::control::json_col(r.try_get("body")?)?,
            submitted_by: r.try_get("submitted_by")?,
            submitted_at: r.try_get("submitted_at")?,
            taken_at: r.try_get("taken_at")?,
            error: r.try_get("error")?,
        })
    }};
}
pub(crate) use input_from_row;

/// `impl Inbox` for a store, expanded by `store_impl!`.
macro_rules! inbox_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::inbox::Inbox for $ty {
            async fn submit_input(
                &self,
                input: $crate::inbox::NewInput,
                now: Millis,
            ) -> Result<$crate::inbox::OperatorInput, StoreError> {
                let mut tx = self.begin_write().await?;
                let before = sqlx::query("SELECT * FROM operator_inputs WHERE operation_id = $1")
                    .bind(&input.operation_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = before {
                    let b = $crate::inbox::input_from_row!(&row)?;
                    match (&b.taken_at, &b.error) {
                        (None, _) => {
                            return Err(StoreError::Conflict(format!(
                                "an input ({}) submitted by {} waits for the agent",
                                b.action, b.submitted_by
                            )));
                        }
                        (Some(_), None) => {
                            return Err(StoreError::Conflict(format!(
                                "an input ({}) submitted by {} was already applied",
                                b.action, b.submitted_by
                            )));
                        }
                        (Some(_), Some(_)) => {
                            sqlx::query("DELETE FROM operator_inputs WHERE operation_id = $1")
                                .bind(&input.operation_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                let row = sqlx::query(
                    "INSERT INTO operator_inputs (operation_id, action, body, submitted_by, submitted_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
                )
                .bind(&input.operation_id)
                .bind(&input.action)
                .bind(input.body.to_string())
                .bind(&input.submitted_by)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let kept = $crate::inbox::input_from_row!(&row)?;
                tx.commit().await?;
                // After the commit: a lost wake-up only waits for the recheck.
                let _ = self.wake(&format!("op:{}", input.operation_id)).await;
                Ok(kept)
            }

            async fn input(&self, operation_id: &str) -> Result<Option<$crate::inbox::OperatorInput>, StoreError> {
                let row = sqlx::query("SELECT * FROM operator_inputs WHERE operation_id = $1")
                    .bind(operation_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref()
                    .map(|r| $crate::inbox::input_from_row!(r))
                    .transpose()
            }

            async fn take_input(
                &self,
                lease: &Lease,
                error: Option<&str>,
                now: Millis,
            ) -> Result<$crate::inbox::OperatorInput, StoreError> {
                let mut tx = self.begin_write().await?;
                if Self::held_update_in(&mut tx, lease, now, $crate::common::Held::Touch)
                    .await?
                    .is_none()
                {
                    drop(tx);
                    return Err(self.lost(&lease.operation_id).await);
                }
                let row = sqlx::query(
                    "UPDATE operator_inputs SET taken_at = $2, error = $3
             WHERE operation_id = $1 AND taken_at IS NULL RETURNING *",
                )
                .bind(&lease.operation_id)
                .bind(now)
                .bind(error)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Err(StoreError::NotFound(format!(
                        "an input waiting for operation {}",
                        lease.operation_id
                    )));
                };
                let taken = $crate::inbox::input_from_row!(&row)?;
                tx.commit().await?;
                let _ = self.wake(&format!("op:{}", lease.operation_id)).await;
                Ok(taken)
            }
        }
    };
}
pub(crate) use inbox_impl;
