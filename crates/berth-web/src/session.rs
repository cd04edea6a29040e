//! Browser sessions and CSRF. Signing in exchanges an API token for a session (stored hashed,
//! expiring, ended by sign-out); its secret travels only in an HttpOnly, `SameSite=Strict`
//! cookie (`Secure` behind TLS). Every state-changing request must come from this origin: the
//! browser's `Sec-Fetch-Site` says `same-origin`, or its `Origin` is this host.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use berth_server::auth::Caller;
use berth_store::Role;
use serde::Deserialize;

use crate::{Web, html};

pub const COOKIE: &str = "berth_session";

/// The signed-in person: who they are to the API, and how pages name them.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
}

impl Viewer {
    pub fn role(&self) -> &'static str {
        match self.caller {
            Caller::Operator => "operator",
            Caller::Provider(_) => "provider",
            Caller::Customer(_) => "customer",
            _ => "",
        }
    }

    /// The provider or customer id (empty for operators).
    pub fn subject(&self) -> &str {
        match &self.caller {
            Caller::Provider(s) | Caller::Customer(s) => s,
            _ => "",
        }
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Not signed in: pages send the browser to sign in (and back), other requests get a 401.
pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        if self.0.is_empty() {
            return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
        }
        let next = serde_urlencoded::to_string([("next", self.0.as_str())]).unwrap_or_default();
        Redirect::to(&format!("/ui/sign-in?{next}")).into_response()
    }
}

impl FromRequestParts<Web> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let back = if parts.method == Method::GET && !parts.uri.path().ends_with("/live") {
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let Some(secret) = cookie_value(&parts.headers, COOKIE) else {
            return Err(SignInFirst(back).into_response());
        };
        match web.state.store.session_principal(secret, berth_server::now_ms()).await {
            Ok(Some((role, subject))) => {
                let caller = match role {
                    Role::Operator => Caller::Operator,
                    Role::Provider => Caller::Provider(subject),
                    Role::Customer => Caller::Customer(subject),
                };
                berth_server::access::note_caller(&parts.extensions, caller.actor());
                Ok(Viewer { caller })
            }
            Ok(None) => Err(SignInFirst(back).into_response()),
            Err(e) => {
                tracing::error!(error = %e, "reading a session");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is not answering; try again",
                )
                    .into_response())
            }
        }
    }
}

/// Refuses a state-changing request that did not come from a page of this origin.
pub async fn csrf_guard(req: Request<axum::body::Body>, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) || same_origin(req.headers()) {
        return next.run(req).await;
    }
    (
        StatusCode::FORBIDDEN,
        "refused: this form was not sent from a page of this site (cross-site request)",
    )
        .into_response()
}

fn same_origin(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(o), Some(host)) => o
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host),
        _ => false,
    }
}

#[derive(askama::Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    nav: crate::pages::Nav,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Only a dashboard path of this site: never another origin (`//host`, `/\host`).
fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/ui")
        && !next.contains("//")
        && !next.contains('\\')
        && next.chars().all(|c| c.is_ascii_graphic());
    if ok { next.to_owned() } else { "/ui".to_owned() }
}

pub async fn sign_in_page(Query(q): Query<NextQuery>) -> Response {
    html(&SignIn {
        nav: crate::pages::Nav::none(),
        next: safe_next(&q.next),
        error: None,
    })
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

pub async fn sign_in(State(web): State<Web>, headers: HeaderMap, axum::Form(f): axum::Form<SignInForm>) -> Response {
    let next = safe_next(&f.next);
    // At most a year: a larger setting must not wrap around into a session that is already over.
    let ttl_seconds = web.state.cfg.ui.session_ttl_seconds.clamp(60, 366 * 86_400);
    let ttl = ttl_seconds as i64 * 1000;
    let token = f.token.trim();
    let made = if token.is_empty() {
        Ok(None)
    } else {
        web.state.store.create_session(token, ttl, berth_server::now_ms()).await
    };
    let session = match made {
        Ok(Some(s)) => s,
        Ok(None) => {
            let page = html(&SignIn {
                nav: crate::pages::Nav::none(),
                next,
                error: Some(
                    "unknown or revoked API token; paste a token `berth` made for you (it starts with berth_tok_)"
                        .into(),
                ),
            });
            return (StatusCode::UNAUTHORIZED, page).into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "making a session");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not answering; try again",
            )
                .into_response();
        }
    };
    let secure = web.state.cfg.ui.secure_cookie
        || headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session.secret,
        ttl_seconds,
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::try_from(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub async fn sign_out(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Some(secret) = cookie_value(&headers, COOKIE)
        && let Err(e) = web.state.store.end_session(secret).await
    {
        tracing::error!(error = %e, "ending a session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not answering; try again",
        )
            .into_response();
    }
    let mut resp = Redirect::to("/ui/sign-in").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("berth_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/ui/instances?x=1"), "/ui/instances?x=1");
        for bad in [
            "//evil.example/ui",
            "https://evil.example",
            "/ui//evil",
            "/ui\nx",
            "/ui x",
            "/ui\\evil",
            "",
            "/api/v1/x",
        ] {
            assert_eq!(safe_next(bad), "/ui", "{bad}");
        }
    }

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        assert!(!same_origin(&h), "no proof at all is refused");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8420"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8420"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; berth_session=s3cret; b=2"),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("s3cret"));
        assert_eq!(cookie_value(&h, "c"), None);
    }
}
