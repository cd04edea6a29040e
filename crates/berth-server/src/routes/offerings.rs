//! Offerings and discovery. Providers publish, change and withdraw offerings; discovery answers
//! customers with only the offerings that can be ordered now (see [`crate::routes::catalog`]).

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use berth_api::wire::*;
use berth_store::{NewAuditEntry, Offering};
use serde::Deserialize;

use crate::auth::{Authed, Caller, Json};
use crate::config::Admission;
use crate::paging::{no_query, paged};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::routes::catalog::{Live, Need, fits};
use crate::{AppState, now_ms};

/// 16 TiB.
pub(crate) const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;
pub(crate) const MAX_DISK_GIB: u64 = 1 << 20;
/// In minor units: a billion in major ones.
const MAX_PRICE: u64 = 100_000_000_000;

pub fn validate_offering(s: &OfferingSpec) -> ApiResult<()> {
    let inv = |f: &str, r: String| Err(ApiError::invalid(f, r));
    if let Err(why) = berth_core::text::check_name(&s.name, 128) {
        return inv("name", why);
    }
    if s.cores == 0 || s.cores > berth_core::VmSpec::MAX_CORES {
        return inv(
            "cores",
            format!("must be 1-{} (got {})", berth_core::VmSpec::MAX_CORES, s.cores),
        );
    }
    if !(berth_core::VmSpec::MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&s.memory_mib) {
        return inv(
            "memory_mib",
            format!("must be 16-{MAX_MEMORY_MIB} MiB (got {})", s.memory_mib),
        );
    }
    if let Some(b) = s.bandwidth_mbps
        && !(1..=1_000_000).contains(&b)
    {
        return inv("bandwidth_mbps", format!("must be 1-1000000 Mbit/s (got {b})"));
    }
    if s.disk_gib == 0 || s.disk_gib > MAX_DISK_GIB {
        return inv("disk_gib", format!("must be 1-1048576 GiB (got {})", s.disk_gib));
    }
    if let Some(t) = &s.template
        && (t.is_empty() || t.chars().count() > 256 || t.chars().any(char::is_control))
    {
        return inv("template", "must be 1-256 printable characters".into());
    }
    if let Some(p) = &s.price
        && p.amount > MAX_PRICE
    {
        return inv(
            "price.amount",
            format!("must be at most {MAX_PRICE} (minor units; got {})", p.amount),
        );
    }
    if let Some(p) = &s.price
        && (p.currency.len() != 3 || !p.currency.chars().all(|c| c.is_ascii_uppercase()))
    {
        return inv(
            "price.currency",
            format!("must be an ISO 4217 code like EUR (got {:?})", p.currency),
        );
    }
    if let Some(r) = &s.region
        && !label_like(r)
    {
        return inv("region", format!("must be 1-63 of a-z 0-9 . _ - (got {r:?})"));
    }
    if s.labels.len() > 32 {
        return inv("labels", format!("at most 32 labels (got {})", s.labels.len()));
    }
    for (k, v) in &s.labels {
        if !label_like(k) || v.chars().count() > 256 || v.chars().any(char::is_control) {
            return inv(
                &format!("labels.{k}"),
                "keys are 1-63 of a-z 0-9 . _ -; values up to 256 characters without control characters".into(),
            );
        }
    }
    if s.post_provision_commands.len() > 64 {
        return inv("post_provision_commands", "at most 64 commands".into());
    }
    for (i, c) in s.post_provision_commands.iter().enumerate() {
        if c.trim().is_empty() || c.chars().count() > 4096 || c.contains('\0') {
            return inv(
                &format!("post_provision_commands[{i}]"),
                "must be 1-4096 characters, not only spaces, no NUL".into(),
            );
        }
    }
    Ok(())
}

