//! Actions on an instance (provision, start, stop, reboot, terminate, reconfigure): the
//! status an action needs, room for what grows, and one operation queued per action, made safe to
//! retry by `Idempotency-Key`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use berth_api::wire::*;
use berth_store::{InstanceAction, NewAuditEntry};

use crate::auth::{Authed, Caller, Empty, Json};
use crate::problem::{ApiError, ApiResult};
use crate::routes::catalog::{Need, require_room};
use crate::routes::instances::{idempotent, visible_instance};
use crate::routes::offerings::{MAX_DISK_GIB, MAX_MEMORY_MIB};
use crate::views::{provision_payload, request_of};
use crate::{AppState, now_ms};

/// Which statuses an action needs, and the status it moves the instance to when queued.
pub fn rule(action: &str) -> Option<(&'static [&'static str], Option<&'static str>)> {
    Some(match action {
        "provision" => (&["pending", "failed"], Some("provisioning")),
        "start" | "stop" => (&["running", "stopped"], None),
        "reboot" => (&["running"], None),
        "reconfigure" => (&["running", "stopped"], None),
        "terminate" => (
            &["pending", "provisioning", "running", "stopped", "failed"],
            Some("terminating"),
        ),
        _ => return None,
    })
}

async fn act(
    st: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
    payload: serde_json::Value,
) -> ApiResult<Accepted> {
    caller.require_authenticated()?;
    if matches!(caller, Caller::Agent { .. }) {
        return Err(ApiError::Forbidden("agents do not order actions".into()));
    }
    let (allowed, new_status) = rule(action).ok_or_else(|| {
        ApiError::NotFound(format!(
            "action {action:?} (provision, start, stop, reboot, reconfigure, terminate)"
        ))
    })?;
    let i = visible_instance(st, caller, id).await?;
    // Asked for what already is (as `qm stop` of a stopped VM): done, nothing queued.
    if matches!(
        (action, i.status.as_str()),
        ("terminate", "terminated") | ("stop", "stopped") | ("start", "running")
    ) {
        return Ok(Accepted {
            instance_id: i.id,
            operation_id: None,
        });
    }
    // The status first: an action the instance cannot take now is `wrong_status`, whatever the
    // room (the store checks again in its transaction).
    if !allowed.contains(&i.status.as_str()) {
        return Err(ApiError::conflict(
            "wrong_status",
            format!(
                "instance {} is {}; {action} needs it to be {}",
                i.id,
                i.status,
                allowed.join(" or ")
            ),
        ));
    }
    if let Some(a) = &i.agent_id
        && st.store.agent(a).await?.revoked_at.is_some()
    {
        return Err(ApiError::conflict(
            "agent_revoked",
            format!(
                "instance {} runs on agent {a}, which was revoked: no agent can act on it any more",
                i.id
            ),
        ));
    }
    let payload = if action == "provision" {
        // Provisioning later needs what an order needs: an offering still on sale (placed
        // instances have none), and room (on their agent, when placed).
        if let Some(o) = &i.offering_id
            && st.store.offering(o).await?.withdrawn_at.is_some()
        {
            return Err(ApiError::conflict(
                "offering_withdrawn",
                "the offering was withdrawn; order another one",
            ));
        }
        let need = Need::from(&request_of(&i)?);
        require_room(st, &i.provider_id, i.agent_id.as_deref(), need, "this instance").await?;
        serde_json::to_value(provision_payload(&i)?).map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        payload
    };
    let op = st
        .store
        .act_on_instance(
            InstanceAction {
                instance_id: i.id.clone(),
                allowed: allowed.iter().map(|s| s.to_string()).collect(),
                new_status: new_status.map(str::to_owned),
                kind: action.into(),
                payload: payload.clone(),
                audit: NewAuditEntry {
                    actor: caller.actor(),
                    action: format!("instance.{action}"),
                    subject: format!("instance:{}", i.id),
                    detail: serde_json::json!({"payload": payload}),
                },
            },
            now_ms(),
        )
        .await
        .map_err(|e| match e {
            berth_store::StoreError::Conflict(m) => ApiError::conflict("wrong_status", m),
            other => other.into(),
        })?;
    Ok(Accepted {
        instance_id: i.id,
        operation_id: Some(op.id),
    })
}

#[utoipa::path(post, path = "/api/v1/instances/{id}/{action}", tag = "instances",
    params(("id" = String, Path), ("action" = String, Path, description = "provision, start, stop, reboot or terminate"),
        ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, body = Accepted), (status = "4XX", body = Problem)))]
