//! Orders and instances. An order (contract) becomes an instance record and, unless asked not
//! to, a `provision` operation for an agent of the offering's provider, in one transaction.
//! Instance actions queue operations when the instance's status allows them (one table,
//! [`rule`]); every mutation answers `202 Accepted` with the operation id. `Idempotency-Key`
//! makes retried POSTs safe. Also the seed's pending-provision endpoint.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_api::wire::*;
use berth_store::{Idempotency, InstanceFilter, NewAuditEntry, NewInstance};
use sha2::{Digest as _, Sha256};

use crate::auth::{Authed, Caller, Json};
use crate::paging::{PageQuery, no_query, paged};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::routes::catalog::{Need, require_room};
use crate::routes::offerings::offering_view;
use crate::views::{InstanceRequest, instance_view, payload_of, provision_payload, request_of};
use crate::{AppState, now_ms};

pub(crate) fn accepted(a: Accepted) -> Response {
    let mut resp = (StatusCode::ACCEPTED, axum::Json(&a)).into_response();
    if let Some(op) = &a.operation_id
        && let Ok(v) = axum::http::HeaderValue::try_from(format!("/api/v1/operations/{op}"))
    {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    resp
}

/// Runs `f` at most once per `Idempotency-Key` (per caller and route): a retry with the same
/// key and body replays the first answer; the same key with another body is refused.
pub(crate) async fn idempotent<F>(
    st: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    scope: String,
    body: &impl serde::Serialize,
    f: F,
) -> ApiResult<Response>
where
    F: std::future::Future<Output = ApiResult<Accepted>>,
{
    // Who is calling comes before what the headers hold.
    caller.require_authenticated()?;
    let Some(key) = headers.get("idempotency-key") else {
        return f.await.map(accepted);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::invalid("Idempotency-Key", "must be 1-255 visible ASCII characters"))?;
    let fingerprint = hex::encode(Sha256::digest(serde_json::to_vec(body).unwrap_or_default()));
    match st.store.idempotency_begin(&scope, key, &fingerprint, now_ms()).await? {
        Idempotency::New => match f.await {
            Ok(a) => {
                let v = serde_json::to_value(&a).map_err(|e| ApiError::Internal(e.to_string()))?;
                st.store.idempotency_end(&scope, key, Some((202, v))).await?;
                Ok(accepted(a))
            }
            Err(e) => {
                st.store.idempotency_end(&scope, key, None).await?;
                Err(e)
            }
        },
        Idempotency::InProgress => Err(ApiError::conflict(
            "busy",
            "a request with this Idempotency-Key is still running",
        )),
        Idempotency::Mismatch => Err(ApiError::invalid(
            "Idempotency-Key",
            "was already used for a different request",
        )),
        Idempotency::Done(_, v) => {
            let a: Accepted = serde_json::from_value(v).map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(accepted(a))
        }
    }
}

/// An age X25519 recipient: `age1` and 58 bech32 characters.
pub(crate) fn check_age_recipient(field: &str, s: &str) -> ApiResult<()> {
    const BECH32: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    if s.len() == 62 && s.starts_with("age1") && s[4..].chars().all(|c| BECH32.contains(c)) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            "must be an age X25519 recipient (`age1…`, 62 characters; `age-keygen -y` prints it)",
        ))
    }
}

/// An SSH public key field: one OpenSSH public key line.
pub(crate) fn ssh_key(field: &str, s: &str) -> ApiResult<berth_core::SshPublicKey> {
    berth_core::SshPublicKey::parse(s).map_err(|e| match e {
        berth_core::ProviderError::InvalidSpec { reason, .. } => ApiError::invalid(field, reason),
        other => core_invalid(other),
    })
}

pub(crate) fn core_invalid(e: berth_core::ProviderError) -> ApiError {
    match e {
        berth_core::ProviderError::InvalidSpec { field, reason } => ApiError::invalid(field, reason),
        other => ApiError::invalid("body", other.to_string()),
    }
}

#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retried order safe")),
    responses((status = 202, body = Accepted), (status = "4XX", body = Problem)))]
