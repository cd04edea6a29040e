//! Providers, customers, agents and what agents report of their hypervisors: operators create
//! providers and customers (each gets its first API token); providers make setup tokens that
//! enroll agents; agents' heartbeats and templates are readable by their provider.

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use berth_api::wire::*;
use berth_store::{Agent, NewAuditEntry, Role};

use crate::auth::{Authed, Caller, Json};
use crate::paging::{PageQuery, no_query, paged};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::{AppState, now_ms};

fn audit(actor: &crate::auth::Caller, action: &str, subject: String, detail: serde_json::Value) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.actor(),
        action: action.into(),
        subject,
        detail,
    }
}

#[utoipa::path(post, path = "/api/v1/providers", tag = "accounts", request_body = CreateNamed,
    responses((status = 201, body = AccountCreated), (status = "4XX", body = Problem)))]
pub async fn create_provider(
    State(st): State<AppState>,
    req: Authed<Json<CreateNamed>>,
) -> ApiResult<(StatusCode, axum::Json<AccountCreated>)> {
    req.caller.require_operator()?;
    account_created(&st, &req.caller, Role::Provider, &req.body.get()?.name).await
}

/// A new provider or customer with its first API token and its audit entry, in one transaction.
async fn account_created(
    st: &AppState,
    caller: &Caller,
    role: Role,
    name: &str,
) -> ApiResult<(StatusCode, axum::Json<AccountCreated>)> {
    let kind = role.as_str();
    let entry = audit(
        caller,
        &format!("{kind}.created"),
        String::new(),
        serde_json::json!({ "name": name }),
    );
    let (id, issued) = st.store.create_account(role, name, entry, now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(AccountCreated {
            id,
            name: name.to_owned(),
            token: issued.token.secret,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/providers", tag = "accounts", params(PageQuery),
    responses((status = 200, body = [ProviderView], description = "operators: a page of providers; a provider: itself"),
        (status = "4XX", body = Problem)))]
pub async fn list_providers(
    State(st): State<AppState>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    let scope = req.caller.provider_scope()?;
    let page = parse_query::<PageQuery>(q.as_deref())?.page()?;
    let view = |p: berth_store::Provider| ProviderView {
        id: p.id,
        name: p.name,
        created_at: p.created_at,
    };
    let Some(own) = scope else {
        let all = st.store.providers(&page).await?;
        let (n, last) = (all.len(), all.last().map(|p| p.id.clone()));
        return Ok(paged(
            &uri,
            &page,
            n,
            last.as_deref(),
            all.into_iter().map(view).collect(),
        ));
    };
    // Providers are few (operators make them): a provider finds itself among them.
    let mine: Vec<ProviderView> = st
        .store
        .providers(&berth_store::Page::all())
        .await?
        .into_iter()
        .filter(|p| p.id == own && page.after.is_none())
        .map(view)
        .collect();
    Ok(paged(&uri, &page, 0, None, mine))
}

#[utoipa::path(post, path = "/api/v1/customers", tag = "accounts", request_body = CreateNamed,
    responses((status = 201, body = AccountCreated), (status = "4XX", body = Problem)))]
pub async fn create_customer(
    State(st): State<AppState>,
    req: Authed<Json<CreateNamed>>,
) -> ApiResult<(StatusCode, axum::Json<AccountCreated>)> {
    req.caller.require_operator()?;
    account_created(&st, &req.caller, Role::Customer, &req.body.get()?.name).await
}

#[utoipa::path(get, path = "/api/v1/customers", tag = "accounts", params(PageQuery),
    responses((status = 200, body = [CustomerView]), (status = "4XX", body = Problem)))]
pub async fn list_customers(
    State(st): State<AppState>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    req.caller.require_operator()?;
    let page = parse_query::<PageQuery>(q.as_deref())?.page()?;
    let all = st.store.customers(&page).await?;
    let (n, last) = (all.len(), all.last().map(|c| c.id.clone()));
    let views = all
        .into_iter()
        .map(|c| CustomerView {
            id: c.id,
            name: c.name,
            created_at: c.created_at,
        })
        .collect();
    Ok(paged(&uri, &page, n, last.as_deref(), views))
}

#[utoipa::path(post, path = "/api/v1/providers/{id}/enrollment-tokens", tag = "agents",
    params(("id" = String, Path, description = "provider id")), request_body = CreateEnrollmentToken,
    responses((status = 201, body = EnrollmentTokenView), (status = "4XX", body = Problem)))]
