//! Operator input: a person answers an operation that waits for them (stage
//! `waiting_for_operator`, the manual backend's machine built by hand) with the machine's
//! details, or fails or cancels it; the agent holding the operation long-polls for the answer,
//! applies it to its backend and says how that went. A root password is sealed to the
//! requester's age key the moment it arrives: only ciphertext is kept, and it becomes the
//! instance's credentials when the operation succeeds.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_api::wire::*;
use berth_store::{NewAuditEntry, NewInput, OpStatus, Operation, StoreError};
use serde_json::json;

use crate::auth::{Authed, Caller, Json};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::routes::agent::{lease, own_operation};
use crate::routes::operations::{WaitQuery, visible_operation};
use crate::{AppState, now_ms};

const STAGE: &str = "waiting_for_operator";
const MAX_REASON_CHARS: usize = 1000;
const MAX_PASSWORD_CHARS: usize = 256;
/// The agent's long-poll looks again this often, for a wake-up lost between replicas.
const RECHECK: Duration = Duration::from_secs(5);

/// The operation, if the caller may answer it: the operator, or the provider it runs for.
/// Others who can see it are refused; those who cannot get `404`.
async fn answerable(st: &AppState, caller: &Caller, id: &str) -> ApiResult<Operation> {
    let op = visible_operation(st, caller, id).await?;
    match caller {
        Caller::Operator => Ok(op),
        Caller::Provider(p) if *p == op.provider_id => Ok(op),
        _ => Err(ApiError::Forbidden(
            "only the provider running the operation, or an operator, answers it".into(),
        )),
    }
}

/// Whether the operation's agent has said it waits for an operator, and not yet that it stopped.
async fn waiting(st: &AppState, op: &Operation) -> ApiResult<bool> {
    if !matches!(op.status, OpStatus::Running | OpStatus::Queued) {
        return Ok(false);
    }
    let mut waits = false;
    for e in st.store.events(&op.id, 0).await? {
        if e.event["stage"] == STAGE {
            waits = e.event["phase"] == "started";
        }
    }
    Ok(waits)
}

fn nonblank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn checked_text(field: &str, s: &str, max: usize) -> ApiResult<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("must be 1-{max} characters on one line"),
        ));
    }
    Ok(t.to_owned())
}

/// The body to keep: addresses checked, the password sealed to `recipient` (and dropped).
fn kept_body(input: &OperatorInput, recipient: &str) -> ApiResult<serde_json::Value> {
    Ok(match input {
        OperatorInput::Complete {
            ipv4,
            ipv6,
            ssh_port,
            root_password,
        } => {
            let (v4, v6) = (nonblank(ipv4), nonblank(ipv6));
            if v4.is_none() && v6.is_none() {
                return Err(ApiError::invalid(
                    "ipv4",
                    "give the machine's IPv4 or IPv6 address (or both)",
                ));
            }
            if let Some(a) = v4
                && a.parse::<Ipv4Addr>().is_err()
            {
                return Err(ApiError::invalid("ipv4", format!("{a:?} is not an IPv4 address")));
            }
            if let Some(a) = v6
                && a.parse::<Ipv6Addr>().is_err()
            {
                return Err(ApiError::invalid("ipv6", format!("{a:?} is not an IPv6 address")));
            }
            if *ssh_port == Some(0) {
                return Err(ApiError::invalid("ssh_port", "must be 1-65535"));
            }
            let credentials = match root_password.as_deref().filter(|p| !p.is_empty()) {
                None => None,
                Some(pw) => {
                    if pw.chars().count() > MAX_PASSWORD_CHARS || pw.chars().any(char::is_control) {
                        return Err(ApiError::invalid(
                            "root_password",
                            format!("must be 1-{MAX_PASSWORD_CHARS} characters without control characters"),
                        ));
                    }
                    if recipient.is_empty() {
                        return Err(ApiError::invalid(
                            "root_password",
                            "the order named no requester key, so nobody could read it; leave it out \
                             (the customer logs in with their SSH key)",
                        ));
                    }
                    let plain = berth_api::credentials::Plain {
                        user: "root".into(),
                        password: pw.to_owned(),
                    };
                    let sealed = berth_api::credentials::seal(recipient, &plain).map_err(|e| {
                        ApiError::invalid("root_password", format!("cannot be sealed for the requester: {e}"))
                    })?;
                    Some(sealed)
                }
            };
            json!({"action": "complete", "ipv4": v4, "ipv6": v6, "ssh_port": ssh_port, "credentials": credentials})
        }
        OperatorInput::Fail { reason } | OperatorInput::Cancel { reason } => {
            json!({"action": input.action(), "reason": checked_text("reason", reason, MAX_REASON_CHARS)?})
        }
    })
}

fn view(i: berth_store::OperatorInput) -> OperatorInputView {
    let b = &i.body;
    let s = |k: &str| b[k].as_str().map(str::to_owned);
    OperatorInputView {
        status: match (&i.taken_at, &i.error) {
            (None, _) => "waiting_for_agent",
            (Some(_), None) => "applied",
            (Some(_), Some(_)) => "not_applied",
        }
        .into(),
        ipv4: s("ipv4"),
        ipv6: s("ipv6"),
        ssh_port: b["ssh_port"].as_u64().and_then(|p| u16::try_from(p).ok()),
        reason: s("reason"),
        root_password_sealed: b["credentials"].is_string(),
        operation_id: i.operation_id,
        action: i.action,
        submitted_by: i.submitted_by,
        submitted_at: i.submitted_at,
        taken_at: i.taken_at,
        error: i.error,
    }
}

