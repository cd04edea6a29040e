//! What a provider lets its customers hold of its instances: numbers for one customer (one it
//! has served: it has or had an instance of the provider), or (`default`) for every customer, on
//! top of each customer's own quota. Set and listed by the provider (and operators); a customer
//! reads what is in force for itself.

use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;
use axum::response::Response;
use berth_api::wire::*;
use berth_store::{CustomerQuota, EVERY_CUSTOMER, NewAuditEntry, StoreError};

use crate::auth::{Authed, Caller, Json};
use crate::paging::{PageQuery, paged};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::{AppState, now_ms};

/// What `provider_id` lets `customer_id` hold: the customer's own numbers, each one not set
/// taken from the provider's default.
pub async fn in_force(st: &AppState, provider_id: &str, customer_id: &str) -> ApiResult<CustomerQuota> {
    let own = st.store.customer_quota(provider_id, customer_id).await?;
    if customer_id == EVERY_CUSTOMER {
        return Ok(own);
    }
    Ok(own.or(st.store.customer_quota(provider_id, EVERY_CUSTOMER).await?))
}

fn view(provider_id: &str, customer_id: &str, q: CustomerQuota) -> CustomerQuotaView {
    CustomerQuotaView {
        provider_id: provider_id.to_owned(),
        customer_id: customer_id.to_owned(),
        instances: q.instances,
        pending_instances: q.pending_instances,
    }
}

/// Whether `caller` sets `provider_id`'s numbers: the provider itself, or an operator.
fn sets_for(caller: &Caller, provider_id: &str) -> ApiResult<()> {
    caller.require_authenticated()?;
    match caller {
        Caller::Operator => Ok(()),
        Caller::Provider(p) if p == provider_id => Ok(()),
        Caller::Provider(_) => Err(ApiError::NotFound(format!("provider {provider_id}"))),
        _ => Err(ApiError::Forbidden(
            "only the provider and operators set what its customers may hold".into(),
        )),
    }
}

/// A provider that exists (operators may name any).
async fn known_provider(st: &AppState, provider_id: &str) -> ApiResult<()> {
    st.store.provider(provider_id).await?;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/providers/{id}/customer-quotas", tag = "accounts",
    params(("id" = String, Path, description = "a provider id"), PageQuery),
    responses((status = 200, body = [CustomerQuotaView], description = "what the provider set, by customer id (`default` among them)"),
        (status = "4XX", body = Problem)))]
pub async fn list(
    State(st): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    sets_for(&req.caller, &id)?;
    let page = parse_query::<PageQuery>(q.as_deref())?.page()?;
    known_provider(&st, &id).await?;
    let rows = st.store.customer_quotas(&id, &page).await?;
    let last = rows.last().map(|(c, _)| c.clone());
    let n = rows.len();
    let views = rows.into_iter().map(|(c, q)| view(&id, &c, q)).collect();
    Ok(paged(&uri, &page, n, last.as_deref(), views))
}

#[utoipa::path(get, path = "/api/v1/providers/{id}/customer-quotas/{customer}", tag = "accounts",
    params(("id" = String, Path, description = "a provider id"), ("customer" = String, Path, description = "a customer id, or `default`")),
    responses((status = 200, body = CustomerQuotaView, description = "what is in force for the customer: the provider, operators and the customer itself may read it"),
        (status = "4XX", body = Problem)))]
pub async fn get(
    State(st): State<AppState>,
    Path((id, customer)): Path<(String, String)>,
    req: Authed,
) -> ApiResult<axum::Json<CustomerQuotaView>> {
    req.caller.require_authenticated()?;
    let allowed = match &req.caller {
        Caller::Customer(c) => *c == customer,
        other => sets_for(other, &id).is_ok(),
    };
    if !allowed {
        // Agents may never call this; anyone else asked about what is not theirs.
        if matches!(req.caller, Caller::Agent { .. } | Caller::Enrolling(_)) {
            return Err(ApiError::Forbidden(
                "agents have no business with customers' quotas".into(),
            ));
        }
        return Err(ApiError::NotFound(format!(
            "customer quota {customer} of provider {id}"
        )));
    }
    known_provider(&st, &id).await?;
    Ok(axum::Json(view(&id, &customer, in_force(&st, &id, &customer).await?)))
}

#[utoipa::path(put, path = "/api/v1/providers/{id}/customer-quotas/{customer}", tag = "accounts",
    params(("id" = String, Path, description = "a provider id"), ("customer" = String, Path, description = "a customer id, or `default`")),
    request_body = SetCustomerQuota,
    responses((status = 200, body = CustomerQuotaView, description = "what was set"), (status = "4XX", body = Problem)))]
pub async fn set(
    State(st): State<AppState>,
    Path((id, customer)): Path<(String, String)>,
    req: Authed<Json<SetCustomerQuota>>,
) -> ApiResult<axum::Json<CustomerQuotaView>> {
    sets_for(&req.caller, &id)?;
    let q = req.body.get()?;
    // A provider names only customers it has served: whether another id is a customer is not
    // its to learn (the answer is the same 404 as for no customer at all).
    if matches!(req.caller, Caller::Provider(_)) && customer != EVERY_CUSTOMER {
        let filter = berth_store::InstanceFilter {
            provider_id: Some(id.clone()),
            customer_id: Some(customer.clone()),
            status: None,
        };
        if st
            .store
            .instances(&filter, &berth_store::Page::first(1))
            .await?
            .is_empty()
        {
            return Err(ApiError::NotFound(format!("customer {customer}")));
        }
    }
    super::quotas::in_range(&[("instances", q.instances), ("pending_instances", q.pending_instances)])?;
    let quota = CustomerQuota {
        instances: q.instances,
        pending_instances: q.pending_instances,
    };
    let audit = NewAuditEntry {
        actor: req.caller.actor(),
        action: "customer_quota.set".into(),
        subject: format!("provider:{id}"),
        detail: serde_json::json!({"customer_id": customer, "instances": q.instances, "pending_instances": q.pending_instances}),
    };
    match st
        .store
        .set_customer_quota(&id, &customer, quota, audit, now_ms())
        .await
    {
        Ok(q) => Ok(axum::Json(view(&id, &customer, q))),
        Err(StoreError::NotFound(what)) => Err(ApiError::NotFound(what)),
        Err(e) => Err(e.into()),
    }
}
