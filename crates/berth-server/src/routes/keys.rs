//! A customer's saved public keys: SSH keys to pick at order time and the age key credentials
//! are sealed to, so neither has to be pasted into every order. Public halves only: a private
//! key is refused by the same check as an order's key. Customers only; another customer's key
//! answers 404.

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use berth_api::wire::*;
use berth_store::{CustomerKey, NewAuditEntry, StoreError};

use crate::auth::{Authed, Json};
use crate::paging::{PageQuery, paged};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::routes::instances::{check_age_recipient, ssh_key};
use crate::{AppState, now_ms};

/// How many keys one account may hold.
const MAX_KEYS: usize = 50;

fn view(k: CustomerKey) -> KeyView {
    KeyView {
        id: k.id,
        kind: k.kind,
        name: k.name,
        public_key: k.public_key,
        created_at: k.created_at,
    }
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "accounts", params(PageQuery),
    responses((status = 200, body = [KeyView], description = "the calling customer's saved keys"), (status = "4XX", body = Problem)))]
pub async fn list_keys(
    State(st): State<AppState>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    let customer = req.caller.require_customer()?;
    let page = parse_query::<PageQuery>(q.as_deref())?.page()?;
    let keys = st.store.customer_keys(customer, &page).await?;
    let (n, last) = (keys.len(), keys.last().map(|k| k.id.clone()));
    Ok(paged(
        &uri,
        &page,
        n,
        last.as_deref(),
        keys.into_iter().map(view).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "accounts", request_body = SaveKey,
    responses((status = 201, body = KeyView), (status = "4XX", body = Problem)))]
pub async fn save_key(
    State(st): State<AppState>,
    req: Authed<Json<SaveKey>>,
) -> ApiResult<(StatusCode, axum::Json<KeyView>)> {
    let customer = req.caller.require_customer()?.to_owned();
    let k = req.body.get()?;
    let public_key = match k.kind.as_str() {
        "ssh" => ssh_key("public_key", k.public_key.trim())?.as_str().to_owned(),
        "age" => {
            check_age_recipient("public_key", k.public_key.trim())?;
            k.public_key.trim().to_owned()
        }
        other => return Err(ApiError::invalid("kind", format!("must be ssh or age (got {other:?})"))),
    };
    let existing = st.store.customer_keys(&customer, &berth_store::Page::all()).await?;
    if existing.len() >= MAX_KEYS {
        return Err(ApiError::conflict(
            "quota_exceeded",
            format!("at most {MAX_KEYS} keys per account; remove one first"),
        ));
    }
    let now = now_ms();
    let saved = st
        .store
        .add_customer_key(&customer, &k.kind, k.name.trim(), &public_key, now)
        .await
        .map_err(|e| match e {
            StoreError::Invalid { field, reason } => ApiError::invalid(field, reason),
            other => other.into(),
        })?;
    st.store
        .append_audit(
            NewAuditEntry {
                actor: req.caller.actor(),
                action: "key.saved".into(),
                subject: format!("key:{}", saved.id),
                detail: serde_json::json!({"kind": saved.kind, "name": saved.name}),
            },
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view(saved))))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = KeyView, description = "the key removed"), (status = "4XX", body = Problem)))]
pub async fn delete_key(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed,
) -> ApiResult<axum::Json<KeyView>> {
    let customer = req.caller.require_customer()?;
    let key = st
        .store
        .customer_keys(customer, &berth_store::Page::all())
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("key {id}")))?;
    st.store.delete_customer_key(customer, &id).await?;
    st.store
        .append_audit(
            NewAuditEntry {
                actor: req.caller.actor(),
                action: "key.deleted".into(),
                subject: format!("key:{id}"),
                detail: serde_json::json!({"kind": key.kind, "name": key.name}),
            },
            now_ms(),
        )
        .await?;
    Ok(axum::Json(view(key)))
}
