//! A customer's saved public keys (`/ui/keys`): SSH keys to pick in the order form, and the age
//! key the order form fills in, so neither is pasted into every order.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use berth_api::wire::*;
use serde::Deserialize;

use super::{FieldError, Nav, page};
use crate::api::{ApiResult, seg};
use crate::session::Viewer;
use crate::{Web, html};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyForm {
    pub kind: String,
    pub name: String,
    pub public_key: String,
}

#[derive(askama::Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    keys: Vec<KeyView>,
    form: KeyForm,
    error: FieldError,
}

async fn render(web: &Web, v: &Viewer, mut form: KeyForm, error: FieldError) -> ApiResult<Response> {
    super::scrub_private(&mut form.public_key);
    let keys = web.api.list(&v.caller, "/api/v1/keys").await?;
    let status = error.status();
    Ok((
        status,
        html(&KeysPage {
            nav: Nav::of(v),
            keys,
            form,
            error,
        }),
    )
        .into_response())
}

pub async fn list(State(web): State<Web>, v: Viewer) -> Response {
    let form = KeyForm {
        kind: "ssh".into(),
        ..KeyForm::default()
    };
    page(&v, render(&web, &v, form, FieldError::default()).await)
}

pub async fn save(State(web): State<Web>, v: Viewer, axum::Form(form): axum::Form<KeyForm>) -> Response {
    let req = SaveKey {
        kind: form.kind.clone(),
        name: form.name.trim().to_owned(),
        public_key: form.public_key.trim().to_owned(),
    };
    match web.api.post::<KeyView>(&v.caller, "/api/v1/keys", &req, None).await {
        Ok(_) => Redirect::to("/ui/keys").into_response(),
        Err(p) if p.status == 400 || p.status == 422 => page(&v, render(&web, &v, form, FieldError::from(&p)).await),
        Err(p) => super::problem_page(&v, &p),
    }
}

pub async fn delete(State(web): State<Web>, v: Viewer, Path(id): Path<String>) -> Response {
    let path = format!("/api/v1/keys/{}", seg(&id));
    match web.api.send(&v.caller, Method::DELETE, &path, None::<&()>, &[]).await {
        Ok(_) => Redirect::to("/ui/keys").into_response(),
        Err(p) => super::problem_page(&v, &p),
    }
}

/// The keys an order form offers: saved SSH keys to pick, and the saved age key (the newest).
pub async fn for_order(web: &Web, v: &Viewer) -> (Vec<KeyView>, Option<String>) {
    let keys: Vec<KeyView> = web.api.list(&v.caller, "/api/v1/keys").await.unwrap_or_default();
    let age = keys
        .iter()
        .rev()
        .find(|k| k.kind == "age")
        .map(|k| k.public_key.clone());
    (keys.into_iter().filter(|k| k.kind == "ssh").collect(), age)
}
