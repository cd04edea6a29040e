//! An operation as a page: its stages as the agent reported them (start, finish, message), the
//! result (address, SSH line) or the failure (stage, code, message, what was cleaned up) with
//! Retry. While it runs, the progress region follows the operation over SSE ([`crate::live`]);
//! the page and the pushed fragments are one template, so a reload shows what the stream did.

use axum::extract::{Path, State};
use axum::response::Response;
use berth_api::wire::*;

use super::page;
use crate::api::{ApiResult, seg};
use crate::session::Viewer;
use crate::{Web, fmt};

/// The stages a provision goes through, in order (the manual backend waits for an operator
/// instead of cloning; stages that were not reported yet show as waiting).
const PROVISION: &[&str] = &[
    "clone_template",
    "configure_vm",
    "start_vm",
    "wait_network",
    "post_provision",
    "register",
];

pub struct StageRow {
    pub stage: String,
    pub title: String,
    /// completed, skipped, running, failed, waiting, not_reached, not_needed
    pub status: &'static str,
    pub started: String,
    pub took: String,
    pub message: String,
}

/// What the progress region shows.
pub struct Progress {
    pub op: OperationView,
    pub instance: Option<InstanceView>,
    pub stages: Vec<StageRow>,
    pub done: bool,
    pub failed_stage: Option<String>,
    pub cleanup: Option<String>,
    pub ssh: Option<String>,
    pub can_retry: bool,
}

impl Progress {
    pub fn new(op: OperationView, instance: Option<InstanceView>) -> Progress {
        let done = matches!(op.status.as_str(), "succeeded" | "failed");
        let failed = op.status == "failed";
        let mut stages: Vec<StageRow> = op
            .stages
            .iter()
            .map(|s| StageRow {
                stage: s.stage.clone(),
                title: fmt::stage(&s.stage).to_owned(),
                status: match s.status.as_str() {
                    "completed" => "completed",
                    "skipped" => "skipped",
                    _ if failed => "failed",
                    _ if done => "completed",
                    _ => "running",
                },
                started: fmt::time(s.started_at),
                took: s.finished_at.map(|f| fmt::took(s.started_at, f)).unwrap_or_default(),
                message: s.message.clone().unwrap_or_default(),
            })
            .collect();
        if op.kind == "provision" && !op.stages.iter().any(|s| s.stage == "waiting_for_operator") {
            for s in PROVISION {
                if !stages.iter().any(|r| r.stage == *s) {
                    stages.push(StageRow {
                        stage: (*s).into(),
                        title: fmt::stage(s).to_owned(),
                        status: match op.status.as_str() {
                            "succeeded" => "not_needed",
                            "failed" => "not_reached",
                            _ => "waiting",
                        },
                        started: String::new(),
                        took: String::new(),
                        message: String::new(),
                    });
                }
            }
        }
        let failed_stage = stages
            .iter()
            .find(|s| s.status == "failed" && s.stage != "cleanup")
            .map(|s| s.title.clone());
        let cleanup = op.stages.iter().find(|s| s.stage == "cleanup").map(|s| {
            let how = if s.status == "completed" {
                "cleaned up"
            } else {
                "cleanup did not finish"
            };
            match &s.message {
                Some(m) => format!("{how}: {m}"),
                None => how.to_owned(),
            }
        });
        let ssh = op.result.as_ref().and_then(OpResult::ssh_command);
        let can_retry = failed && op.kind == "provision" && instance.as_ref().is_some_and(|i| i.status == "failed");
        Progress {
            op,
            instance,
            stages,
            done,
            failed_stage,
            cleanup,
            ssh,
            can_retry,
        }
    }

    /// The operation and its instance as `v` may see them.
    pub async fn read(web: &Web, v: &Viewer, id: &str) -> ApiResult<Progress> {
        let op: OperationView = web
            .api
            .get(&v.caller, &format!("/api/v1/operations/{}", seg(id)))
            .await?;
        let instance = web
            .api
            .get(&v.caller, &format!("/api/v1/instances/{}", seg(&op.instance_id)))
            .await
            .ok();
        Ok(Progress::new(op, instance))
    }
}

/// The progress region alone, as the live stream pushes it.
#[derive(askama::Template)]
#[template(path = "progress.html")]
pub struct ProgressFragment {
    pub p: Progress,
}

/// The operation's page; staff also get the answer form while it waits for an operator.
pub async fn show(State(web): State<Web>, v: Viewer, Path(id): Path<String>) -> Response {
    let r = super::waiting::render(&web, &v, &id, Default::default(), Default::default()).await;
    page(&v, r)
}