pub async fn create_enrollment_token(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<CreateEnrollmentToken>>,
) -> ApiResult<(StatusCode, axum::Json<EnrollmentTokenView>)> {
    req.caller.provider_scope()?;
    if matches!(req.caller, Caller::Agent { .. }) {
        return Err(ApiError::Forbidden("agents cannot enroll other agents".into()));
    }
    if !req.caller.manages_provider(&id) {
        return Err(ApiError::NotFound(format!("provider {id}")));
    }
    let ttl = req.body.get()?.ttl_seconds.unwrap_or(86_400);
    let now = now_ms();
    let t = st
        .store
        .create_enrollment_token(&id, ttl.saturating_mul(1000).min(i64::MAX as u64) as i64, now)
        .await
        .map_err(|e| match e {
            berth_store::StoreError::Invalid { reason, .. } => ApiError::invalid("ttl_seconds", reason),
            other => other.into(),
        })?;
    st.store
        .append_audit(
            audit(
                &req.caller,
                "enrollment_token.created",
                format!("provider:{id}"),
                serde_json::json!({"expires_at": t.expires_at}),
            ),
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EnrollmentTokenView {
            token: t.secret,
            provider_id: t.provider_id,
            expires_at: t.expires_at,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/agents/enroll", tag = "agents", request_body = EnrollAgent,
    responses((status = 201, body = AgentView), (status = "4XX", body = Problem)))]
pub async fn enroll(
    State(st): State<AppState>,
    req: Authed<Json<EnrollAgent>>,
) -> ApiResult<(StatusCode, axum::Json<AgentView>)> {
    // The setup token is the credential here, and the request is signed by the key it enrolls.
    let Caller::Enrolling(signer) = &req.caller else {
        return Err(ApiError::Unauthenticated(
            "sign the enrollment with the key being enrolled (keyid \"enroll\"); an agent older than this control \
             plane cannot enroll with it: upgrade the agent"
                .into(),
        ));
    };
    let b = req.body.get()?;
    if b.public_key != *signer {
        return Err(ApiError::Unauthenticated(
            "the enrollment is signed by another key than the one it enrolls".into(),
        ));
    }
    let now = now_ms();
    let a = st.store.enroll_agent(&b.token, &b.name, &b.public_key, now).await?;
    st.store
        .append_audit(
            NewAuditEntry {
                actor: format!("agent:{}", a.id),
                action: "agent.enrolled".into(),
                subject: format!("provider:{}", a.provider_id),
                detail: serde_json::json!({"name": a.name, "public_key": a.public_key}),
            },
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(agent_view(&st, a).await?)))
}

pub async fn agent_view(st: &AppState, a: Agent) -> ApiResult<AgentView> {
    let statuses = st.store.agent_statuses(Some(&a.provider_id)).await?;
    Ok(view_with(st, a, &statuses))
}

/// An agent's view from heartbeats already read (a list reads them once, not per agent).
fn view_with(st: &AppState, a: Agent, statuses: &[berth_store::AgentStatus]) -> AgentView {
    let status = statuses.iter().find(|s| s.agent_id == a.id).cloned();
    let ttl = st.cfg.agents.heartbeat_ttl_seconds as i64 * 1000;
    let last_seen = status.as_ref().map(|s| s.seen_at);
    let heartbeat: Option<Heartbeat> = status.and_then(|s| serde_json::from_value(s.report).ok());
    AgentView {
        version_skew: heartbeat
            .as_ref()
            .and_then(|h| version_skew(&h.version, env!("CARGO_PKG_VERSION"))),
        alive: a.revoked_at.is_none() && last_seen.is_some_and(|t| now_ms() - t <= ttl),
        heartbeat,
        last_seen,
        id: a.id,
        provider_id: a.provider_id,
        name: a.name,
        public_key: a.public_key,
        revoked_at: a.revoked_at,
        created_at: a.created_at,
    }
}

/// How an agent's version stands against the control plane's (`major.minor.patch`): `None`
/// for the same minor version (or a version that does not parse).
pub fn version_skew(agent: &str, server: &str) -> Option<String> {
    let minor = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.trim().split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    let (a, s) = (minor(agent)?, minor(server)?);
    if a == s {
        return None;
    }
    let older = if a < s { "agent" } else { "control plane" };
    Some(if a.0 == s.0 && a.1.abs_diff(s.1) == 1 {
        format!("agent {agent}, control plane {server}: one minor version apart, which works; upgrade the {older} soon")
    } else {
        format!(
            "agent {agent}, control plane {server}: further apart than one minor version, which is not supported; upgrade the {older}"
        )
    })
}

