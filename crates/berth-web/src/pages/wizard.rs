//! The staff wizard of seed 001: hypervisor → template → configure → review → live progress.
//! Each step is its own GET URL carrying what was chosen so far in its query, so back, reload
//! and a shared link keep the state; only the last step POSTs. Hypervisors are the agents'
//! backends as their heartbeats report them: only connected, healthy ones with room can be
//! picked, and each other one says why. Templates come live from the chosen backend. The review
//! shows the exact request(s) and the equivalent `berth instance create` line. Several machines
//! come from a name pattern (`web-{n}`) and a count; each is its own request with its own
//! idempotency key.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use berth_api::wire::*;
use serde::{Deserialize, Serialize};

use super::instances::Outcome;
use super::offerings::{lines, number};
use super::{FieldError, Nav, page};
use crate::api::{ApiResult, seg};
use crate::session::Viewer;
use crate::{Web, fmt, html};

/// Everything chosen so far, as the steps' query strings carry it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Wizard {
    pub agent: String,
    pub backend: String,
    pub template: String,
    pub name: String,
    pub count: String,
    pub cores: String,
    pub memory_mib: String,
    pub disk_gib: String,
    pub ssh_public_key: String,
    pub requester_public_key: String,
    pub customer_id: String,
    pub commands: String,
    pub skip_post_provision: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
}

pub const MAX_COUNT: u32 = 50;

impl Wizard {
    fn parse(q: Option<&str>) -> Wizard {
        serde_urlencoded::from_str(q.unwrap_or("")).unwrap_or_default()
    }

    /// The query string of this state (for the next step's links).
    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    /// The requests this state makes: one per name.
    pub fn requests(&self) -> Result<Vec<CreateInstance>, FieldError> {
        let count: u32 = match self.count.trim() {
            "" => 1,
            c => number("count", c, "a whole number from 1 to 50")?,
        };
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(FieldError {
                field: "count".into(),
                message: format!("must be 1-{MAX_COUNT} (got {count})"),
                status: 422,
            });
        }
        let name = self.name.trim();
        if count > 1 && !name.contains("{n}") {
            return Err(FieldError {
                field: "name".into(),
                message: "for several machines, put {n} where the number goes (like web-{n})".into(),
                status: 422,
            });
        }
        let base = CreateInstance {
            agent_id: self.agent.clone(),
            backend: Some(self.backend.clone()).filter(|b| !b.is_empty()),
            template: Some(self.template.clone()).filter(|t| !t.is_empty()),
            name: String::new(),
            cores: number("cores", &self.cores, "a whole number of cores")?,
            memory_mib: number("memory_mib", &self.memory_mib, "a whole number of MiB")?,
            disk_gib: number("disk_gib", &self.disk_gib, "a whole number of GiB")?,
            ssh_public_key: self.ssh_public_key.trim().to_owned(),
            requester_public_key: Some(self.requester_public_key.trim().to_owned()).filter(|k| !k.is_empty()),
            post_provision_commands: lines(&self.commands),
            skip_post_provision: !self.skip_post_provision.is_empty(),
            customer_id: Some(self.customer_id.trim().to_owned()).filter(|c| !c.is_empty()),
            provision: true,
        };
        Ok((1..=count)
            .map(|n| CreateInstance {
                name: name.replace("{n}", &n.to_string()),
                ..base.clone()
            })
            .collect())
    }
}

