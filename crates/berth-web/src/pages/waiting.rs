//! Machines a person builds (the manual backend, "dashboard input"): the list of provisions
//! waiting for an operator (`/ui/waiting`), and on a waiting operation's page the form that
//! answers it: the machine's addresses, SSH port and root password, or fail / cancel with a
//! reason. The answer goes through the API to the agent running the operation; a password is
//! sealed for the requester by the control plane and never sent back into a page.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use berth_api::wire::*;
use serde::Deserialize;

use super::operations::Progress;
use super::{FieldError, Nav, page};
use crate::api::{ApiResult, is_not_found, seg};
use crate::session::Viewer;
use crate::{Web, fmt, html};

pub const STAGE: &str = "waiting_for_operator";

/// Whether the operation is waiting for an operator right now.
pub fn is_waiting(op: &OperationView) -> bool {
    matches!(op.status.as_str(), "running" | "queued")
        && op
            .stages
            .iter()
            .rev()
            .find(|s| s.stage == STAGE)
            .is_some_and(|s| s.status == "running")
}

/// What an operator types. The password is never rendered back.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InputForm {
    /// `complete`, `fail` or `cancel` (the button pressed).
    pub action: String,
    pub ipv4: String,
    pub ipv6: String,
    pub ssh_port: String,
    pub root_password: String,
    pub reason: String,
}

impl InputForm {
    fn to_input(&self) -> Result<OperatorInput, FieldError> {
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(match self.action.as_str() {
            "complete" => OperatorInput::Complete {
                ipv4: opt(&self.ipv4),
                ipv6: opt(&self.ipv6),
                ssh_port: match self.ssh_port.trim() {
                    "" => None,
                    p => Some(p.parse::<u16>().map_err(|_| FieldError {
                        field: "ssh_port".into(),
                        message: "must be a port number, 1-65535".into(),
                        status: 422,
                    })?),
                },
                root_password: Some(self.root_password.clone()).filter(|p| !p.is_empty()),
            },
            "fail" => OperatorInput::Fail {
                reason: self.reason.clone(),
            },
            "cancel" => OperatorInput::Cancel {
                reason: self.reason.clone(),
            },
            other => {
                return Err(FieldError {
                    field: "action".into(),
                    message: format!("unknown action {other:?}: complete, fail or cancel"),
                    status: 422,
                });
            }
        })
    }
}

/// The answer panel on a waiting operation's page (staff only).
pub struct Answer {
    pub form: InputForm,
    pub error: FieldError,
    /// What was sent before, and whether the agent applied it.
    pub sent: Option<OperatorInputView>,
}

impl Answer {
    /// The panel for `p`, when `v` may answer it and it waits; `None` otherwise.
    pub async fn read(
        web: &Web,
        v: &Viewer,
        p: &Progress,
        form: InputForm,
        error: FieldError,
    ) -> ApiResult<Option<Answer>> {
        if v.role() == "customer" || !is_waiting(&p.op) {
            return Ok(None);
        }
        let sent = match web
            .api
            .get::<OperatorInputView>(&v.caller, &format!("/api/v1/operations/{}/input", seg(&p.op.id)))
            .await
        {
            Ok(i) => Some(i),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e),
        };
        Ok(Some(Answer { form, error, sent }))
    }

    /// Whether a new answer may be sent (none yet, or the agent could not apply the last).
    pub fn open(&self) -> bool {
        self.sent.as_ref().is_none_or(|s| s.status == "not_applied")
    }
}

#[derive(askama::Template)]
#[template(path = "operation.html")]
pub struct OperationPage {
    pub nav: Nav,
    pub p: Progress,
    pub answer: Option<Answer>,
    /// A refused answer when the form is gone (the operation stopped waiting meanwhile).
    pub notice: Option<String>,
}

/// The operation page, with the answer panel when it waits for the viewer.
pub async fn render(web: &Web, v: &Viewer, id: &str, mut form: InputForm, error: FieldError) -> ApiResult<Response> {
    form.root_password.clear();
    let status = error.status();
    let refused = (!error.message.is_empty()).then(|| error.message.clone());
    let p = Progress::read(web, v, id).await?;
    let answer = Answer::read(web, v, &p, form, error).await?;
    let notice = if answer.is_some() { None } else { refused };
    Ok((
        status,
        html(&OperationPage {
            nav: Nav::of(v),
            p,
            answer,
            notice,
        }),
    )
        .into_response())
}

pub async fn answer(
    State(web): State<Web>,
    v: Viewer,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<InputForm>,
) -> Response {
    let sent = match form.to_input() {
        Ok(input) => web
            .api
            .post::<OperatorInputView>(
                &v.caller,
                &format!("/api/v1/operations/{}/input", seg(&id)),
                &input,
                None,
            )
            .await
            .map_err(|p| FieldError::from(&p)),
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => Redirect::to(&format!("/ui/operations/{}", seg(&id))).into_response(),
        Err(e) if e.status == 404 => page(&v, Err(not_found())),
        Err(e) => page(&v, render(&web, &v, &id, form, e).await),
    }
}

fn not_found() -> Problem {
    Problem {
        type_: "about:blank".into(),
        title: "Not Found".into(),
        status: 404,
        detail: "not found".into(),
        code: "not_found".into(),
        field: None,
        retryable: false,
    }
}

/// A provision waiting for an operator, as the list shows it.
pub struct Waiting {
    pub instance: InstanceView,
    pub operation_id: String,
    pub since: String,
    pub waited: String,
    /// How the last answer went (empty: none sent).
    pub answer: String,
}

#[derive(askama::Template)]
#[template(path = "waiting.html")]
struct WaitingPage {
    nav: Nav,
    waiting: Vec<Waiting>,
}

pub async fn list(State(web): State<Web>, v: Viewer) -> Response {
    page(
        &v,
        async {
            let instances: Vec<InstanceView> = web.api.list(&v.caller, "/api/v1/instances?status=provisioning").await?;
            let mut waiting = Vec::new();
            let now = fmt::now_ms();
            for i in instances.into_iter().filter(|i| i.status == "provisioning") {
                let ops: Vec<OperationView> = web
                    .api
                    .list(&v.caller, &format!("/api/v1/instances/{}/operations", seg(&i.id)))
                    .await?;
                let Some(op) = ops.into_iter().find(is_waiting) else {
                    continue;
                };
                let started = op.stages.iter().rev().find(|s| s.stage == STAGE).map(|s| s.started_at);
                let answer = match web
                    .api
                    .get::<OperatorInputView>(&v.caller, &format!("/api/v1/operations/{}/input", seg(&op.id)))
                    .await
                {
                    Ok(a) => fmt::input_status(&a),
                    Err(e) if is_not_found(&e) => String::new(),
                    Err(e) => return Err(e),
                };
                waiting.push(Waiting {
                    since: started.map(fmt::time).unwrap_or_default(),
                    waited: started.map(|s| fmt::took(s, now)).unwrap_or_default(),
                    operation_id: op.id,
                    instance: i,
                    answer,
                });
            }
            Ok(html(&WaitingPage {
                nav: Nav::of(&v),
                waiting,
            }))
        }
        .await,
    )
}
