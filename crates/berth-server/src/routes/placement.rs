//! `POST /instances`: a provider (or an operator) places a machine on a chosen agent and
//! backend, with a template that backend reports and a size, without an offering: for itself or
//! on behalf of a customer. The instance and all its later operations are pinned to that agent
//! (only it may claim them) and the provision runs on that backend. Refused up front, each with
//! the field it concerns: an agent that is not the caller's (404, as it would be for any other
//! tenant's thing), revoked or offline, a backend it does not have or that reports unhealthy, a
//! template that backend does not report, no room on that agent.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use berth_api::wire::*;
use berth_store::{NewAuditEntry, NewInstance, StoreError};

use crate::auth::{Authed, Caller, Json};
use crate::problem::{ApiError, ApiResult};
use crate::routes::catalog::{Need, require_room};
use crate::routes::instances::{check_age_recipient, core_invalid, idempotent, record, ssh_key};
use crate::routes::offerings::validate_offering;
use crate::views::InstanceRequest;
use crate::{AppState, now_ms};

/// The agent's heartbeat if it is live (within the heartbeat TTL).
async fn live_heartbeat(st: &AppState, agent: &berth_store::Agent) -> ApiResult<Option<Heartbeat>> {
    let ttl = st.cfg.agents.heartbeat_ttl_seconds as i64 * 1000;
    let status = st
        .store
        .agent_statuses(Some(&agent.provider_id))
        .await?
        .into_iter()
        .find(|s| s.agent_id == agent.id && now_ms() - s.seen_at <= ttl);
    Ok(status.and_then(|s| serde_json::from_value(s.report).ok()))
}

/// Where the machine goes: the agent (the caller's), its backend (named, or its only one),
/// checked live and healthy.
async fn placement(st: &AppState, caller: &Caller, req: &CreateInstance) -> ApiResult<(berth_store::Agent, String)> {
    let agent = match st.store.agent(&req.agent_id).await {
        Ok(a) if caller.manages_provider(&a.provider_id) => a,
        Ok(_) | Err(StoreError::NotFound(_)) => {
            return Err(ApiError::NotFound(format!("agent {:?}", req.agent_id)));
        }
        Err(e) => return Err(e.into()),
    };
    if agent.revoked_at.is_some() {
        return Err(ApiError::invalid(
            "agent_id",
            format!("agent {} was revoked", agent.name),
        ));
    }
    let Some(hb) = live_heartbeat(st, &agent).await? else {
        return Err(ApiError::conflict(
            "agent_offline",
            format!(
                "agent {} is not connected (no heartbeat within {} s); start it or pick another",
                agent.name, st.cfg.agents.heartbeat_ttl_seconds
            ),
        ));
    };
    let names: Vec<&str> = hb.backends.iter().map(|b| b.name.as_str()).collect();
    let backend = match &req.backend {
        Some(b) => hb.backends.iter().find(|x| &x.name == b).ok_or_else(|| {
            ApiError::invalid(
                "backend",
                format!(
                    "agent {} has no backend {b:?} (it has: {})",
                    agent.name,
                    names.join(", ")
                ),
            )
        })?,
        None => match hb.backends.as_slice() {
            [only] => only,
            _ => {
                return Err(ApiError::invalid(
                    "backend",
                    format!(
                        "agent {} has several backends; name one of: {}",
                        agent.name,
                        names.join(", ")
                    ),
                ));
            }
        },
    };
    if !backend.healthy {
        return Err(ApiError::conflict(
            "backend_unhealthy",
            format!(
                "backend {} of agent {} is unhealthy: {}",
                backend.name,
                agent.name,
                backend.detail.as_deref().unwrap_or("no detail")
            ),
        ));
    }
    if let Some(t) = &req.template {
        let reported = st.store.templates(Some(&agent.id), None).await?;
        if !reported
            .iter()
            .any(|r| r.backend == backend.name && &r.template_id == t)
        {
            return Err(ApiError::invalid(
                "template",
                format!(
                    "backend {} of agent {} does not report template {t:?} (any more); pick one it lists",
                    backend.name, agent.name
                ),
            ));
        }
    }
    Ok((agent.clone(), backend.name.clone()))
}