/// What the agent gets: the input without the sealed password (it has no use for it).
fn for_agent(i: &berth_store::OperatorInput) -> ApiResult<OperatorInput> {
    let b = &i.body;
    let s = |k: &str| b[k].as_str().map(str::to_owned);
    Ok(match i.action.as_str() {
        "complete" => OperatorInput::Complete {
            ipv4: s("ipv4"),
            ipv6: s("ipv6"),
            ssh_port: b["ssh_port"].as_u64().and_then(|p| u16::try_from(p).ok()),
            root_password: None,
        },
        "fail" => OperatorInput::Fail {
            reason: s("reason").unwrap_or_default(),
        },
        "cancel" => OperatorInput::Cancel {
            reason: s("reason").unwrap_or_default(),
        },
        other => return Err(ApiError::Internal(format!("stored input has action {other:?}"))),
    })
}

/// The credentials an operator's input sealed, for a provision that reports none: the input
/// the agent applied (or is applying: its receipt may arrive after the completion).
pub async fn sealed_by_operator(st: &AppState, operation_id: &str) -> ApiResult<Option<String>> {
    Ok(match st.store.input(operation_id).await? {
        Some(i) if i.action == "complete" && i.error.is_none() => i.body["credentials"].as_str().map(str::to_owned),
        _ => None,
    })
}

#[utoipa::path(post, path = "/api/v1/operations/{id}/input", tag = "operations", params(("id" = String, Path)),
    request_body = OperatorInput,
    responses((status = 202, body = OperatorInputView,
        description = "kept for the agent running the operation; `GET` it to see whether the agent applied it"),
        (status = "4XX", body = Problem)))]
pub async fn submit_input(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<OperatorInput>>,
) -> ApiResult<(StatusCode, axum::Json<OperatorInputView>)> {
    let op = answerable(&st, &req.caller, &id).await?;
    if !waiting(&st, &op).await? {
        return Err(ApiError::conflict(
            "not_waiting",
            format!("operation {id} is not waiting for an operator"),
        ));
    }
    let input = req.body.get()?;
    let recipient = op.payload["requester_public_key"].as_str().unwrap_or_default();
    let body = kept_body(&input, recipient)?;
    let now = now_ms();
    let kept = st
        .store
        .submit_input(
            NewInput {
                operation_id: id.clone(),
                action: input.action().into(),
                body,
                submitted_by: req.caller.actor(),
            },
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::conflict("input_exists", m),
            e => e.into(),
        })?;
    let v = view(kept);
    st.store
        .append_audit(
            NewAuditEntry {
                actor: req.caller.actor(),
                action: "operation.input".into(),
                subject: format!("operation:{id}"),
                detail: json!({"action": v.action, "ipv4": v.ipv4, "ipv6": v.ipv6, "ssh_port": v.ssh_port,
                    "reason": v.reason, "root_password_sealed": v.root_password_sealed}),
            },
            now,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(v)))
}

#[utoipa::path(get, path = "/api/v1/operations/{id}/input", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = OperatorInputView), (status = "4XX", body = Problem)))]
pub async fn get_input(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<OperatorInputView>> {
    answerable(&st, &req.caller, &id).await?;
    crate::paging::no_query(q.as_deref())?;
    match st.store.input(&id).await? {
        Some(i) => Ok(axum::Json(view(i))),
        None => Err(ApiError::NotFound(format!("operator input for operation {id}"))),
    }
}

#[utoipa::path(post, path = "/api/v1/agent/operations/{id}/input/wait", tag = "agent", params(("id" = String, Path), WaitQuery),
    request_body = LeaseRef,
    responses((status = 200, body = OperatorInput, description = "an input to apply (never a password)"),
        (status = 204, description = "none within the wait"), (status = "4XX", body = Problem)))]
pub async fn wait_input(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed<Json<LeaseRef>>,
) -> ApiResult<Response> {
    let (agent, provider) = req.caller.require_agent()?;
    let q: WaitQuery = parse_query(q.as_deref())?;
    let wait = q.duration(Duration::from_secs(st.cfg.agents.max_claim_wait_seconds))?;
    let op = own_operation(&st, provider, &id).await?;
    let held = op.status == OpStatus::Running
        && op.lease_holder.as_deref() == Some(agent)
        && op.generation == req.body.get()?.generation;
    if !held {
        return Err(StoreError::LeaseLost(id).into());
    }
    let deadline = tokio::time::Instant::now() + wait;
    let signal = st.store.operation_signal(&id);
    loop {
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(i) = st.store.input(&id).await?
            && i.taken_at.is_none()
        {
            return Ok(axum::Json(for_agent(&i)?).into_response());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let _ = tokio::time::timeout(left.min(RECHECK), notified).await;
    }
}

#[utoipa::path(post, path = "/api/v1/agent/operations/{id}/input/taken", tag = "agent", params(("id" = String, Path)),
    request_body = InputTaken, responses((status = 204), (status = "4XX", body = Problem)))]
pub async fn input_taken(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<InputTaken>>,
) -> ApiResult<StatusCode> {
    let (agent, provider) = req.caller.require_agent()?;
    own_operation(&st, provider, &id).await?;
    let t = req.body.get()?;
    let error = t
        .error
        .as_deref()
        .map(|e| checked_text("error", &e.replace(['\n', '\r'], " "), 2000))
        .transpose()?;
    let now = now_ms();
    let taken = st
        .store
        .take_input(&lease(&id, agent, t.generation), error.as_deref(), now)
        .await?;
    st.store
        .append_audit(
            NewAuditEntry {
                actor: req.caller.actor(),
                action: if error.is_some() {
                    "operation.input_not_applied"
                } else {
                    "operation.input_applied"
                }
                .into(),
                subject: format!("operation:{id}"),
                detail: json!({"action": taken.action, "error": error}),
            },
            now,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
