//! The pages. Each handler reads what it shows from the API as the viewer and renders one
//! template; a problem from the API becomes an error page with the API's status (another
//! tenant's thing is a 404, as on the API).

pub mod agents;
pub mod instances;
pub mod keys;
pub mod offerings;
pub mod operations;
pub mod orders;
pub mod waiting;
pub mod wizard;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use berth_api::wire::{AuditEntryView, AuditVerification, Problem};
use serde::Deserialize;

use crate::session::Viewer;
use crate::{Web, html};

/// What the header shows: the viewer's role (empty: signed out).
pub struct Nav {
    pub role: &'static str,
}

impl Nav {
    pub fn of(v: &Viewer) -> Nav {
        Nav { role: v.role() }
    }

    pub fn none() -> Nav {
        Nav { role: "" }
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    detail: String,
}

/// The page for a problem the API answered.
pub fn problem_page(v: &Viewer, p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (title, detail) = if status == StatusCode::NOT_FOUND {
        (
            "Not found".to_owned(),
            "There is nothing here that you may see.".to_owned(),
        )
    } else {
        (
            status.canonical_reason().unwrap_or("Error").to_owned(),
            p.detail.clone(),
        )
    };
    (
        status,
        html(&ErrorPage {
            nav: Nav::of(v),
            title,
            detail,
        }),
    )
        .into_response()
}

/// `Ok(page)` or the problem's page.
pub fn page(v: &Viewer, r: Result<Response, Problem>) -> Response {
    r.unwrap_or_else(|p| problem_page(v, &p))
}

/// Where each role starts.
pub async fn home(v: Viewer) -> Redirect {
    Redirect::to(match v.role() {
        "customer" => "/ui/catalogue",
        _ => "/ui/agents",
    })
}

/// A form field that holds a private key pasted by mistake is not sent back to the browser:
/// forms keep what was typed, except a secret.
pub fn scrub_private(field: &mut String) {
    if field.contains("PRIVATE KEY") {
        field.clear();
    }
}

/// A field error as forms show it: next to the field the API named.
#[derive(Debug, Default)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// The API's status for it (0: the page's own check, 422).
    pub status: u16,
}

impl FieldError {
    pub fn from(p: &Problem) -> FieldError {
        FieldError {
            field: p.field.clone().unwrap_or_default(),
            message: p.detail.clone(),
            status: p.status,
        }
    }

    /// The status of a form page showing this: the API's (409 for an offline agent, 403 …),
    /// 422 for the page's own checks, 200 without an error.
    pub fn status(&self) -> StatusCode {
        if self.message.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
        }
    }

    /// The message, if it belongs to `field` (shown next to it, without naming it again).
    pub fn on(&self, field: &str) -> Option<&str> {
        (self.field == field).then(|| {
            let m = self.message.as_str();
            m.strip_prefix(field).and_then(|r| r.strip_prefix(": ")).unwrap_or(m)
        })
    }

    /// The message, if it belongs to none of `fields` (shown above the form).
    pub fn other(&self, fields: &[&str]) -> Option<&str> {
        (!self.message.is_empty() && !fields.contains(&self.field.as_str())).then_some(self.message.as_str())
    }
}

#[derive(askama::Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    verification: AuditVerification,
    entries: Vec<AuditEntryView>,
    after: i64,
    newer: Option<i64>,
    older: Option<i64>,
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    after: Option<i64>,
}

const AUDIT_PAGE: i64 = 50;

pub async fn audit(State(web): State<Web>, v: Viewer, Query(q): Query<AuditQuery>) -> Response {
    page(
        &v,
        async {
            let verification: AuditVerification = web.api.get(&v.caller, "/api/v1/audit/verify").await?;
            // A broken chain: start just before the break, and let the operator page past it.
            let (last, start) = match verification.broken_at {
                Some(b) => (b + AUDIT_PAGE, (b - AUDIT_PAGE / 2).max(0)),
                None => (verification.entries.max(0), (verification.entries - AUDIT_PAGE).max(0)),
            };
            let after = q.after.unwrap_or(start).max(0);
            let mut entries: Vec<AuditEntryView> = web
                .api
                .get(&v.caller, &format!("/api/v1/audit?after={after}&limit={AUDIT_PAGE}"))
                .await?;
            entries.reverse();
            Ok(html(&AuditPage {
                nav: Nav::of(&v),
                newer: (after + AUDIT_PAGE < last || entries.len() as i64 == AUDIT_PAGE).then_some(after + AUDIT_PAGE),
                older: (after > 0).then_some((after - AUDIT_PAGE).max(0)),
                verification,
                entries,
                after,
            }))
        }
        .await,
    )
}
