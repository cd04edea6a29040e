//! Quotas: the numbers in force for an account (the server's `[quotas]`, or what an operator
//! set for it), read by operators and by the account itself, set by operators.

use axum::extract::{Path, State};
use berth_api::wire::*;
use berth_store::{InstanceQuota, NewAuditEntry, Quota, StoreError};

use crate::auth::{Authed, Caller, Json};
use crate::problem::{ApiError, ApiResult};
use crate::{AppState, now_ms};

/// The highest number an operator may set.
pub const MAX: i64 = 1_000_000;

async fn in_force(st: &AppState, account_id: &str) -> ApiResult<QuotaView> {
    let own = st.store.quota(account_id).await?;
    let d = &st.cfg.quotas;
    Ok(QuotaView {
        account_id: account_id.to_owned(),
        instances: own.instances.unwrap_or(d.instances),
        pending_instances: own.pending_instances.unwrap_or(d.pending_instances),
        offerings: own.offerings.unwrap_or(d.offerings),
        tokens: own.tokens.unwrap_or(d.tokens),
        own: SetQuota {
            instances: own.instances,
            pending_instances: own.pending_instances,
            offerings: own.offerings,
            tokens: own.tokens,
        },
    })
}

/// What an instance of `provider_id` is counted against: its customer's quota and what the
/// provider lets that customer hold, or, for the provider's own machine, the provider's quota.
pub async fn instance_quota(st: &AppState, provider_id: &str, customer_id: Option<&str>) -> ApiResult<InstanceQuota> {
    let q = in_force(st, customer_id.unwrap_or(provider_id)).await?;
    let of_provider = match customer_id {
        Some(c) => super::customer_quotas::in_force(st, provider_id, c).await?,
        None => Default::default(),
    };
    Ok(InstanceQuota {
        instances: q.instances,
        pending_instances: q.pending_instances,
        of_provider,
    })
}

/// How many offerings `provider_id` may have.
pub async fn offering_quota(st: &AppState, provider_id: &str) -> ApiResult<i64> {
    Ok(in_force(st, provider_id).await?.offerings)
}

/// How many live API tokens `(role, subject)` may hold (operators: the default).
pub async fn token_quota(st: &AppState, subject: &str, role: berth_store::Role) -> ApiResult<i64> {
    if role == berth_store::Role::Operator {
        return Ok(st.cfg.quotas.tokens);
    }
    Ok(in_force(st, subject).await?.tokens)
}

/// A refused quota, as the API says it.
pub fn exceeded(e: StoreError) -> ApiError {
    match e {
        StoreError::Quota { what, limit } if what.starts_with("provider_") => ApiError::conflict(
            "quota_exceeded",
            format!(
                "this provider lets this customer hold {limit} {}; the provider can raise it",
                what.trim_start_matches("provider_").replace('_', " ")
            ),
        ),
        StoreError::Quota { what, limit } => ApiError::conflict(
            "quota_exceeded",
            format!("the {what} quota of this account ({limit}) is reached; an operator can raise it"),
        ),
        other => other.into(),
    }
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/quota", tag = "accounts", params(("id" = String, Path, description = "a customer or provider id")),
    responses((status = 200, body = QuotaView, description = "operators: any account; providers and customers: their own"),
        (status = "4XX", body = Problem)))]
pub async fn get_quota(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed,
) -> ApiResult<axum::Json<QuotaView>> {
    req.caller.require_authenticated()?;
    let own = match &req.caller {
        Caller::Operator => true,
        Caller::Provider(p) | Caller::Customer(p) => *p == id,
        _ => false,
    };
    if !own {
        return Err(ApiError::NotFound(format!("account {id}")));
    }
    if matches!(req.caller, Caller::Operator) {
        crate::routes::tokens::account_of(&st, &id).await?;
    }
    Ok(axum::Json(in_force(&st, &id).await?))
}

#[utoipa::path(put, path = "/api/v1/accounts/{id}/quota", tag = "accounts", params(("id" = String, Path, description = "a customer or provider id")),
    request_body = SetQuota,
    responses((status = 200, body = QuotaView), (status = "4XX", body = Problem)))]
pub async fn set_quota(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<SetQuota>>,
) -> ApiResult<axum::Json<QuotaView>> {
    req.caller.require_operator()?;
    let q = req.body.get()?;
    in_range(&[
        ("instances", q.instances),
        ("pending_instances", q.pending_instances),
        ("offerings", q.offerings),
        ("tokens", q.tokens),
    ])?;
    let quota = Quota {
        instances: q.instances,
        pending_instances: q.pending_instances,
        offerings: q.offerings,
        tokens: q.tokens,
    };
    let audit = NewAuditEntry {
        actor: req.caller.actor(),
        action: "quota.set".into(),
        subject: format!("account:{id}"),
        detail: serde_json::to_value(q).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    match st.store.set_quota(&id, quota, audit, now_ms()).await {
        Ok(_) => Ok(axum::Json(in_force(&st, &id).await?)),
        Err(StoreError::NotFound(_)) => Err(ApiError::NotFound(format!("account {id}"))),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a number outside 0..=[`MAX`], by field.
pub fn in_range(numbers: &[(&str, Option<i64>)]) -> ApiResult<()> {
    for (field, v) in numbers {
        if let Some(v) = v
            && !(0..=MAX).contains(v)
        {
            return Err(ApiError::invalid(
                *field,
                format!("must be between 0 and {MAX} (got {v})"),
            ));
        }
    }
    Ok(())
}
