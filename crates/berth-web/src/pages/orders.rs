//! Customers: the catalogue of what can be ordered now (filtered by size, region and labels)
//! and the order form. An order is sent once: the form carries its own `Idempotency-Key`, so a
//! double click or a resent form never makes two machines.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use berth_api::wire::*;
use serde::{Deserialize, Serialize};

use super::offerings::{price, summary};
use super::{FieldError, Nav, page};
use crate::api::{ApiResult, seg};
use crate::session::Viewer;
use crate::{Web, html};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Filters {
    pub cores: String,
    pub memory_mib: String,
    pub disk_gib: String,
    pub region: String,
    pub labels: String,
    pub max_price: String,
}

pub struct Card {
    pub o: OfferingView,
    pub summary: String,
    pub price: String,
}

#[derive(askama::Template)]
#[template(path = "catalogue.html")]
struct CataloguePage {
    nav: Nav,
    filters: Filters,
    cards: Vec<Card>,
    error: FieldError,
    can_order: bool,
}

pub async fn catalogue(State(web): State<Web>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let filters: Filters = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    // The API filters what it knows; the price cap is the page's own.
    let api_q: Vec<(&str, &str)> = [
        ("cores", filters.cores.trim()),
        ("memory_mib", filters.memory_mib.trim()),
        ("disk_gib", filters.disk_gib.trim()),
        ("region", filters.region.trim()),
        ("labels", filters.labels.trim()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    let path = format!(
        "/api/v1/offerings?{}",
        serde_urlencoded::to_string(&api_q).unwrap_or_default()
    );
    let cap = match filters.max_price.trim() {
        "" => Ok(None),
        s => super::offerings::number::<f64>("max_price", s, "an amount like 9.99")
            .map(|c| Some(c).filter(|c| c.is_finite() && *c >= 0.0)),
    };
    let (offerings, error) = match cap {
        Err(e) => (Vec::new(), e),
        Ok(cap) => match web.api.list::<OfferingView>(&v.caller, &path).await {
            Ok(all) => (
                all.into_iter()
                    .filter(|o| cap.is_none_or(|c| o.spec.price.as_ref().is_some_and(|p| major(p) <= c)))
                    .collect(),
                FieldError::default(),
            ),
            Err(p) if p.status == 400 || p.status == 422 => (Vec::new(), FieldError::from(&p)),
            Err(p) => return super::problem_page(&v, &p),
        },
    };
    let cards = offerings
        .into_iter()
        .map(|o| Card {
            summary: summary(&o.spec),
            price: price(&o.spec.price),
            o,
        })
        .collect();
    html(&CataloguePage {
        nav: Nav::of(&v),
        filters,
        cards,
        error,
        can_order: v.role() == "customer",
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderForm {
    pub name: String,
    pub ssh_public_key: String,
    pub requester_public_key: String,
    pub skip_post_provision: Option<String>,
    pub build_later: Option<String>,
    /// A saved SSH key's id, used when no key is pasted.
    pub saved_ssh: String,
    /// Made when the form is shown; the order is placed once per key.
    pub key: String,
}

#[derive(askama::Template)]
#[template(path = "order.html")]
struct OrderPage {
    nav: Nav,
    offering: OfferingView,
    summary: String,
    price: String,
    form: OrderForm,
    error: FieldError,
    saved: Vec<KeyView>,
}

/// A fresh random key (128 bits, hex).
pub fn new_key() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("the OS gives randomness");
    hex::encode(raw)
}

async fn render(web: &Web, v: &Viewer, offering: &str, mut form: OrderForm, error: FieldError) -> ApiResult<Response> {
    super::scrub_private(&mut form.ssh_public_key);
    let (saved, age) = super::keys::for_order(web, v).await;
    if form.requester_public_key.is_empty() {
        form.requester_public_key = age.unwrap_or_default();
    }
    let o: OfferingView = web
        .api
        .get(&v.caller, &format!("/api/v1/offerings/{}", seg(offering)))
        .await?;
    let status = error.status();
    Ok((
        status,
        html(&OrderPage {
            nav: Nav::of(v),
            summary: summary(&o.spec),
            price: price(&o.spec.price),
            offering: o,
            form,
            error,
            saved,
        }),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
pub struct From {
    /// "Edit & retry": the form starts from this instance's request.
    #[serde(default)]
    from: Option<String>,
}

pub async fn form(
    State(web): State<Web>,
    v: Viewer,
    Path(offering): Path<String>,
    axum::extract::Query(q): axum::extract::Query<From>,
) -> Response {
    let mut form = OrderForm {
        key: new_key(),
        ..Default::default()
    };
    if let Some(id) = q.from {
        match web
            .api
            .get::<InstanceView>(&v.caller, &format!("/api/v1/instances/{}", seg(&id)))
            .await
        {
            Ok(i) => {
                form.name = i.name;
                form.ssh_public_key = i.ssh_public_key;
            }
            Err(p) => return super::problem_page(&v, &p),
        }
    }
    page(&v, render(&web, &v, &offering, form, FieldError::default()).await)
}

pub async fn place(
    State(web): State<Web>,
    v: Viewer,
    Path(offering): Path<String>,
    axum::Form(mut form): axum::Form<OrderForm>,
) -> Response {
    if form.ssh_public_key.trim().is_empty() && !form.saved_ssh.is_empty() {
        let (saved, _) = super::keys::for_order(&web, &v).await;
        if let Some(k) = saved.into_iter().find(|k| k.id == form.saved_ssh) {
            form.ssh_public_key = k.public_key;
        }
    }
    let order = CreateOrder {
        offering_id: offering.clone(),
        name: form.name.trim().to_owned(),
        ssh_public_key: form.ssh_public_key.trim().to_owned(),
        requester_public_key: Some(form.requester_public_key.trim().to_owned()).filter(|k| !k.is_empty()),
        skip_post_provision: form.skip_post_provision.is_some(),
        provision: form.build_later.is_none(),
    };
    let key = Some(form.key.as_str()).filter(|k| !k.is_empty());
    match web.api.post::<Accepted>(&v.caller, "/api/v1/orders", &order, key).await {
        Ok(a) => Redirect::to(&match a.operation_id {
            Some(op) => format!("/ui/operations/{}", seg(&op)),
            None => format!("/ui/instances/{}", seg(&a.instance_id)),
        })
        .into_response(),
        Err(p) if p.status == 404 || p.status == 401 || p.status == 403 => super::problem_page(&v, &p),
        Err(p) => {
            // Nothing was made: the same key may be used again for the corrected order
            // (a failed request releases it).
            let error = FieldError::from(&p);
            if form.key.is_empty() {
                form.key = new_key();
            }
            page(&v, render(&web, &v, &offering, form, error).await)
        }
    }
}

/// A price in its currency's major units (what the catalogue's "at most" filter compares).
fn major(p: &Price) -> f64 {
    p.amount as f64 / 10f64.powi(Price::minor_digits(&p.currency) as i32)
}
