//! Hypervisors: a provider's agents (operators: every provider's) with health, last heartbeat,
//! capacity used as bars, drift reported by reconcile and the templates each one reports; and
//! setup tokens for a new agent with the exact enroll command.

use axum::extract::State;
use axum::response::Response;
use berth_api::wire::*;

use super::{Nav, page};
use crate::api::seg;
use crate::session::Viewer;
use crate::{Web, fmt, html};

pub struct Bar {
    pub label: &'static str,
    pub percent: u64,
    pub text: String,
}

pub struct AgentRow {
    pub agent: AgentView,
    pub status: &'static str,
    pub last_seen: String,
    pub bars: Vec<Bar>,
    pub templates: Vec<TemplateReport>,
}

impl AgentRow {
    fn new(agent: AgentView, templates: Vec<TemplateView>) -> AgentRow {
        let status = if agent.revoked_at.is_some() {
            "revoked"
        } else if !agent.alive {
            "offline"
        } else if agent
            .heartbeat
            .as_ref()
            .is_some_and(|h| h.backends.iter().any(|b| !b.healthy))
        {
            "unhealthy"
        } else {
            "online"
        };
        let bars = agent
            .heartbeat
            .as_ref()
            // Nothing metered at all: no bars of nothing (the page says why).
            .filter(|h| !h.capacity.nothing_metered())
            .map(|h| {
                let c = &h.capacity;
                vec![
                    Bar {
                        label: "CPU cores",
                        percent: fmt::used_percent(c.cores_total, c.cores_free),
                        text: format!(
                            "{} of {} used",
                            c.cores_total - c.cores_free.min(c.cores_total),
                            c.cores_total
                        ),
                    },
                    Bar {
                        label: "Memory",
                        percent: fmt::used_percent(c.memory_mib_total, c.memory_mib_free),
                        text: format!(
                            "{} of {} used",
                            fmt::mib(c.memory_mib_total - c.memory_mib_free.min(c.memory_mib_total)),
                            fmt::mib(c.memory_mib_total)
                        ),
                    },
                    Bar {
                        label: "Disk",
                        percent: fmt::used_percent(c.disk_gib_total, c.disk_gib_free),
                        text: format!(
                            "{} of {} GiB used",
                            c.disk_gib_total - c.disk_gib_free.min(c.disk_gib_total),
                            c.disk_gib_total
                        ),
                    },
                ]
            })
            .unwrap_or_default();
        AgentRow {
            status,
            last_seen: agent.last_seen.map(fmt::time).unwrap_or_else(|| "never".into()),
            bars,
            templates: templates.into_iter().map(|t| t.template).collect(),
            agent,
        }
    }
}

#[derive(askama::Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    nav: Nav,
    agents: Vec<AgentRow>,
    providers: Vec<ProviderView>,
    customers: Vec<CustomerView>,
    setup: Option<EnrollmentTokenView>,
    can_enroll: bool,
}

async fn render(web: &Web, v: &Viewer, setup: Option<EnrollmentTokenView>) -> crate::api::ApiResult<Response> {
    let agents: Vec<AgentView> = web.api.list(&v.caller, "/api/v1/agents").await?;
    let (providers, customers): (Vec<ProviderView>, Vec<CustomerView>) = if v.role() == "operator" {
        (
            web.api.list(&v.caller, "/api/v1/providers").await?,
            web.api.list(&v.caller, "/api/v1/customers").await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    // Templates once per provider (not per agent), then grouped by agent.
    let whose: Vec<String> = match v.role() {
        "operator" => providers.iter().map(|p| p.id.clone()).collect(),
        _ => vec![v.subject().to_owned()],
    };
    let mut templates: Vec<TemplateView> = Vec::new();
    for p in whose {
        let path = format!("/api/v1/providers/{}/templates", seg(&p));
        templates.extend(web.api.get::<Vec<TemplateView>>(&v.caller, &path).await?);
    }
    let rows = agents
        .into_iter()
        .map(|a| {
            let mine = templates.iter().filter(|t| t.agent_id == a.id).cloned().collect();
            AgentRow::new(a, mine)
        })
        .collect();
    Ok(html(&AgentsPage {
        nav: Nav::of(v),
        agents: rows,
        providers,
        customers,
        setup,
        can_enroll: v.role() == "provider",
    }))
}

pub async fn list(State(web): State<Web>, v: Viewer) -> Response {
    page(&v, render(&web, &v, None).await)
}

/// A new setup token, shown once with the command that uses it.
pub async fn setup_token(State(web): State<Web>, v: Viewer) -> Response {
    page(
        &v,
        async {
            let path = format!("/api/v1/providers/{}/enrollment-tokens", seg(v.subject()));
            let t: EnrollmentTokenView = web
                .api
                .post(&v.caller, &path, &CreateEnrollmentToken::default(), None)
                .await?;
            render(&web, &v, Some(t)).await
        }
        .await,
    )
}