fn label_like(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

pub fn offering_view(o: &Offering) -> ApiResult<OfferingView> {
    let spec: OfferingSpec = serde_json::from_value(o.body.clone())
        .map_err(|e| ApiError::Internal(format!("stored offering does not parse: {e}")))?;
    Ok(OfferingView {
        id: o.id.clone(),
        provider_id: o.provider_id.clone(),
        spec,
        withdrawn_at: o.withdrawn_at,
        created_at: o.created_at,
        availability: None,
    })
}

/// A provider's agents as availability needs them, read once per request: their last
/// heartbeats and the templates they report.
struct Fleet {
    agents: Vec<berth_store::Agent>,
    statuses: Vec<berth_store::AgentStatus>,
    templates: Vec<berth_store::TemplateRecord>,
}

impl Fleet {
    async fn read(st: &AppState, provider_id: &str) -> ApiResult<Fleet> {
        Ok(Fleet {
            agents: st.store.agents(Some(provider_id), &berth_store::Page::all()).await?,
            statuses: st.store.agent_statuses(Some(provider_id)).await?,
            templates: st.store.templates(None, Some(provider_id)).await?,
        })
    }

    /// Why the offering can or cannot be ordered now, agent by agent, by the rule orders are
    /// admitted with ([`fits`] on a live agent's last heartbeat), and whether the agent
    /// reports the offering's template (an agent that reports none is not judged on it).
    fn availability(&self, st: &AppState, o: &Offering, spec: &OfferingSpec) -> Availability {
        let ttl = st.cfg.agents.heartbeat_ttl_seconds as i64 * 1000;
        let now = now_ms();
        let need = Need::from(spec);
        let adm = &st.cfg.admission;
        let mut agents = Vec::new();
        for a in &self.agents {
            let status = self.statuses.iter().find(|s| s.agent_id == a.id);
            let heartbeat = status.and_then(|s| serde_json::from_value::<Heartbeat>(s.report.clone()).ok());
            let reported: Vec<&str> = self
                .templates
                .iter()
                .filter(|t| t.agent_id == a.id)
                .map(|t| t.template_id.as_str())
                .collect();
            let lacks_template = spec
                .template
                .as_deref()
                .filter(|t| !reported.is_empty() && !reported.contains(t));
            let reason = match (a.revoked_at, status, &heartbeat) {
                (Some(t), _, _) => Some(format!("revoked at {}", berth_core::utc(t))),
                (None, None, _) | (None, Some(_), None) => Some("has not sent a heartbeat yet".to_owned()),
                (None, Some(s), Some(_)) if now - s.seen_at > ttl => {
                    Some(format!("offline: last heartbeat at {}", berth_core::utc(s.seen_at)))
                }
                _ if lacks_template.is_some() => Some(format!(
                    "does not report template {:?} (`berth template list` shows what it has)",
                    lacks_template.unwrap_or_default()
                )),
                (None, Some(_), Some(h)) if !fits(&h.capacity, adm, need) => Some(short_of(&h.capacity, adm, need)),
                _ => None,
            };
            agents.push(AgentAvailability {
                orderable: reason.is_none(),
                agent_id: a.id.clone(),
                name: a.name.clone(),
                reason,
            });
        }
        Availability {
            orderable: o.withdrawn_at.is_none() && agents.iter().any(|a| a.orderable),
            agents,
        }
    }
}

/// The offering as its provider (or an operator) sees it: with its availability.
async fn with_availability(st: &AppState, o: &Offering) -> ApiResult<OfferingView> {
    let mut v = offering_view(o)?;
    v.availability = Some(Fleet::read(st, &o.provider_id).await?.availability(st, o, &v.spec));
    Ok(v)
}

/// What is short on an agent for `need`, in words.
fn short_of(c: &CapacityReport, adm: &Admission, need: Need) -> String {
    let room = |total: u64, free: u64, pct: u8| {
        let used = total.saturating_sub(free.min(total));
        (total.saturating_mul(u64::from(pct)) / 100).saturating_sub(used)
    };
    let mut short = Vec::new();
    for (what, has, wants, pct) in [
        (
            "cores",
            room(c.cores_total, c.cores_free, adm.cores_percent),
            need.cores,
            adm.cores_percent,
        ),
        (
            "MiB of memory",
            room(c.memory_mib_total, c.memory_mib_free, adm.memory_percent),
            need.memory_mib,
            adm.memory_percent,
        ),
        (
            "GiB of disk",
            room(c.disk_gib_total, c.disk_gib_free, adm.disk_percent),
            need.disk_gib,
            adm.disk_percent,
        ),
    ] {
        if has < wants {
            short.push(format!("{wants} {what} needed, {has} left under the {pct}% threshold"));
        }
    }
    format!("no room: {}", short.join("; "))
}

#[utoipa::path(post, path = "/api/v1/offerings", tag = "offerings", request_body = OfferingSpec,
    responses((status = 201, body = OfferingView), (status = "4XX", body = Problem)))]
