//! The API, called in this process with the signed-in principal: a request goes through the
//! same router, extractors and handlers as one from the network, with the caller put in its
//! extensions ([`berth_server::auth::InProcess`]) instead of a bearer token.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_api::wire::Problem;
use berth_server::auth::{Caller, InProcess};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

#[derive(Clone)]
pub struct Api {
    router: Router,
}

/// What a failed call says: the API's problem document.
pub type ApiResult<T> = Result<T, Problem>;

fn internal(detail: impl std::fmt::Display) -> Problem {
    Problem {
        type_: "about:blank".into(),
        title: "Internal Server Error".into(),
        status: 500,
        detail: detail.to_string(),
        code: "internal".into(),
        field: None,
        retryable: true,
    }
}

impl Api {
    pub fn new(router: Router) -> Api {
        Api { router }
    }

    /// The raw response of `method path` with `body` (JSON), as `caller`.
    pub async fn send(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
    ) -> ApiResult<axum::response::Response> {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(b).map_err(internal)?)
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).map_err(internal)?;
        req.extensions_mut().insert(InProcess(caller.clone()));
        let resp = self.router.clone().oneshot(req).await.map_err(internal)?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .map_err(internal)?;
            return Err(serde_json::from_slice(&bytes).unwrap_or_else(|_| Problem {
                status: status.as_u16(),
                ..internal(String::from_utf8_lossy(&bytes))
            }));
        }
        Ok(resp)
    }

    async fn json<T: DeserializeOwned>(resp: axum::response::Response) -> ApiResult<T> {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(internal)?;
        serde_json::from_slice(&bytes).map_err(internal)
    }

    pub async fn get<T: DeserializeOwned>(&self, caller: &Caller, path: &str) -> ApiResult<T> {
        Self::json(self.send(caller, Method::GET, path, None::<&()>, &[]).await?).await
    }

    /// Every item of a paged list (`path` has no `limit`): pages of the largest size,
    /// following `Link: rel="next"` to the last.
    pub async fn list<T: DeserializeOwned>(&self, caller: &Caller, path: &str) -> ApiResult<Vec<T>> {
        let sep = match path.find('?') {
            None => "?",
            Some(i) if i + 1 == path.len() => "",
            Some(_) => "&",
        };
        let mut next = Some(format!("{path}{sep}limit=1000"));
        let mut out = Vec::new();
        while let Some(p) = next.take() {
            let resp = self.send(caller, Method::GET, &p, None::<&()>, &[]).await?;
            next = resp
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(berth_api::client::next_link);
            out.extend(Self::json::<Vec<T>>(resp).await?);
        }
        Ok(out)
    }

    /// POST `body`; `key` is sent as `Idempotency-Key` where the route takes one.
    pub async fn post<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        path: &str,
        body: &impl Serialize,
        key: Option<&str>,
    ) -> ApiResult<T> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        Self::json(self.send(caller, Method::POST, path, Some(body), &headers).await?).await
    }
}

/// Whether a problem means "not yours or not there": the page answers 404 alike.
pub fn is_not_found(p: &Problem) -> bool {
    p.status == StatusCode::NOT_FOUND.as_u16()
}

/// A path segment, percent-encoded (ids are URL-safe already; this keeps a crafted one from
/// reaching another route).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
