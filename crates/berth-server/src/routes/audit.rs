//! The audit log, for operators: pages of entries and a verification of the whole hash chain.

use axum::extract::{RawQuery, State};
use berth_api::wire::*;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Authed;
use crate::problem::{ApiResult, parse_query};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries after this sequence number (default 0: from the start).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

pub fn entry_view(e: berth_store::AuditEntry) -> AuditEntryView {
    AuditEntryView {
        seq: e.seq,
        at: e.at,
        actor: e.actor,
        action: e.action,
        subject: e.subject,
        detail: e.detail,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [AuditEntryView]), (status = "4XX", body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<Vec<AuditEntryView>>> {
    req.caller.require_operator()?;
    let q: AuditQuery = parse_query(q.as_deref())?;
    let limit = crate::paging::page(None, q.limit)?.limit;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(crate::problem::ApiError::invalid(
            "after",
            format!("must be a sequence number, 0 or more (got {after})"),
        ));
    }
    let page = st.store.audit_page(after, limit).await?;
    Ok(axum::Json(page.into_iter().map(entry_view).collect()))
}

pub fn verification(v: Result<berth_store::Verified, berth_store::Broken>) -> AuditVerification {
    match v {
        Ok(ok) => AuditVerification {
            ok: true,
            entries: ok.entries as i64,
            last_hash: Some(ok.head),
            broken_at: None,
            reason: None,
        },
        Err(b) => AuditVerification {
            ok: false,
            entries: b.seq - 1,
            last_hash: None,
            broken_at: Some(b.seq),
            reason: Some(b.reason),
        },
    }
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerification), (status = "4XX", body = Problem)))]
pub async fn verify(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<AuditVerification>> {
    req.caller.require_operator()?;
    crate::paging::no_query(q.as_deref())?;
    Ok(axum::Json(verification(st.store.verify_audit().await?)))
}