/// An agent this caller manages, or NotFound (not telling apart "absent" and "not yours").
async fn managed_agent(st: &AppState, caller: &crate::auth::Caller, id: &str) -> ApiResult<Agent> {
    caller.provider_scope()?;
    let a = st.store.agent(id).await?;
    if !caller.manages_provider(&a.provider_id) {
        return Err(ApiError::NotFound(format!("agent {id}")));
    }
    Ok(a)
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(PageQuery),
    responses((status = 200, body = [AgentView]), (status = "4XX", body = Problem)))]
pub async fn list_agents(
    State(st): State<AppState>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    let scope = req.caller.provider_scope()?;
    let page = parse_query::<PageQuery>(q.as_deref())?.page()?;
    let agents = st.store.agents(scope, &page).await?;
    let statuses = st.store.agent_statuses(scope).await?;
    let (n, last) = (agents.len(), agents.last().map(|a| a.id.clone()));
    let views = agents.into_iter().map(|a| view_with(&st, a, &statuses)).collect();
    Ok(paged(&uri, &page, n, last.as_deref(), views))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = AgentView), (status = "4XX", body = Problem)))]
pub async fn get_agent(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<AgentView>> {
    let a = managed_agent(&st, &req.caller, &id).await?;
    no_query(q.as_deref())?;
    Ok(axum::Json(agent_view(&st, a).await?))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = AgentView), (status = "4XX", body = Problem)))]
pub async fn revoke_agent(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed,
) -> ApiResult<axum::Json<AgentView>> {
    if matches!(req.caller, Caller::Agent { .. }) {
        return Err(ApiError::Forbidden("agents cannot revoke agents".into()));
    }
    let before = managed_agent(&st, &req.caller, &id).await?;
    if before.revoked_at.is_some() {
        // Already revoked: nothing changes, nothing to audit.
        return Ok(axum::Json(agent_view(&st, before).await?));
    }
    let now = now_ms();
    let a = st.store.revoke_agent(&id, now).await?;
    st.store
        .append_audit(
            audit(
                &req.caller,
                "agent.revoked",
                format!("agent:{id}"),
                serde_json::json!({}),
            ),
            now,
        )
        .await?;
    Ok(axum::Json(agent_view(&st, a).await?))
}

fn template_view(t: berth_store::TemplateRecord) -> TemplateView {
    let d = &t.detail;
    TemplateView {
        agent_id: t.agent_id,
        template: TemplateReport {
            backend: t.backend,
            id: t.template_id,
            name: d["name"].as_str().unwrap_or_default().to_owned(),
            format: d["format"].as_str().map(str::to_owned),
            disk_gib: d["disk_gib"].as_u64(),
        },
        reported_at: t.reported_at,
    }
}

#[utoipa::path(get, path = "/api/v1/agents/{id}/templates", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = [TemplateView]), (status = "4XX", body = Problem)))]
pub async fn agent_templates(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<Vec<TemplateView>>> {
    managed_agent(&st, &req.caller, &id).await?;
    no_query(q.as_deref())?;
    let t = st.store.templates(Some(&id), None).await?;
    Ok(axum::Json(t.into_iter().map(template_view).collect()))
}

#[utoipa::path(get, path = "/api/v1/providers/{id}/templates", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = [TemplateView]), (status = "4XX", body = Problem)))]
pub async fn provider_templates(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<Vec<TemplateView>>> {
    req.caller.provider_scope()?;
    if !req.caller.manages_provider(&id) {
        return Err(ApiError::NotFound(format!("provider {id}")));
    }
    no_query(q.as_deref())?;
    let t = st.store.templates(None, Some(&id)).await?;
    Ok(axum::Json(t.into_iter().map(template_view).collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_skew_says_how_far_apart_and_what_to_upgrade() {
        use super::version_skew;
        assert_eq!(version_skew("0.1.4", "0.1.0"), None);
        let one = version_skew("0.1.9", "0.2.0").unwrap();
        assert!(
            one.contains("one minor version apart") && one.contains("upgrade the agent"),
            "{one}"
        );
        let far = version_skew("0.4.0", "0.2.1").unwrap();
        assert!(
            far.contains("not supported") && far.contains("upgrade the control plane"),
            "{far}"
        );
        assert!(version_skew("1.2.0", "2.2.0").unwrap().contains("not supported"));
        assert_eq!(version_skew("dev", "0.1.0"), None);
    }
}
