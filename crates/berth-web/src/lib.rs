//! Berth's web dashboard, served by `berth server` (and `berth up`) next to the API: sign-in with
//! an API token (a hashed, expiring session in an HttpOnly `SameSite=Strict` cookie), pages for
//! operators, providers and customers, and live operation progress pushed over SSE.
//!
//! Every page reads and writes through the API itself, called in this process with the
//! signed-in principal ([`api::Api`]): the same handlers, validation and authorization serve the
//! API and the pages, so another tenant's page answers 404 exactly as its API URL does, and a
//! form's error is the API's problem document (its `field`) shown next to that field.

pub mod api;
mod assets;
mod fmt;
mod live;
mod pages;
mod session;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use berth_server::AppState;

pub use assets::VENDORED;

/// What every dashboard handler has: the server's state and the API to call.
#[derive(Clone)]
pub struct Web {
    pub state: AppState,
    pub api: api::Api,
}

/// The API plus the dashboard (under `/ui`; `/` leads there), over one state.
pub fn app(state: AppState) -> Router {
    let api_router = berth_server::router(state.clone());
    let web = Web {
        state,
        api: api::Api::new(api_router.clone()),
    };
    let ui = Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(pages::home))
        .route("/ui/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/ui/sign-out", post(session::sign_out))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/agents", get(pages::agents::list))
        .route("/ui/agents/setup-token", post(pages::agents::setup_token))
        .route(
            "/ui/offerings",
            get(pages::offerings::list).post(pages::offerings::create),
        )
        .route("/ui/offerings/{id}/withdraw", post(pages::offerings::withdraw))
        .route("/ui/catalogue", get(pages::orders::catalogue))
        .route("/ui/keys", get(pages::keys::list).post(pages::keys::save))
        .route("/ui/keys/{id}/delete", post(pages::keys::delete))
        .route(
            "/ui/order/{offering}",
            get(pages::orders::form).post(pages::orders::place),
        )
        .route("/ui/instances", get(pages::instances::list))
        .route("/ui/wizard", get(pages::wizard::hypervisor).post(pages::wizard::submit))
        .route("/ui/wizard/template", get(pages::wizard::template))
        .route("/ui/wizard/configure", get(pages::wizard::configure))
        .route("/ui/wizard/review", get(pages::wizard::review))
        .route("/ui/instances/bulk", post(pages::instances::bulk))
        .route("/ui/instances/{id}", get(pages::instances::show))
        .route("/ui/instances/{id}/{action}", post(pages::instances::act))
        .route("/ui/operations/{id}", get(pages::operations::show))
        .route("/ui/operations/{id}/input", post(pages::waiting::answer))
        .route("/ui/waiting", get(pages::waiting::list))
        .route("/ui/operations/{id}/live", get(live::stream))
        .route("/ui/audit", get(pages::audit))
        .layer(axum::middleware::from_fn(session::csrf_guard))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web);
    ui.merge(api_router)
}

/// Pages may load only this origin's scripts, styles and images, may not be framed, and are
/// never cached (they show one principal's data).
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// An HTML page from a template; a template that fails to render is a 500 with a plain message.
pub(crate) fn html(t: &impl askama::Template) -> Response {
    match t.render() {
        Ok(body) => axum::response::Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}
