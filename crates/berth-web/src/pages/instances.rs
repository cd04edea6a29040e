//! Instances: the list (customers: theirs; providers: on their hypervisors; operators: all), one
//! instance with its record (vm id, hypervisor, addresses, SSH line) and operations, and its
//! actions. An action is sent once per click: the form carries an `Idempotency-Key`.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use berth_api::wire::*;
use serde::Deserialize;

use super::{Nav, page};
use crate::api::seg;
use crate::session::Viewer;
use crate::{Web, fmt, html};

pub struct Row {
    pub i: InstanceView,
    pub size: String,
    pub created: String,
}

#[derive(askama::Template)]
#[template(path = "instances.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<Row>,
    status: String,
    statuses: Vec<(&'static str, usize)>,
    shown: usize,
    total: usize,
    page: usize,
    pages: usize,
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    status: String,
    page: usize,
}

const PER_PAGE: usize = 50;
const STATUSES: &[&str] = &[
    "pending",
    "provisioning",
    "running",
    "stopped",
    "failed",
    "terminating",
    "terminated",
];

pub async fn list(State(web): State<Web>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let q: ListQuery = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    page(
        &v,
        async {
            let mut all: Vec<InstanceView> = web.api.list(&v.caller, "/api/v1/instances").await?;
            all.sort_by_key(|i| std::cmp::Reverse(i.created_at));
            let total = all.len();
            let statuses = STATUSES
                .iter()
                .map(|s| (*s, all.iter().filter(|i| i.status == *s).count()))
                .filter(|(_, n)| *n > 0)
                .collect();
            let matching: Vec<InstanceView> = all
                .into_iter()
                .filter(|i| q.status.is_empty() || i.status == q.status)
                .collect();
            let shown = matching.len();
            let pages = shown.div_ceil(PER_PAGE).max(1);
            let pg = q.page.clamp(1, pages);
            let rows = matching
                .into_iter()
                .skip((pg - 1) * PER_PAGE)
                .take(PER_PAGE)
                .map(|i| Row {
                    size: fmt::size(i.cores, i.memory_mib, i.disk_gib),
                    created: fmt::time(i.created_at),
                    i,
                })
                .collect();
            Ok(html(&ListPage {
                nav: Nav::of(&v),
                rows,
                status: q.status.clone(),
                statuses,
                shown,
                total,
                page: pg,
                pages,
                key: super::orders::new_key(),
            }))
        }
        .await,
    )
}

#[derive(askama::Template)]
#[template(path = "instance.html")]
struct InstancePage {
    nav: Nav,
    i: InstanceView,
    ops: Vec<OperationView>,
    ssh: Option<String>,
    actions: Vec<(&'static str, &'static str)>,
    key: String,
    busy: bool,
}

/// The actions the instance's status allows now (the API's own rule), as buttons.
fn actions(status: &str) -> Vec<(&'static str, &'static str)> {
    [
        ("provision", "Provision"),
        ("start", "Start"),
        ("stop", "Stop"),
        ("reboot", "Reboot"),
        ("terminate", "Terminate"),
    ]
    .into_iter()
    .filter(|(a, _)| berth_server::routes::actions::rule(a).is_some_and(|(allowed, _)| allowed.contains(&status)))
    .collect()
}

pub async fn show(State(web): State<Web>, v: Viewer, Path(id): Path<String>) -> Response {
    page(
        &v,
        async {
            let i: InstanceView = web
                .api
                .get(&v.caller, &format!("/api/v1/instances/{}", seg(&id)))
                .await?;
            let mut ops: Vec<OperationView> = web
                .api
                .list(&v.caller, &format!("/api/v1/instances/{}/operations", seg(&id)))
                .await?;
            ops.reverse();
            let busy = ops.iter().any(|o| matches!(o.status.as_str(), "queued" | "running"));
            let ssh = i.ssh_command();
            Ok(html(&InstancePage {
                nav: Nav::of(&v),
                actions: actions(&i.status),
                ssh,
                i,
                ops,
                key: super::orders::new_key(),
                busy,
            }))
        }
        .await,
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ActForm {
    key: String,
}

pub async fn act(
    State(web): State<Web>,
    v: Viewer,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    // A button's form, or nothing at all (no key: not deduplicated).
    let f: ActForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let path = format!("/api/v1/instances/{}/{}", seg(&id), seg(&action));
    let key = Some(f.key.as_str()).filter(|k| !k.is_empty());
    match web
        .api
        .post::<Accepted>(&v.caller, &path, &serde_json::json!({}), key)
        .await
    {
        Ok(a) => Redirect::to(&match a.operation_id {
            Some(op) => format!("/ui/operations/{}", seg(&op)),
            None => format!("/ui/instances/{}", seg(&id)),
        })
        .into_response(),
        Err(p) => super::problem_page(&v, &p),
    }
}

/// What one instance of a bulk action came to.
pub struct Outcome {
    pub id: String,
    pub name: String,
    pub operation: Option<String>,
    pub error: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "bulk.html")]
struct BulkPage {
    nav: Nav,
    action: String,
    outcomes: Vec<Outcome>,
}

/// One action on a selection: each instance is its own request (its own idempotency key, its
/// own authorization and status rule), and each gets its own line in the answer.
pub async fn bulk(State(web): State<Web>, v: Viewer, body: axum::body::Bytes) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, val)| val.clone())
            .unwrap_or_default()
    };
    let (action, key) = (get("action"), get("key"));
    let ids: Vec<&String> = pairs.iter().filter(|(n, _)| n == "ids").map(|(_, id)| id).collect();
    if ids.is_empty() {
        return Redirect::to("/ui/instances").into_response();
    }
    let mut outcomes = Vec::new();
    for id in ids.into_iter().take(200) {
        let name = match web
            .api
            .get::<InstanceView>(&v.caller, &format!("/api/v1/instances/{}", seg(id)))
            .await
        {
            Ok(i) => i.name,
            Err(p) => {
                outcomes.push(Outcome {
                    id: id.clone(),
                    name: id.clone(),
                    operation: None,
                    error: Some(p.detail),
                });
                continue;
            }
        };
        let path = format!("/api/v1/instances/{}/{}", seg(id), seg(&action));
        let k = format!("{key}-{id}");
        let key = Some(k.as_str()).filter(|_| !key.is_empty());
        let r = web
            .api
            .post::<Accepted>(&v.caller, &path, &serde_json::json!({}), key)
            .await;
        outcomes.push(Outcome {
            id: id.clone(),
            name,
            operation: r.as_ref().ok().and_then(|a| a.operation_id.clone()),
            error: r.err().map(|p| p.detail),
        });
    }
    outcomes_page(&v, &action, outcomes)
}

/// What each instance of an action on several came to.
pub fn outcomes_page(v: &Viewer, action: &str, outcomes: Vec<Outcome>) -> Response {
    html(&BulkPage {
        nav: Nav::of(v),
        action: action.to_owned(),
        outcomes,
    })
}