pub async fn create_offering(
    State(st): State<AppState>,
    req: Authed<Json<OfferingSpec>>,
) -> ApiResult<(StatusCode, axum::Json<OfferingView>)> {
    let provider = req.caller.require_provider()?.to_owned();
    let spec = req.body.get()?;
    validate_offering(&spec)?;
    let body = serde_json::to_value(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let audit = NewAuditEntry {
        actor: req.caller.actor(),
        action: "offering.created".into(),
        subject: String::new(),
        detail: body.clone(),
    };
    let max = crate::routes::quotas::offering_quota(&st, &provider).await?;
    let o = st
        .store
        .create_offering(&provider, body, Some(max), audit, now_ms())
        .await
        .map_err(crate::routes::quotas::exceeded)?;
    Ok((StatusCode::CREATED, axum::Json(with_availability(&st, &o).await?)))
}

#[utoipa::path(put, path = "/api/v1/offerings/{id}", tag = "offerings", params(("id" = String, Path)),
    request_body = OfferingSpec,
    responses((status = 200, body = OfferingView, description = "the offering as later orders get it; instances keep what they were ordered with"), (status = "4XX", body = Problem)))]
pub async fn update_offering(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed<Json<OfferingSpec>>,
) -> ApiResult<axum::Json<OfferingView>> {
    let provider = req.caller.require_provider()?.to_owned();
    let spec = req.body.get()?;
    let o = st.store.offering(&id).await?;
    if o.provider_id != provider {
        return Err(ApiError::NotFound(format!("offering {id}")));
    }
    validate_offering(&spec)?;
    let body = serde_json::to_value(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let audit = NewAuditEntry {
        actor: req.caller.actor(),
        action: "offering.updated".into(),
        subject: format!("offering:{id}"),
        detail: body.clone(),
    };
    let o = st.store.update_offering(&id, body, audit, now_ms()).await?;
    Ok(axum::Json(with_availability(&st, &o).await?))
}

/// Discovery filters: an offering matches when it offers at least this much. Pages are of the
/// offerings read, so a filtered page may hold fewer than `limit`: follow `Link: rel="next"`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryQuery {
    #[param(maximum = 8192)]
    pub cores: Option<u32>,
    #[param(maximum = 16_777_216_u64)]
    pub memory_mib: Option<u64>,
    #[param(maximum = 1_048_576_u64)]
    pub disk_gib: Option<u64>,
    #[param(max_length = 63)]
    pub region: Option<String>,
    /// `key=value` pairs separated by commas; all must match.
    #[param(max_length = 2048)]
    pub labels: Option<String>,
    /// Providers and operators: withdrawn offerings too (a customer asking is refused, 403).
    pub all: Option<bool>,
    /// The id of the last offering of the previous page.
    #[param(max_length = 128)]
    pub after: Option<String>,
    /// At most this many offerings read (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

fn parse_labels(s: &str) -> ApiResult<BTreeMap<String, String>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| ApiError::invalid("labels", format!("{p:?} is not key=value")))
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/offerings", tag = "offerings", params(DiscoveryQuery),
    responses((status = 200, body = [OfferingView], description = "customers and operators: what can be ordered now; providers: their own offerings"), (status = "4XX", body = Problem)))]
