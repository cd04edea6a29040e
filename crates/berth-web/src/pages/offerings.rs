//! Offerings: what a provider publishes. A new one is made by picking a template its agents
//! report (never by typing a raw template id), and can be withdrawn. Operators see them all.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use berth_api::wire::*;
use serde::{Deserialize, Serialize};

use super::{FieldError, Nav, page};
use crate::api::{ApiResult, seg};
use crate::session::Viewer;
use crate::{Web, fmt, html};

/// The form as typed: kept as text so a bad value comes back as it was.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OfferingForm {
    pub name: String,
    pub template: String,
    pub cores: String,
    pub memory_mib: String,
    pub disk_gib: String,
    pub region: String,
    pub price: String,
    pub currency: String,
    pub period: String,
    pub labels: String,
    pub commands: String,
}

/// A number field, or the error that names it.
pub fn number<T: std::str::FromStr>(field: &str, s: &str, what: &str) -> Result<T, FieldError> {
    s.trim().parse().map_err(|_| FieldError {
        field: field.into(),
        message: format!("must be {what} (got {:?})", s.trim()),
        status: 422,
    })
}

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `key=value` pairs separated by commas or new lines.
pub fn labels(s: &str) -> Result<BTreeMap<String, String>, FieldError> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| FieldError {
                    field: "labels".into(),
                    message: format!("{p:?} is not key=value"),
                    status: 422,
                })
        })
        .collect()
}

/// One command a line; blank lines are dropped.
pub fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

impl OfferingForm {
    fn spec(&self) -> Result<OfferingSpec, FieldError> {
        let price = match some(&self.price) {
            None => None,
            Some(p) => {
                let currency = self.currency.trim();
                if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
                    return Err(FieldError {
                        field: "price.currency".into(),
                        message: format!("must be an ISO 4217 code like EUR (got {currency:?})"),
                        status: 422,
                    });
                }
                let period = if self.period == "hour" { "hour" } else { "month" };
                // In major units, as on the command line: 9.99 (EUR has 2 decimals).
                Some(
                    Price::parse(&format!("{p}{currency}/{period}")).map_err(|_| FieldError {
                        field: "price".into(),
                        message: format!(
                            "must be an amount like 9.99, with at most {} decimals for {currency} (got {p:?})",
                            Price::minor_digits(currency)
                        ),
                        status: 422,
                    })?,
                )
            }
        };
        Ok(OfferingSpec {
            name: self.name.trim().to_owned(),
            cores: number("cores", &self.cores, "a whole number of cores")?,
            memory_mib: number("memory_mib", &self.memory_mib, "a whole number of MiB")?,
            disk_gib: number("disk_gib", &self.disk_gib, "a whole number of GiB")?,
            bandwidth_mbps: None,
            template: some(&self.template),
            price,
            region: some(&self.region),
            labels: labels(&self.labels)?,
            post_provision_commands: lines(&self.commands),
        })
    }
}

/// A template an agent reports, as the form offers it.
pub struct Choice {
    pub id: String,
    pub label: String,
}

pub struct Row {
    pub o: OfferingView,
    pub summary: String,
    pub price: String,
}

pub fn price(p: &Option<Price>) -> String {
    p.as_ref().map(Price::to_string).unwrap_or_default()
}

pub fn summary(s: &OfferingSpec) -> String {
    fmt::size(s.cores, s.memory_mib, s.disk_gib)
}

#[derive(askama::Template)]
#[template(path = "offerings.html")]
struct OfferingsPage {
    nav: Nav,
    rows: Vec<Row>,
    choices: Vec<Choice>,
    form: OfferingForm,
    error: FieldError,
    can_create: bool,
}

async fn render(web: &Web, v: &Viewer, form: OfferingForm, error: FieldError) -> ApiResult<Response> {
    // Providers: their own, on sale or withdrawn; operators: what can be ordered now.
    let offerings: Vec<OfferingView> = web.api.list(&v.caller, "/api/v1/offerings").await?;
    let choices = if v.role() == "provider" {
        let t: Vec<TemplateView> = web
            .api
            .get(&v.caller, &format!("/api/v1/providers/{}/templates", seg(v.subject())))
            .await?;
        let mut seen = std::collections::BTreeSet::new();
        t.into_iter()
            .filter(|t| seen.insert(t.template.id.clone()))
            .map(|t| Choice {
                label: format!("{} ({} · {})", t.template.name, t.template.backend, t.template.id),
                id: t.template.id,
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows = offerings
        .into_iter()
        .map(|o| Row {
            summary: summary(&o.spec),
            price: price(&o.spec.price),
            o,
        })
        .collect();
    let status = error.status();
    Ok((
        status,
        html(&OfferingsPage {
            nav: Nav::of(v),
            rows,
            choices,
            form,
            error,
            can_create: v.role() == "provider",
        }),
    )
        .into_response())
}

pub async fn list(State(web): State<Web>, v: Viewer) -> Response {
    let form = OfferingForm {
        cores: "2".into(),
        memory_mib: "2048".into(),
        disk_gib: "20".into(),
        currency: "EUR".into(),
        period: "month".into(),
        ..Default::default()
    };
    page(&v, render(&web, &v, form, FieldError::default()).await)
}

pub async fn create(State(web): State<Web>, v: Viewer, axum::Form(form): axum::Form<OfferingForm>) -> Response {
    let made = match form.spec() {
        Ok(spec) => web
            .api
            .post::<OfferingView>(&v.caller, "/api/v1/offerings", &spec, None)
            .await
            .map_err(|p| FieldError::from(&p)),
        Err(e) => Err(e),
    };
    match made {
        Ok(_) => Redirect::to("/ui/offerings").into_response(),
        Err(e) => page(&v, render(&web, &v, form, e).await),
    }
}

pub async fn withdraw(State(web): State<Web>, v: Viewer, Path(id): Path<String>) -> Response {
    let path = format!("/api/v1/offerings/{}/withdraw", seg(&id));
    match web
        .api
        .post::<serde_json::Value>(&v.caller, &path, &serde_json::json!({}), None)
        .await
    {
        Ok(_) => Redirect::to("/ui/offerings").into_response(),
        Err(p) => super::problem_page(&v, &p),
    }
}
