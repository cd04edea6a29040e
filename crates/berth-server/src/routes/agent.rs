//! The agent's side, every request signed: claim work (long-poll, a lease), renew it, report
//! progress events, complete (which updates the instance in the same transaction), release,
//! heartbeat (capacity, backends, version) and the template list. A report under a lease the
//! agent no longer holds is refused with `lease_lost`.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_api::wire::*;
use berth_store::{InstanceChange, Lease, NewAuditEntry, Outcome};

use crate::auth::{Authed, Json};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::routes::accounts::agent_view;
use crate::routes::operations::WaitQuery;
use crate::views::{InstanceState, operation_view, request_of, state_of};
use crate::{AppState, now_ms};

const AGE_ARMOR: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// ASCII-armored age: BEGIN and END lines around base64 of an age file (its header line), so no
/// plaintext is smuggled in.
fn is_age_armor(s: &str) -> bool {
    let Some(body) = s
        .trim()
        .strip_prefix(AGE_ARMOR)
        .and_then(|b| b.strip_suffix("-----END AGE ENCRYPTED FILE-----"))
    else {
        return false;
    };
    let b64: String = body.split_whitespace().collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .is_ok_and(|raw| raw.starts_with(b"age-encryption.org/v1\n"))
}

/// A claim long-poll wakes when work is queued (any replica); it also looks again this often,
/// for work that became claimable silently (a lease that expired).
const CLAIM_RECHECK: Duration = Duration::from_secs(10);

/// Refuses, as not found, an operation of another provider (without telling whether it exists).
pub(crate) async fn own_operation(st: &AppState, provider: &str, id: &str) -> ApiResult<berth_store::Operation> {
    match st.store.operation(id).await {
        Ok(op) if op.provider_id == provider => Ok(op),
        Ok(_) | Err(berth_store::StoreError::NotFound(_)) => Err(ApiError::NotFound(format!("operation {id}"))),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn lease(op: &str, agent: &str, generation: i64) -> Lease {
    Lease {
        operation_id: op.into(),
        holder: agent.into(),
        generation,
        expires_at: 0,
    }
}

#[utoipa::path(post, path = "/api/v1/agent/claim", tag = "agent", params(WaitQuery),
    responses((status = 200, body = Claimed), (status = 204, description = "no work within the wait"), (status = "4XX", body = Problem)))]
pub async fn claim(State(st): State<AppState>, RawQuery(q): RawQuery, req: Authed) -> ApiResult<Response> {
    let (agent, provider) = req.caller.require_agent()?;
    let q: WaitQuery = parse_query(q.as_deref())?;
    let max = Duration::from_secs(st.cfg.agents.max_claim_wait_seconds);
    let wait = q.duration(max)?;
    let ttl = st.cfg.agents.lease_ttl_seconds as i64 * 1000;
    let got = st
        .store
        .claim_wait(provider, agent, ttl, wait, CLAIM_RECHECK, &now_ms)
        .await?;
    let Some((op, lease)) = got else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    st.store
        .append_audit(
            NewAuditEntry {
                actor: req.caller.actor(),
                action: "operation.claimed".into(),
                subject: format!("operation:{}", op.id),
                detail: serde_json::json!({"generation": lease.generation, "kind": op.kind, "instance_id": op.instance_id}),
            },
            now_ms(),
        )
        .await?;
    Ok(axum::Json(Claimed {
        operation_id: op.id,
        instance_id: op.instance_id,
        kind: op.kind,
        payload: op.payload,
        generation: lease.generation,
        lease_expires_at: lease.expires_at,
        lease_ttl_ms: Some((lease.expires_at - now_ms()).max(0)),
        body_limit_bytes: Some(st.cfg.api.body_limit_bytes as u64),
    })
    .into_response())
}

#[utoipa::path(post, path = "/api/v1/agent/operations/{id}/renew", tag = "agent", params(("id" = String, Path)),
    request_body = LeaseRef, responses((status = 200, body = LeaseView), (status = "4XX", body = Problem)))]
pub async fn renew(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<LeaseRef>>,
) -> ApiResult<axum::Json<LeaseView>> {
    let (agent, provider) = req.caller.require_agent()?;
    own_operation(&st, provider, &id).await?;
    let ttl = st.cfg.agents.lease_ttl_seconds as i64 * 1000;
    let l = st
        .store
        .renew(&lease(&id, agent, req.body.get()?.generation), ttl, now_ms())
        .await?;
    Ok(axum::Json(LeaseView {
        generation: l.generation,
        expires_at: l.expires_at,
        ttl_ms: Some((l.expires_at - now_ms()).max(0)),
    }))
}

#[utoipa::path(post, path = "/api/v1/agent/operations/{id}/release", tag = "agent", params(("id" = String, Path)),
    request_body = LeaseRef, responses((status = 204), (status = "4XX", body = Problem)))]