pub async fn instance_action(
    State(st): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    req: Authed<Empty>,
) -> ApiResult<Response> {
    if action == "reconfigure" {
        return Err(ApiError::invalid(
            "body",
            "reconfigure takes a body: {\"cores\", \"memory_mib\", \"disk_gib\"}",
        ));
    }
    let scope = format!("{}:instances/{id}/{action}", req.caller.actor());
    let st2 = st.clone();
    let who = req.caller.clone();
    idempotent(&st, &who, &headers, scope, &(), async move {
        act(&st2, &req.caller, &id, &action, serde_json::json!({})).await
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/instances/{id}/reconfigure", tag = "instances",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)), request_body = Reconfigure,
    responses((status = 202, body = Accepted), (status = "4XX", body = Problem)))]
pub async fn reconfigure(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: Authed<Json<Reconfigure>>,
) -> ApiResult<Response> {
    let i = visible_instance(&st, &req.caller, &id).await?;
    if matches!(req.caller, Caller::Agent { .. }) {
        return Err(ApiError::Forbidden("agents do not order actions".into()));
    }
    let change = req.body.get()?;
    if change == Reconfigure::default() {
        return Err(ApiError::invalid(
            "body",
            "name at least one of cores, memory_mib, disk_gib",
        ));
    }
    if change
        .cores
        .is_some_and(|c| c == 0 || c > berth_core::VmSpec::MAX_CORES)
    {
        return Err(ApiError::invalid("cores", "must be 1-8192"));
    }
    if change
        .memory_mib
        .is_some_and(|m| !(berth_core::VmSpec::MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&m))
    {
        return Err(ApiError::invalid("memory_mib", "must be 16 MiB to 16 TiB"));
    }
    if change.disk_gib.is_some_and(|d| !(1..=MAX_DISK_GIB).contains(&d)) {
        return Err(ApiError::invalid("disk_gib", "must be 1-1048576 GiB"));
    }
    // The status, then whether the machine's backend can change a size at all, then room.
    let (allowed, _) = rule("reconfigure").expect("a known action");
    if !allowed.contains(&i.status.as_str()) {
        return Err(ApiError::conflict(
            "wrong_status",
            format!(
                "instance {} is {}; reconfigure needs it to be {}",
                i.id,
                i.status,
                allowed.join(" or ")
            ),
        ));
    }
    // The agent the machine runs on: the one that built it, else the one it was placed on.
    if let Some(a) = crate::views::state_of(&i)?.agent_id.or_else(|| i.agent_id.clone()) {
        can_reconfigure(&st, &i.provider_id, &a, request_of(&i)?.backend.as_deref()).await?;
    }
    // Growing needs room on the provider's hosts, as an order does.
    let r = request_of(&i)?;
    let grow = Need {
        cores: u64::from(change.cores.unwrap_or(r.cores).saturating_sub(r.cores)),
        memory_mib: change.memory_mib.unwrap_or(r.memory_mib).saturating_sub(r.memory_mib),
        disk_gib: change.disk_gib.unwrap_or(r.disk_gib).saturating_sub(r.disk_gib),
    };
    if grow
        != (Need {
            cores: 0,
            memory_mib: 0,
            disk_gib: 0,
        })
    {
        require_room(&st, &i.provider_id, i.agent_id.as_deref(), grow, "this growth").await?;
    }
    if let Some(d) = change.disk_gib
        && d < r.disk_gib
    {
        // Valid input, but not for this machine: a conflict with its state, like a wrong status.
        return Err(ApiError::conflict(
            "disk_shrink",
            format!("disk_gib: disks only grow; this one has {} GiB (got {d})", r.disk_gib),
        ));
    }
    let scope = format!("{}:instances/{id}/reconfigure", req.caller.actor());
    let payload = serde_json::to_value(&change).map_err(|e| ApiError::Internal(e.to_string()))?;
    let st2 = st.clone();
    let who = req.caller.clone();
    idempotent(&st, &who, &headers, scope, &change, async move {
        act(&st2, &req.caller, &id, "reconfigure", payload).await
    })
    .await
}

/// Refuses (`409 reconfigure_unsupported`) a change of size the machine's backend cannot make,
/// by what the agent's last heartbeat said: the named `backend` when the instance was placed on
/// one, else every backend of the agent (an agent that did not say is let through: the agent
/// refuses then).
async fn can_reconfigure(st: &AppState, provider_id: &str, agent_id: &str, backend: Option<&str>) -> ApiResult<()> {
    let Some(status) = st
        .store
        .agent_statuses(Some(provider_id))
        .await?
        .into_iter()
        .find(|s| s.agent_id == agent_id)
    else {
        return Ok(());
    };
    let Ok(hb) = serde_json::from_value::<Heartbeat>(status.report) else {
        return Ok(());
    };
    let candidates: Vec<&BackendHealth> = hb
        .backends
        .iter()
        .filter(|b| backend.is_none_or(|n| b.name == n))
        .collect();
    if !candidates.is_empty() && candidates.iter().all(|b| b.reconfigure == Some(false)) {
        let kinds: Vec<&str> = candidates.iter().map(|b| b.kind.as_str()).collect();
        return Err(ApiError::conflict(
            "reconfigure_unsupported",
            format!(
                "the backend this instance runs on ({}) cannot change a machine's size",
                kinds.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_rules() {
        assert_eq!(
            rule("provision"),
            Some((&["pending", "failed"][..], Some("provisioning")))
        );
        assert!(rule("reboot").unwrap().0 == ["running"]);
        assert!(!rule("terminate").unwrap().0.contains(&"terminated"));
        assert!(!rule("terminate").unwrap().0.contains(&"terminating"));
        assert_eq!(rule("explode"), None);
    }
}