/// A shell word, quoted when it needs to be.
fn sh(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The `berth instance create` line that makes the same request.
pub fn cli_line(r: &CreateInstance) -> String {
    let mut w = vec![
        "berth instance create".to_owned(),
        format!("--agent {}", sh(&r.agent_id)),
    ];
    if let Some(b) = &r.backend {
        w.push(format!("--backend {}", sh(b)));
    }
    if let Some(t) = &r.template {
        w.push(format!("--template {}", sh(t)));
    }
    w.push(format!("--name {}", sh(&r.name)));
    w.push(format!(
        "--cores {} --memory-mib {} --disk-gib {}",
        r.cores, r.memory_mib, r.disk_gib
    ));
    w.push(format!("--ssh-key {}", sh(&r.ssh_public_key)));
    if let Some(k) = &r.requester_public_key {
        w.push(format!("--requester-key {}", sh(k)));
    }
    if let Some(c) = &r.customer_id {
        w.push(format!("--customer {}", sh(c)));
    }
    for c in &r.post_provision_commands {
        w.push(format!("--command {}", sh(c)));
    }
    if r.skip_post_provision {
        w.push("--skip-post-provision".into());
    }
    w.join(" \\\n    ")
}

/// A hypervisor as step 1 offers it.
pub struct Choice {
    pub value: String,
    pub agent: String,
    pub backend: String,
    pub kind: String,
    pub why_not: Option<String>,
    pub room: String,
}

#[derive(askama::Template)]
#[template(path = "wizard_hypervisor.html")]
struct HypervisorStep {
    nav: Nav,
    choices: Vec<Choice>,
    w: Wizard,
}

pub async fn hypervisor(State(web): State<Web>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let w = Wizard::parse(q.as_deref());
    page(
        &v,
        async {
            let agents: Vec<AgentView> = web.api.list(&v.caller, "/api/v1/agents").await?;
            let adm = &web.state.cfg.admission;
            let smallest = berth_server::routes::catalog::Need {
                cores: 1,
                memory_mib: 512,
                disk_gib: 1,
            };
            let mut choices = Vec::new();
            for a in agents.into_iter().filter(|a| a.revoked_at.is_none()) {
                let offline = (!a.alive).then(|| match a.last_seen {
                    Some(t) => format!("offline since {}", fmt::time(t)),
                    None => "never connected".to_owned(),
                });
                let Some(hb) = a.heartbeat.clone().filter(|_| a.alive) else {
                    choices.push(Choice {
                        value: String::new(),
                        agent: a.name.clone(),
                        backend: String::new(),
                        kind: String::new(),
                        why_not: offline.or(Some("no heartbeat yet".into())),
                        room: String::new(),
                    });
                    continue;
                };
                let c = &hb.capacity;
                let room = if c.nothing_metered() {
                    "capacity not metered".to_owned()
                } else {
                    format!(
                        "{} of {} cores, {} of {} memory free",
                        c.cores_free,
                        c.cores_total,
                        fmt::mib(c.memory_mib_free),
                        fmt::mib(c.memory_mib_total)
                    )
                };
                let full = !berth_server::routes::catalog::fits(c, adm, smallest);
                for b in &hb.backends {
                    let why_not = if !b.healthy {
                        Some(format!("unhealthy: {}", b.detail.as_deref().unwrap_or("no detail")))
                    } else if full {
                        Some("no room".to_owned())
                    } else {
                        None
                    };
                    choices.push(Choice {
                        value: format!("{}:{}", a.id, b.name),
                        agent: a.name.clone(),
                        backend: b.name.clone(),
                        kind: b.kind.clone(),
                        why_not,
                        room: room.clone(),
                    });
                }
            }
            Ok(html(&HypervisorStep {
                nav: Nav::of(&v),
                choices,
                w,
            }))
        }
        .await,
    )
}

#[derive(askama::Template)]
#[template(path = "wizard_template.html")]
struct TemplateStep {
    nav: Nav,
    templates: Vec<TemplateReport>,
    w: Wizard,
    back: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Pick {
    pick: String,
}

pub async fn template(State(web): State<Web>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let mut w = Wizard::parse(q.as_deref());
    let pick: Pick = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    if let Some((a, b)) = pick.pick.split_once(':') {
        (w.agent, w.backend) = (a.to_owned(), b.to_owned());
    }
    if w.agent.is_empty() {
        return Redirect::to("/ui/wizard").into_response();
    }
    page(
        &v,
        async {
            let all: Vec<TemplateView> = web
                .api
                .get(&v.caller, &format!("/api/v1/agents/{}/templates", seg(&w.agent)))
                .await?;
            let templates = all
                .into_iter()
                .map(|t| t.template)
                .filter(|t| t.backend == w.backend)
                .collect();
            Ok(html(&TemplateStep {
                nav: Nav::of(&v),
                templates,
                back: format!("/ui/wizard?{}", w.query()),
                w,
            }))
        }
        .await,
    )
}

#[derive(askama::Template)]
#[template(path = "wizard_configure.html")]
struct ConfigureStep {
    nav: Nav,
    w: Wizard,
    error: FieldError,
    back: String,
}

async fn configure_page(web: &Web, v: &Viewer, mut w: Wizard, error: FieldError) -> ApiResult<Response> {
    if !w.from.is_empty() {
        // Edit & retry: start from that instance's request.
        let i: InstanceView = web
            .api
            .get(&v.caller, &format!("/api/v1/instances/{}", seg(&w.from)))
            .await?;
        w = Wizard {
            agent: i.agent_id.unwrap_or_default(),
            backend: i.backend.unwrap_or_default(),
            template: i.template.unwrap_or_default(),
            name: i.name,
            cores: i.cores.to_string(),
            memory_mib: i.memory_mib.to_string(),
            disk_gib: i.disk_gib.to_string(),
            ssh_public_key: i.ssh_public_key,
            customer_id: i.customer_id.unwrap_or_default(),
            ..Wizard::default()
        };
    }
    super::scrub_private(&mut w.ssh_public_key);
    for (field, default) in [
        (&mut w.cores, "2"),
        (&mut w.memory_mib, "2048"),
        (&mut w.disk_gib, "20"),
    ] {
        if field.is_empty() {
            *field = default.to_owned();
        }
    }
    let status = error.status();
    let back = format!("/ui/wizard/template?{}", w.query());
    Ok((
        status,
        html(&ConfigureStep {
            nav: Nav::of(v),
            w,
            error,
            back,
        }),
    )
        .into_response())
}

pub async fn configure(State(web): State<Web>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let mut w = Wizard::parse(q.as_deref());
    let pick: Pick = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    if !pick.pick.is_empty() || q.as_deref().is_some_and(|q| q.contains("pick=")) {
        w.template = pick.pick;
    }
    page(&v, configure_page(&web, &v, w, FieldError::default()).await)
}

#[derive(askama::Template)]
#[template(path = "wizard_review.html")]
struct ReviewStep {
    nav: Nav,
    w: Wizard,
    requests: Vec<(String, String)>,
    back: String,
}

pub async fn review(State(web): State<Web>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let mut w = Wizard::parse(q.as_deref());
    match w.requests() {
        Err(e) => page(&v, configure_page(&web, &v, w, e).await),
        Ok(reqs) => {
            w.key = super::orders::new_key();
            let requests = reqs
                .iter()
                .map(|r| (serde_json::to_string_pretty(r).unwrap_or_default(), cli_line(r)))
                .collect();
            let back = format!(
                "/ui/wizard/configure?{}",
                Wizard {
                    key: String::new(),
                    ..w.clone()
                }
                .query()
            );
            html(&ReviewStep {
                nav: Nav::of(&v),
                w,
                requests,
                back,
            })
        }
    }
}

/// The last step: every request sent (its own idempotency key); one machine goes to its live
/// progress, several to a list of them. The first refusal goes back to configure with the
/// field named; nothing was made for it.
pub async fn submit(State(web): State<Web>, v: Viewer, axum::Form(w): axum::Form<Wizard>) -> Response {
    let reqs = match w.requests() {
        Ok(r) => r,
        Err(e) => return page(&v, configure_page(&web, &v, w, e).await),
    };
    let mut outcomes = Vec::new();
    for (n, r) in reqs.iter().enumerate() {
        let key = format!("{}-{n}", w.key);
        let key = Some(key.as_str()).filter(|_| !w.key.is_empty());
        match web.api.post::<Accepted>(&v.caller, "/api/v1/instances", r, key).await {
            Ok(a) if reqs.len() == 1 => {
                return Redirect::to(&match a.operation_id {
                    Some(op) => format!("/ui/operations/{}", seg(&op)),
                    None => format!("/ui/instances/{}", seg(&a.instance_id)),
                })
                .into_response();
            }
            Ok(a) => outcomes.push(Outcome {
                id: a.instance_id,
                name: r.name.clone(),
                operation: a.operation_id,
                error: None,
            }),
            Err(p) if outcomes.is_empty() && p.status < 500 && p.status != 404 => {
                let w = Wizard {
                    key: String::new(),
                    ..w
                };
                return page(&v, configure_page(&web, &v, w, FieldError::from(&p)).await);
            }
            Err(p) => outcomes.push(Outcome {
                id: String::new(),
                name: r.name.clone(),
                operation: None,
                error: Some(p.detail),
            }),
        }
    }
    super::instances::outcomes_page(&v, "create", outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Wizard {
        Wizard {
            agent: "a1".into(),
            backend: "pve".into(),
            template: "9000".into(),
            name: "web-{n}".into(),
            count: "3".into(),
            cores: "2".into(),
            memory_mib: "2048".into(),
            disk_gib: "20".into(),
            ssh_public_key: "ssh-ed25519 AAAA me@host".into(),
            requester_public_key: "age1x".into(),
            commands: "apt-get update\n\n echo 'hi'\n".into(),
            ..Wizard::default()
        }
    }

    #[test]
    fn a_pattern_and_a_count_make_one_request_per_name() {
        let r = w().requests().unwrap();
        assert_eq!(
            r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["web-1", "web-2", "web-3"]
        );
        assert_eq!(r[0].post_provision_commands, ["apt-get update", " echo 'hi'"]);
        let bad = |f: fn(&mut Wizard)| {
            let mut x = w();
            f(&mut x);
            x.requests().unwrap_err().field
        };
        assert_eq!(bad(|x| x.count = "51".into()), "count");
        assert_eq!(bad(|x| x.count = "0".into()), "count");
        assert_eq!(bad(|x| x.name = "web".into()), "name");
        assert_eq!(bad(|x| x.cores = "two".into()), "cores");
        let state = w();
        let back = Wizard::parse(Some(&state.query()));
        assert_eq!(back.name, "web-{n}");
        assert_eq!(back.commands, state.commands);
    }

    #[test]
    fn the_cli_line_quotes_what_the_shell_would_split() {
        let mut x = w();
        x.count = "1".into();
        x.name = "web1".into();
        let line = cli_line(&x.requests().unwrap()[0]);
        assert!(line.contains("--ssh-key 'ssh-ed25519 AAAA me@host'"), "{line}");
        assert!(line.contains(r"--command ' echo '\''hi'\'''"), "{line}");
        assert!(line.contains("--template 9000"), "{line}");
    }
}