pub async fn list_offerings(
    State(st): State<AppState>,
    uri: Uri,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<Response> {
    req.caller.require_authenticated()?;
    let q: DiscoveryQuery = parse_query(q.as_deref())?;
    let page = crate::paging::page(q.after.as_deref(), q.limit)?;
    for (field, v, max) in [
        (
            "cores",
            q.cores.map(u64::from),
            u64::from(berth_core::VmSpec::MAX_CORES),
        ),
        ("memory_mib", q.memory_mib, MAX_MEMORY_MIB),
        ("disk_gib", q.disk_gib, MAX_DISK_GIB),
    ] {
        if v.is_some_and(|v| v > max) {
            return Err(ApiError::invalid(field, format!("must be at most {max}")));
        }
    }
    if let Some(r) = &q.region
        && !label_like(r)
    {
        return Err(ApiError::invalid(
            "region",
            format!("must be 1-63 of a-z 0-9 . _ - (got {r:?})"),
        ));
    }
    let labels = parse_labels(q.labels.as_deref().unwrap_or(""))?;
    let own = match &req.caller {
        Caller::Provider(p) | Caller::Agent { provider_id: p, .. } => Some(p.as_str()),
        _ => None,
    };
    let all = q.all.unwrap_or(false);
    // A matter of role, not of input: refused as any call beyond the caller's role.
    if all && matches!(req.caller, Caller::Customer(_)) {
        return Err(ApiError::Forbidden(
            "only providers (and operators) see withdrawn offerings (all=true)".into(),
        ));
    }
    let offerings = st.store.offerings(own, all, &page).await?;
    let live = match own {
        None if !all => Live::read(&st, None).await?,
        _ => Live(Vec::new()),
    };
    // A provider sees each of its offerings with whether it can be ordered now, and why not.
    let fleet = match own {
        Some(p) => Some(Fleet::read(&st, p).await?),
        None => None,
    };
    let mut out = Vec::new();
    for o in &offerings {
        let v = offering_view(o)?;
        let s = &v.spec;
        let matches = q.cores.is_none_or(|c| s.cores >= c)
            && q.memory_mib.is_none_or(|m| s.memory_mib >= m)
            && q.disk_gib.is_none_or(|d| s.disk_gib >= d)
            && q.region.as_ref().is_none_or(|r| s.region.as_ref() == Some(r))
            && labels.iter().all(|(k, val)| s.labels.get(k) == Some(val));
        if matches && (own.is_some() || all || live.can_take(&v.provider_id, None, &st.cfg.admission, Need::from(s))) {
            let mut v = v;
            if let Some(f) = &fleet {
                v.availability = Some(f.availability(&st, o, &v.spec));
            }
            out.push(v);
        }
    }
    let last = offerings.last().map(|o| o.id.as_str());
    Ok(paged(&uri, &page, offerings.len(), last, out))
}

#[utoipa::path(get, path = "/api/v1/offerings/{id}", tag = "offerings", params(("id" = String, Path)),
    responses((status = 200, body = OfferingView), (status = "4XX", body = Problem)))]
pub async fn get_offering(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<OfferingView>> {
    req.caller.require_authenticated()?;
    no_query(q.as_deref())?;
    let o = st.store.offering(&id).await?;
    let visible = match &req.caller {
        Caller::Customer(_) => o.withdrawn_at.is_none(),
        other => other.manages_provider(&o.provider_id),
    };
    if !visible {
        return Err(ApiError::NotFound(format!("offering {id}")));
    }
    if matches!(req.caller, Caller::Customer(_)) {
        return Ok(axum::Json(offering_view(&o)?));
    }
    Ok(axum::Json(with_availability(&st, &o).await?))
}

#[utoipa::path(post, path = "/api/v1/offerings/{id}/withdraw", tag = "offerings", params(("id" = String, Path)),
    responses((status = 200, body = OfferingView), (status = "4XX", body = Problem)))]
pub async fn withdraw_offering(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Authed,
) -> ApiResult<axum::Json<OfferingView>> {
    let provider = req.caller.require_provider()?;
    let o = st.store.offering(&id).await?;
    if o.provider_id != provider {
        return Err(ApiError::NotFound(format!("offering {id}")));
    }
    let audit = NewAuditEntry {
        actor: req.caller.actor(),
        action: "offering.withdrawn".into(),
        subject: format!("offering:{id}"),
        detail: serde_json::json!({}),
    };
    let o = st.store.withdraw_offering(&id, audit, now_ms()).await?;
    Ok(axum::Json(with_availability(&st, &o).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offering_checks_name_fields() {
        let ok = OfferingSpec {
            name: "small".into(),
            cores: 1,
            memory_mib: 512,
            disk_gib: 10,
            bandwidth_mbps: None,
            template: None,
            price: None,
            region: Some("eu-1".into()),
            labels: BTreeMap::new(),
            post_provision_commands: vec![],
        };
        validate_offering(&ok).unwrap();
        let field = |s: OfferingSpec| match validate_offering(&s) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(OfferingSpec { cores: 0, ..ok.clone() }), "cores");
        assert_eq!(
            field(OfferingSpec {
                region: Some("EU".into()),
                ..ok.clone()
            }),
            "region"
        );
        assert_eq!(
            field(OfferingSpec {
                price: Some(Price {
                    amount: 1,
                    currency: "eur".into(),
                    period: PricePeriod::Month
                }),
                ..ok.clone()
            }),
            "price.currency"
        );
        assert_eq!(
            field(OfferingSpec {
                post_provision_commands: vec!["ok".into(), " ".into()],
                ..ok
            }),
            "post_provision_commands[1]"
        );
    }
}