pub async fn create_order(
    State(st): State<AppState>,
    headers: HeaderMap,
    req: Authed<Json<CreateOrder>>,
) -> ApiResult<Response> {
    let customer = req.caller.require_customer()?.to_owned();
    let order = req.body.get()?;
    let scope = format!("{}:orders", req.caller.actor());
    let actor = req.caller.actor();
    let st2 = st.clone();
    let fingerprinted = order.clone();
    idempotent(&st, &req.caller, &headers, scope, &fingerprinted, async move {
        let st = st2;
        berth_core::spec::validate_dns_name("name", &order.name).map_err(core_invalid)?;
        let key = ssh_key("ssh_public_key", &order.ssh_public_key)?;
        if let Some(k) = &order.requester_public_key {
            check_age_recipient("requester_public_key", k)?;
        }
        let offering = match st.store.offering(&order.offering_id).await {
            Ok(o) if o.withdrawn_at.is_none() => o,
            Ok(_) => {
                return Err(ApiError::conflict(
                    "offering_withdrawn",
                    format!(
                        "offering {} was withdrawn by its provider and can no longer be ordered",
                        order.offering_id
                    ),
                ));
            }
            Err(berth_store::StoreError::NotFound(_)) => {
                return Err(ApiError::NotFound(format!("offering {:?}", order.offering_id)));
            }
            Err(e) => return Err(e.into()),
        };
        let spec = offering_view(&offering)?.spec;
        if order.provision {
            require_room(&st, &offering.provider_id, None, Need::from(&spec), "this offering").await?;
        }
        let request = InstanceRequest {
            name: order.name.clone(),
            cores: spec.cores,
            memory_mib: spec.memory_mib,
            disk_gib: spec.disk_gib,
            bandwidth_mbps: spec.bandwidth_mbps,
            template: spec.template.clone(),
            ssh_public_key: key.as_str().to_owned(),
            requester_public_key: order.requester_public_key.clone().unwrap_or_default(),
            skip_post_provision: order.skip_post_provision,
            post_provision_commands: spec.post_provision_commands.clone(),
            backend: None,
        };
        let new = NewInstance {
            provider_id: offering.provider_id.clone(),
            quota: Some(crate::routes::quotas::instance_quota(&st, &offering.provider_id, Some(&customer)).await?),
            customer_id: Some(customer),
            offering_id: Some(offering.id.clone()),
            agent_id: None,
            status: if order.provision { "provisioning" } else { "pending" }.into(),
            request: serde_json::Value::Null,
        };
        let audit = NewAuditEntry {
            actor,
            action: "order.created".into(),
            subject: String::new(),
            detail: serde_json::json!({"offering_id": offering.id, "name": order.name}),
        };
        record(&st, new, request, order.provision, audit).await
    })
    .await
}

/// Records `new` with its `request` and, when `provision`, queues its provision, in one
/// transaction with `audit`.
pub(crate) async fn record(
    st: &AppState,
    mut new: NewInstance,
    request: InstanceRequest,
    provision: bool,
    audit: NewAuditEntry,
) -> ApiResult<Accepted> {
    new.request = serde_json::to_value(&request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let first = if provision {
        // The store fills in the instance id it makes.
        let payload = payload_of("", request);
        Some((
            "provision".to_owned(),
            serde_json::to_value(payload).map_err(|e| ApiError::Internal(e.to_string()))?,
        ))
    } else {
        None
    };
    let (instance, op) = st
        .store
        .create_instance(new, first, audit, now_ms())
        .await
        .map_err(crate::routes::quotas::exceeded)?;
    Ok(Accepted {
        instance_id: instance.id,
        operation_id: op.map(|o| o.id),
    })
}

/// Which instances, and which page of them.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceQuery {
    /// Only instances in this status (`pending`, `provisioning`, `running`, `stopped`, `failed`,
    /// `terminating`, `terminated`…).
    #[param(max_length = 32)]
    pub status: Option<String>,
    /// The id of the last instance of the previous page.
    #[param(max_length = 128)]
    pub after: Option<String>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", params(InstanceQuery),
    responses((status = 200, body = [InstanceView], description = "a page of the instances the caller may see, oldest first; `Link: rel=\"next\"` names the next page"),
        (status = "4XX", body = Problem)))]
pub async fn list_instances(
    State(st): State<AppState>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    req.caller.require_authenticated()?;
    let q: InstanceQuery = parse_query(q.as_deref())?;
    let page = crate::paging::page(q.after.as_deref(), q.limit)?;
    let mut filter = match &req.caller {
        Caller::Customer(c) => InstanceFilter {
            customer_id: Some(c.clone()),
            ..Default::default()
        },
        Caller::Provider(p) | Caller::Agent { provider_id: p, .. } => InstanceFilter {
            provider_id: Some(p.clone()),
            ..Default::default()
        },
        _ => InstanceFilter::default(),
    };
    if let Some(s) = &q.status
        && !((1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    {
        return Err(ApiError::invalid("status", "must be a status like running or pending"));
    }
    filter.status = q.status;
    let all = st.store.instances(&filter, &page).await?;
    let views: Vec<InstanceView> = all.iter().map(instance_view).collect::<ApiResult<_>>()?;
    Ok(paged(&uri, &page, all.len(), all.last().map(|i| i.id.as_str()), views))
}

/// An instance the caller may see, or NotFound.
pub async fn visible_instance(st: &AppState, caller: &Caller, id: &str) -> ApiResult<berth_store::InstanceRecord> {
    caller.require_authenticated()?;
    let i = st.store.instance(id).await?;
    if !caller.sees_instance(&i) {
        return Err(ApiError::NotFound(format!("instance {id}")));
    }
    Ok(i)
}

#[utoipa::path(get, path = "/api/v1/instances/{id}", tag = "instances", params(("id" = String, Path)),
    responses((status = 200, body = InstanceView), (status = "4XX", body = Problem)))]