/// A provider may place machines only for its own customers (those with an instance of it);
/// operators for any. Unknown and not-yours are refused alike.
async fn check_customer(st: &AppState, caller: &Caller, provider_id: &str, customer: &str) -> ApiResult<()> {
    let known = match st.store.customer(customer).await {
        Ok(_) => true,
        Err(StoreError::NotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let theirs = known
        && (matches!(caller, Caller::Operator)
            || !st
                .store
                .instances(
                    &berth_store::InstanceFilter {
                        provider_id: Some(provider_id.to_owned()),
                        customer_id: Some(customer.to_owned()),
                        ..Default::default()
                    },
                    &berth_store::Page::first(1),
                )
                .await?
                .is_empty());
    if theirs {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "customer_id",
            format!("no customer {customer:?} of yours (a customer who has ordered from you)"),
        ))
    }
}

#[utoipa::path(post, path = "/api/v1/instances", tag = "instances", request_body = CreateInstance,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retried request safe")),
    responses((status = 202, body = Accepted), (status = "4XX", body = Problem)))]
pub async fn create_instance(
    State(st): State<AppState>,
    headers: HeaderMap,
    req: Authed<Json<CreateInstance>>,
) -> ApiResult<Response> {
    req.caller.provider_scope()?;
    if matches!(req.caller, Caller::Agent { .. }) {
        return Err(ApiError::Forbidden("agents do not place machines".into()));
    }
    let body = req.body.get()?;
    let scope = format!("{}:instances", req.caller.actor());
    let caller = req.caller;
    let who = caller.clone();
    let st2 = st.clone();
    let fingerprinted = body.clone();
    idempotent(&st, &who, &headers, scope, &fingerprinted, async move {
        let st = st2;
        berth_core::spec::validate_dns_name("name", &body.name).map_err(core_invalid)?;
        // The sizes, template and commands as an offering's; the name is a host name (above).
        validate_offering(&OfferingSpec {
            name: "placed".into(),
            cores: body.cores,
            memory_mib: body.memory_mib,
            disk_gib: body.disk_gib,
            bandwidth_mbps: None,
            template: body.template.clone(),
            price: None,
            region: None,
            labels: Default::default(),
            post_provision_commands: body.post_provision_commands.clone(),
        })?;
        let key = ssh_key("ssh_public_key", &body.ssh_public_key)?;
        if let Some(k) = &body.requester_public_key {
            check_age_recipient("requester_public_key", k)?;
        }
        let (agent, backend) = placement(&st, &caller, &body).await?;
        if let Some(c) = &body.customer_id {
            check_customer(&st, &caller, &agent.provider_id, c).await?;
        }
        let request = InstanceRequest {
            name: body.name.clone(),
            cores: body.cores,
            memory_mib: body.memory_mib,
            disk_gib: body.disk_gib,
            bandwidth_mbps: None,
            template: body.template.clone(),
            ssh_public_key: key.as_str().to_owned(),
            requester_public_key: body.requester_public_key.clone().unwrap_or_default(),
            skip_post_provision: body.skip_post_provision,
            post_provision_commands: body.post_provision_commands.clone(),
            backend: Some(backend.clone()),
        };
        if body.provision {
            require_room(&st, &agent.provider_id, Some(&agent.id), Need::from(&request), "this machine").await?;
        }
        let new = NewInstance {
            provider_id: agent.provider_id.clone(),
            customer_id: body.customer_id.clone(),
            offering_id: None,
            agent_id: Some(agent.id.clone()),
            status: if body.provision { "provisioning" } else { "pending" }.into(),
            request: serde_json::Value::Null,
            quota: Some(
                crate::routes::quotas::instance_quota(&st, &agent.provider_id, body.customer_id.as_deref()).await?,
            ),
        };
        let audit = NewAuditEntry {
            actor: caller.actor(),
            action: "instance.created".into(),
            subject: String::new(),
            detail: serde_json::json!({"agent_id": agent.id, "backend": backend, "name": body.name, "customer_id": body.customer_id}),
        };
        record(&st, new, request, body.provision, audit).await
    })
    .await
}