pub async fn release(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<LeaseRef>>,
) -> ApiResult<StatusCode> {
    let (agent, provider) = req.caller.require_agent()?;
    own_operation(&st, provider, &id).await?;
    st.store
        .release(&lease(&id, agent, req.body.get()?.generation), now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_event(i: usize, e: &EventReport) -> ApiResult<()> {
    let f = |name: &str| format!("events[{i}].{name}");
    if serde_json::from_value::<berth_core::Stage>(serde_json::Value::String(e.stage.clone())).is_err() {
        return Err(ApiError::invalid(
            f("stage"),
            format!(
                "unknown stage {:?} (clone_template, configure_vm, start_vm, wait_network, post_provision, register, waiting_for_operator, cleanup)",
                e.stage
            ),
        ));
    }
    if !["started", "completed", "skipped", "progress"].contains(&e.phase.as_str()) {
        return Err(ApiError::invalid(
            f("phase"),
            "must be started, completed, skipped or progress",
        ));
    }
    if e.percent.is_some_and(|p| p > 100) {
        return Err(ApiError::invalid(f("percent"), "must be 0-100"));
    }
    if e.message.as_ref().is_some_and(|m| m.len() > 4096) {
        return Err(ApiError::invalid(f("message"), "at most 4096 bytes"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/agent/operations/{id}/events", tag = "agent", params(("id" = String, Path)),
    request_body = ReportEvents, responses((status = 204), (status = "4XX", body = Problem)))]
pub async fn report_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<ReportEvents>>,
) -> ApiResult<StatusCode> {
    let (agent, provider) = req.caller.require_agent()?;
    own_operation(&st, provider, &id).await?;
    let r = req.body.get()?;
    if r.events.is_empty() || r.events.len() > 100 {
        return Err(ApiError::invalid("events", "send 1-100 events"));
    }
    for (i, e) in r.events.iter().enumerate() {
        check_event(i, e)?;
    }
    let values = r
        .events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    st.store
        .add_events(&lease(&id, agent, r.generation), values, now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a finished operation does to its instance.
pub fn instance_change(
    kind: &str,
    agent: &str,
    request: &crate::views::InstanceRequest,
    payload: &serde_json::Value,
    mut state: InstanceState,
    outcome: &Completion,
) -> InstanceChange {
    let mut request_change = None;
    let status = match outcome {
        Completion::Failed(e) => {
            state.last_error = Some(e.clone());
            match kind {
                "provision" | "terminate" => Some("failed"),
                _ => None,
            }
        }
        Completion::Succeeded(r) => {
            state.last_error = None;
            match kind {
                "provision" => {
                    state.vm_id = r.vm_id.clone().or(state.vm_id);
                    state.hypervisor = r.hypervisor.clone().or(state.hypervisor);
                    state.agent_id = Some(agent.to_owned());
                    state.ip_address = r.ip_address.clone();
                    state.ipv6_address = r.ipv6_address.clone();
                    state.ssh_port = r.ssh_port.or(Some(22));
                    state.login_user = r.login_user.clone();
                    state.credentials = r.credentials.clone().or(state.credentials);
                    Some("running")
                }
                "start" | "reboot" => Some("running"),
                "stop" => Some("stopped"),
                "terminate" => {
                    state.ip_address = None;
                    state.ipv6_address = None;
                    Some("terminated")
                }
                "reconfigure" => {
                    let change: Reconfigure = serde_json::from_value(payload.clone()).unwrap_or_default();
                    let mut req = request.clone();
                    req.cores = change.cores.unwrap_or(req.cores);
                    req.memory_mib = change.memory_mib.unwrap_or(req.memory_mib);
                    req.disk_gib = change.disk_gib.unwrap_or(req.disk_gib);
                    request_change = serde_json::to_value(req).ok();
                    None
                }
                _ => None,
            }
        }
    };
    InstanceChange {
        status: status.map(str::to_owned),
        state: serde_json::to_value(state).unwrap_or_default(),
        request: request_change,
        // A terminate queued meanwhile keeps its `terminating`; without a new status, keep any.
        keep_status_if: (status.is_some() && kind != "terminate").then(|| "terminating".into()),
    }
}

#[utoipa::path(post, path = "/api/v1/agent/operations/{id}/complete", tag = "agent", params(("id" = String, Path)),
    request_body = Complete, responses((status = 200, body = OperationView), (status = "4XX", body = Problem)))]
pub async fn complete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<Complete>>,
) -> ApiResult<axum::Json<OperationView>> {
    let (agent, provider) = req.caller.require_agent()?;
    let mut c = req.body.get()?;
    match &c.outcome {
        Completion::Succeeded(r) => {
            if r.credentials.as_ref().is_some_and(|s| !is_age_armor(s)) {
                return Err(ApiError::invalid(
                    "outcome.succeeded.credentials",
                    "must be encrypted to the requester's key (ASCII-armored age); the server never stores plaintext",
                ));
            }
            // Shown in an `ssh user@address` line people paste.
            if r.login_user
                .as_deref()
                .is_some_and(|u| !berth_core::spec::is_unix_user(u))
            {
                return Err(ApiError::invalid(
                    "outcome.succeeded.login_user",
                    "must be a Unix user name (lowercase letters, digits, '_' or '-', at most 32)",
                ));
            }
        }
        Completion::Failed(e) => {
            if e.code.is_empty() || e.message.is_empty() {
                return Err(ApiError::invalid("outcome.failed", "needs a code and a message"));
            }
        }
    }
    let op = own_operation(&st, provider, &id).await?;
    // A machine built by hand: the password the operator gave, sealed when it arrived.
    if let Completion::Succeeded(r) = &mut c.outcome
        && op.kind == "provision"
        && r.credentials.is_none()
    {
        r.credentials = crate::routes::inputs::sealed_by_operator(&st, &id).await?;
    }
    let instance = match st.store.instance(&op.instance_id).await {
        Ok(i) => Some(i),
        Err(berth_store::StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let change = match &instance {
        Some(i) => Some(instance_change(
            &op.kind,
            agent,
            &request_of(i)?,
            &op.payload,
            state_of(i)?,
            &c.outcome,
        )),
        None => None,
    };
    let (outcome, action) = match &c.outcome {
        Completion::Succeeded(r) => (
            Outcome::Succeeded(serde_json::to_value(r).map_err(|e| ApiError::Internal(e.to_string()))?),
            "operation.succeeded",
        ),
        Completion::Failed(e) => (
            Outcome::Failed(serde_json::to_string(e).map_err(|e| ApiError::Internal(e.to_string()))?),
            "operation.failed",
        ),
    };
    let audit = NewAuditEntry {
        actor: req.caller.actor(),
        action: action.into(),
        subject: format!("operation:{id}"),
        detail: serde_json::json!({"kind": op.kind, "instance_id": op.instance_id, "generation": c.generation}),
    };
    let done = match st
        .store
        .complete(&lease(&id, agent, c.generation), outcome, change, Some(audit), now_ms())
        .await
    {
        Ok(done) => done,
        // A retry of a completion that was recorded (its answer lost): nobody claimed the
        // operation since (same generation), so it was this lease that finished it.
        Err(berth_store::StoreError::LeaseLost(e)) => {
            let now = st.store.operation(&id).await?;
            if !finished_under(&now, c.generation) {
                return Err(berth_store::StoreError::LeaseLost(e).into());
            }
            now
        }
        Err(e) => return Err(e.into()),
    };
    let events = st.store.events(&id, 0).await?;
    Ok(axum::Json(operation_view(&done, &events)?))
}

fn finished_under(op: &berth_store::Operation, generation: i64) -> bool {
    matches!(
        op.status,
        berth_store::OpStatus::Succeeded | berth_store::OpStatus::Failed
    ) && op.generation == generation
}

#[utoipa::path(post, path = "/api/v1/agent/heartbeat", tag = "agent", request_body = Heartbeat,
    responses((status = 204), (status = "4XX", body = Problem)))]
pub async fn heartbeat(State(st): State<AppState>, req: Authed<Json<Heartbeat>>) -> ApiResult<StatusCode> {
    let (agent, _) = req.caller.require_agent()?;
    let hb = req.body.get()?;
    if hb.version.is_empty() || hb.version.len() > 64 {
        return Err(ApiError::invalid("version", "must be 1-64 characters"));
    }
    if hb.backends.len() > 64 {
        return Err(ApiError::invalid("backends", "at most 64 backends"));
    }
    let report = serde_json::to_value(&hb).map_err(|e| ApiError::Internal(e.to_string()))?;
    st.store.record_heartbeat(agent, report, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/agent/templates", tag = "agent", request_body = TemplatesReport,
    responses((status = 204), (status = "4XX", body = Problem)))]
pub async fn put_templates(State(st): State<AppState>, req: Authed<Json<TemplatesReport>>) -> ApiResult<StatusCode> {
    let (agent, _) = req.caller.require_agent()?;
    let t = req.body.get()?.templates;
    if t.len() > 10_000 {
        return Err(ApiError::invalid("templates", "at most 10000 templates"));
    }
    let mut rows = Vec::with_capacity(t.len());
    for (i, tpl) in t.into_iter().enumerate() {
        if tpl.id.is_empty() || tpl.id.len() > 256 || tpl.backend.is_empty() || tpl.backend.len() > 64 {
            return Err(ApiError::invalid(
                format!("templates[{i}]"),
                "id is 1-256 and backend 1-64 characters",
            ));
        }
        let detail = serde_json::json!({"name": tpl.name, "format": tpl.format, "disk_gib": tpl.disk_gib});
        rows.push((tpl.backend, tpl.id, detail));
    }
    st.store.set_templates(agent, rows, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/agent/me", tag = "agent",
    responses((status = 200, body = AgentView), (status = "4XX", body = Problem)))]
pub async fn me(State(st): State<AppState>, RawQuery(q): RawQuery, req: Authed) -> ApiResult<axum::Json<AgentView>> {
    let (agent, _) = req.caller.require_agent()?;
    crate::paging::no_query(q.as_deref())?;
    let a = st.store.agent(agent).await?;
    Ok(axum::Json(agent_view(&st, a).await?))
}