pub async fn get_instance(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<InstanceView>> {
    let i = visible_instance(&st, &req.caller, &id).await?;
    no_query(q.as_deref())?;
    Ok(axum::Json(instance_view(&i)?))
}

#[utoipa::path(get, path = "/api/v1/instances/{id}/operations", tag = "instances", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = [OperationView], description = "a page of the instance's operations, oldest first, with their stages"),
        (status = "4XX", body = Problem)))]
pub async fn instance_operations(
    State(st): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    let i = visible_instance(&st, &req.caller, &id).await?;
    let page = parse_query::<PageQuery>(q.as_deref())?.page()?;
    let ops = st.store.instance_operations(&i.id, &page).await?;
    let mut out = Vec::with_capacity(ops.len());
    for op in &ops {
        let events = st.store.events(&op.id, 0).await?;
        out.push(crate::views::operation_view(op, &events)?);
    }
    Ok(paged(&uri, &page, ops.len(), ops.last().map(|o| o.id.as_str()), out))
}

/// The seed's public key form: 64 hex characters (also accepted: unpadded base64url).
fn key_from_path(s: &str) -> ApiResult<String> {
    let raw = if s.len() == 64 {
        hex::decode(s).ok()
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
    };
    match raw {
        Some(b) if b.len() == 32 => Ok(base64::engine::general_purpose::STANDARD.encode(b)),
        _ => Err(ApiError::invalid(
            "pubkey",
            "must be the agent's Ed25519 public key: 64 hex characters",
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/providers/{pubkey}/contracts/pending-provision", tag = "agents",
    params(("pubkey" = String, Path, description = "an enrolled agent's Ed25519 public key, hex"), PageQuery),
    responses((status = 200, body = [PendingContract]), (status = "4XX", body = Problem)))]
pub async fn pending_provision(
    State(st): State<AppState>,
    Path(pubkey): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    req.caller.provider_scope()?;
    let page = parse_query::<PageQuery>(q.as_deref())?.page()?;
    let key = key_from_path(&pubkey)?;
    let agent = match st.store.agent_by_key(&key).await {
        Ok(a) if a.revoked_at.is_none() => a,
        Ok(_) | Err(berth_store::StoreError::NotFound(_)) => {
            return Err(ApiError::NotFound("provider with this key".into()));
        }
        Err(e) => return Err(e.into()),
    };
    if !req.caller.manages_provider(&agent.provider_id) {
        return Err(ApiError::NotFound("provider with this key".into()));
    }
    let pending = st
        .store
        .instances(
            &InstanceFilter {
                provider_id: Some(agent.provider_id.clone()),
                status: Some("provisioning".into()),
                ..Default::default()
            },
            &page,
        )
        .await?;
    let mut out = Vec::with_capacity(pending.len());
    for i in &pending {
        let r = request_of(i)?;
        out.push(PendingContract {
            contract_id: i.id.clone(),
            offering: SeedOffering {
                // Placed instances have no offering: the seed's shape needs an id.
                id: i.offering_id.clone().unwrap_or_default(),
                cpu_cores: r.cores,
                memory_gb: r.memory_mib as f64 / 1024.0,
                storage_gb: r.disk_gib,
                bandwidth_mbps: r.bandwidth_mbps,
            },
            requester_ssh_pubkey: r.ssh_public_key.clone(),
            instance_config: serde_json::to_value(provision_payload(i)?)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        });
    }
    Ok(paged(
        &uri,
        &page,
        pending.len(),
        pending.last().map(|i| i.id.as_str()),
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_recipients_and_path_keys() {
        check_age_recipient("k", "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p").unwrap();
        assert!(check_age_recipient("k", "age1short").is_err());
        assert!(check_age_recipient("k", "ssh-ed25519 AAAA").is_err());
        let hex = "11".repeat(32);
        assert_eq!(
            key_from_path(&hex).unwrap(),
            base64::engine::general_purpose::STANDARD.encode([0x11u8; 32])
        );
        assert!(key_from_path("zz").is_err());
    }
}
