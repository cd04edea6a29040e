//! API tokens: every operator, provider and customer lists, makes, revokes and rotates its own
//! (`/tokens`); operators do the same for any account (`/accounts/{id}/tokens`), e.g. for a
//! customer who lost theirs. Secrets are shown once, when made; lists show ids and names.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_api::wire::*;
use berth_store::{NewAuditEntry, Role, StoreError, TokenInfo};

use crate::auth::{Authed, Caller, Empty, Json};
use crate::problem::{ApiError, ApiResult};
use crate::routes::quotas::{exceeded, token_quota};
use crate::{AppState, now_ms};

fn view(t: TokenInfo) -> TokenView {
    TokenView {
        id: t.id,
        name: t.name,
        created_at: t.created_at,
        expires_at: t.expires_at,
        revoked_at: t.revoked_at,
    }
}

/// Whose tokens the caller manages as itself.
fn own(caller: &Caller) -> ApiResult<(Role, String)> {
    caller.require_authenticated()?;
    match caller {
        Caller::Operator => Ok((Role::Operator, String::new())),
        Caller::Provider(p) => Ok((Role::Provider, p.clone())),
        Caller::Customer(c) => Ok((Role::Customer, c.clone())),
        _ => Err(ApiError::Forbidden(
            "agents sign their requests; they hold no API tokens".into(),
        )),
    }
}

/// The account `id` (a provider or customer), for an operator.
async fn account(st: &AppState, caller: &Caller, id: &str) -> ApiResult<(Role, String)> {
    caller.require_operator()?;
    account_of(st, id).await
}

/// Whether `id` is a customer or a provider (`NotFound`: neither).
pub async fn account_of(st: &AppState, id: &str) -> ApiResult<(Role, String)> {
    match st.store.customer(id).await {
        Ok(_) => return Ok((Role::Customer, id.to_owned())),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match st.store.provider(id).await {
        Ok(_) => Ok((Role::Provider, id.to_owned())),
        Err(StoreError::NotFound(_)) => Err(ApiError::NotFound(format!("account {id}"))),
        Err(e) => Err(e.into()),
    }
}

fn audit(caller: &Caller, action: &str, detail: serde_json::Value) -> NewAuditEntry {
    NewAuditEntry {
        actor: caller.actor(),
        action: action.into(),
        subject: String::new(),
        detail,
    }
}

async fn list(st: &AppState, (role, subject): (Role, String)) -> ApiResult<axum::Json<Vec<TokenView>>> {
    Ok(axum::Json(
        st.store.tokens(role, &subject).await?.into_iter().map(view).collect(),
    ))
}

async fn create(
    st: &AppState,
    caller: &Caller,
    (role, subject): (Role, String),
    body: CreateToken,
) -> ApiResult<(StatusCode, axum::Json<TokenCreated>)> {
    let now = now_ms();
    let expires_at = match body.ttl_seconds {
        None => None,
        Some(s) if (60..=315_360_000).contains(&s) => Some(now + s as i64 * 1000),
        Some(s) => {
            return Err(ApiError::invalid(
                "ttl_seconds",
                format!("a token lasts 60 s to 10 years (got {s} s)"),
            ));
        }
    };
    if let Err(why) = berth_core::text::check_name(&body.name, 128) {
        return Err(ApiError::invalid("name", why));
    }
    let max = token_quota(st, &subject, role).await?;
    let detail = serde_json::json!({"name": body.name, "expires_at": expires_at, "account": subject});
    let issued = st
        .store
        .issue_token(
            role,
            &subject,
            &body.name,
            expires_at,
            max,
            audit(caller, "token.created", detail),
            now,
        )
        .await
        .map_err(exceeded)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenCreated {
            view: view(issued.info),
            token: issued.token.secret,
        }),
    ))
}

async fn revoke(
    st: &AppState,
    caller: &Caller,
    (role, subject): (Role, String),
    id: &str,
) -> ApiResult<axum::Json<TokenView>> {
    let detail = serde_json::json!({"account": subject});
    match st
        .store
        .revoke_token(role, &subject, id, audit(caller, "token.revoked", detail), now_ms())
        .await
    {
        Ok(t) => Ok(axum::Json(view(t))),
        Err(StoreError::Conflict(m)) => Err(ApiError::conflict("last_operator_token", m)),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts",
    responses((status = 200, body = [TokenView], description = "the caller's own API tokens (never their secrets)"),
        (status = "4XX", body = Problem)))]
pub async fn list_own(State(st): State<AppState>, req: Authed) -> ApiResult<axum::Json<Vec<TokenView>>> {
    let who = own(&req.caller)?;
    list(&st, who).await
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", request_body = CreateToken,
    responses((status = 201, body = TokenCreated, description = "the secret is shown this once"), (status = "4XX", body = Problem)))]
pub async fn create_own(
    State(st): State<AppState>,
    req: Authed<Json<CreateToken>>,
) -> ApiResult<(StatusCode, axum::Json<TokenCreated>)> {
    let who = own(&req.caller)?;
    let body = req.body.get()?;
    create(&st, &req.caller, who, body).await
}

#[utoipa::path(post, path = "/api/v1/tokens/{id}/revoke", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = Problem)))]
pub async fn revoke_own(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed,
) -> ApiResult<axum::Json<TokenView>> {
    let who = own(&req.caller)?;
    revoke(&st, &req.caller, who, &id).await
}

#[utoipa::path(post, path = "/api/v1/tokens/{id}/rotate", tag = "accounts", params(("id" = String, Path)),
    responses((status = 201, body = TokenCreated, description = "a new secret under the same name and lifetime; the old one no longer works"),
        (status = "4XX", body = Problem)))]
pub async fn rotate_own(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Empty>,
) -> ApiResult<(StatusCode, axum::Json<TokenCreated>)> {
    let (role, subject) = own(&req.caller)?;
    let detail = serde_json::json!({"account": subject});
    let issued = match st
        .store
        .rotate_token(
            role,
            &subject,
            &id,
            audit(&req.caller, "token.rotated", detail),
            now_ms(),
        )
        .await
    {
        Ok(i) => i,
        Err(StoreError::Conflict(m)) => return Err(ApiError::conflict("token_revoked", m)),
        Err(e) => return Err(e.into()),
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenCreated {
            view: view(issued.info),
            token: issued.token.secret,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/tokens", tag = "accounts", params(("id" = String, Path, description = "a customer or provider id")),
    responses((status = 200, body = [TokenView], description = "operators: an account's API tokens"), (status = "4XX", body = Problem)))]
pub async fn list_account(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed,
) -> ApiResult<axum::Json<Vec<TokenView>>> {
    let who = account(&st, &req.caller, &id).await?;
    list(&st, who).await
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/tokens", tag = "accounts", params(("id" = String, Path, description = "a customer or provider id")),
    request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = "4XX", body = Problem)))]
pub async fn create_account_token(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<CreateToken>>,
) -> ApiResult<(StatusCode, axum::Json<TokenCreated>)> {
    let who = account(&st, &req.caller, &id).await?;
    let body = req.body.get()?;
    create(&st, &req.caller, who, body).await
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/tokens/{token}/revoke", tag = "accounts",
    params(("id" = String, Path, description = "a customer or provider id"), ("token" = String, Path)),
    responses((status = 200, body = TokenView), (status = "4XX", body = Problem)))]
pub async fn revoke_account_token(
    State(st): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    req: Authed,
) -> ApiResult<axum::Json<TokenView>> {
    let who = account(&st, &req.caller, &id).await?;
    revoke(&st, &req.caller, who, &token).await
}
