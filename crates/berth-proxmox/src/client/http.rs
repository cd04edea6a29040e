//! The HTTP layer of the PVE client: one pooled reqwest client, token auth, `/api2/json`
//! envelopes, PVE's error shapes (reason phrase, body `message`, `errors` map), and retries of
//! transient failures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::Secret;
use berth_core::error::error_chain;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::PveError;
use super::params::Params;
use super::poll::{Durations, Poll};
use super::retry::{RetryPolicy, retry};
use berth_tls::TlsOptions;

/// Everything needed to talk to one PVE API endpoint.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `https://host:8006` (the client appends `/api2/json`).
    pub base_url: String,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    pub token_secret: Secret,
    pub tls: TlsOptions,
    /// Retries of transient failures (reads, lock timeouts, failed forks).
    pub retry: RetryPolicy,
    /// Limit for one HTTP exchange.
    pub request_timeout: Duration,
    /// Longest pause between two polls of a task or the guest agent.
    pub poll_interval: Duration,
}

impl ClientOptions {
    pub fn new(base_url: &str, token_id: &str, token_secret: Secret) -> Self {
        ClientOptions {
            base_url: base_url.to_owned(),
            token_id: token_id.to_owned(),
            token_secret,
            tls: TlsOptions::default(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A decoded success envelope: `data` plus the optional `total` (task logs).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub data: Value,
    pub total: Option<u64>,
    /// Staged network edits, as a diff (`GET /nodes/{node}/network`).
    pub changes: Option<String>,
}

/// HTTP methods PVE uses (kept as `&'static str` so errors can name them cheaply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// What a request carries besides its path: parameters (a query string on GET/DELETE, a form body
/// on POST/PUT), or a JSON object body for what a form cannot express. PVE joins a repeated form
/// key into one NUL-separated string, so an `array` parameter (`agent/exec`'s `command`) with more
/// than one element needs JSON (accepted since pve-http-server's fix #2766, 2020).
#[derive(Debug, Clone, Copy)]
enum Payload<'a> {
    Params(&'a Params),
    Json(&'a Value),
}

/// The typed Proxmox VE API client. Cheap to clone; all clones share one connection pool.
#[derive(Clone)]
pub struct PveClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    retry: RetryPolicy,
    poll_interval: Duration,
    durations: Durations,
    /// Nodes whose task history has been read for expectations (`learn_from_history`).
    history_read: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl PveClient {
    pub fn new(opts: ClientOptions) -> Result<Self, PveError> {
        let setup = |message: String| PveError::Setup { message };
        let url = url::Url::parse(&opts.base_url).map_err(|e| setup(format!("invalid base URL: {e}")))?;
        if url.scheme() == "http" {
            tracing::warn!(url = %url, "talking to the Proxmox API over plain HTTP: the token travels unencrypted");
        }
        let base = format!("{}/api2/json", opts.base_url.trim_end_matches('/'));
        let mut auth = HeaderValue::from_str(&format!("PVEAPIToken={}={}", opts.token_id, opts.token_secret.expose()))
            .map_err(|_| {
                setup("the API token ID or secret contains characters not allowed in an HTTP header".into())
            })?;
        auth.set_sensitive(true);
        let builder = reqwest::Client::builder()
            .user_agent(concat!("berth-proxmox/", env!("CARGO_PKG_VERSION")))
            .timeout(opts.request_timeout)
            .connect_timeout(Duration::from_secs(10).min(opts.request_timeout))
            .pool_idle_timeout(Duration::from_secs(30));
        let builder = berth_tls::apply(builder, &opts.tls).map_err(setup)?;
        let http = builder.build().map_err(|e| setup(error_chain(&e)))?;
        Ok(PveClient {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                retry: opts.retry,
                poll_interval: opts.poll_interval,
                durations: Durations::default(),
                history_read: Default::default(),
            }),
        })
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// The API's host (`pve1.example.com`, `10.0.0.11`), as the base URL names it.
    pub fn host(&self) -> Option<String> {
        url::Url::parse(&self.inner.base)
            .ok()?
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_owned())
    }

    pub fn poll_interval(&self) -> Duration {
        self.inner.poll_interval
    }

    /// A poll schedule for a wait of kind `key`, paced by how long such waits took lately.
    pub fn poller(&self, key: &str) -> Poll {
        Poll::expecting(self.inner.poll_interval, self.inner.durations.expected(key))
    }

    /// Whether `node`'s task history still has to be read (true once per node and client).
    pub(crate) fn first_history_read(&self, node: &str) -> bool {
        self.inner
            .history_read
            .lock()
            .is_ok_and(|mut read| read.insert(node.to_owned()))
    }

    /// Takes `took` as the expectation for waits of kind `key` unless one was learned already.
    pub fn seed_duration(&self, key: &str, took: Duration) {
        self.inner.durations.seed(key, took)
    }

    /// Remembers that a wait of kind `key` took `took`.
    pub fn learned(&self, key: &str, took: Duration) {
        self.inner.durations.record(key, took)
    }

    /// GET, retried on transient failures; `data` decoded into `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, params: &Params) -> Result<T, PveError> {
        let env = self.request(Method::Get, path, params, true).await?;
        decode(Method::Get, path, env.data)
    }

    /// GET without retries (for pollers that have their own loop).
    pub async fn get_once<T: DeserializeOwned>(&self, path: &str, params: &Params) -> Result<T, PveError> {
        let env = self.request(Method::Get, path, params, false).await?;
        decode(Method::Get, path, env.data)
    }

    /// POST/PUT/DELETE retried only when PVE says nothing happened (lock timeout, no worker).
    pub async fn write<T: DeserializeOwned>(&self, method: Method, path: &str, params: &Params) -> Result<T, PveError> {
        let env = self.request(method, path, params, true).await?;
        decode(method, path, env.data)
    }

    /// A write sent exactly once (clone, create): the caller checks what happened before retrying.
    pub async fn write_once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        let env = self.request(method, path, params, false).await?;
        decode(method, path, env.data)
    }

    /// A POST whose body is the JSON object `body`, sent exactly once (see `Payload` for when a
    /// form will not do).
    pub async fn post_json_once<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, PveError> {
        let env = self.send_once(Method::Post, path, Payload::Json(body)).await?;
        decode(Method::Post, path, env.data)
    }

    /// The raw envelope of any call. `retry` enables retries of transient failures.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        retry_it: bool,
    ) -> Result<Envelope, PveError> {
        let policy = if retry_it { self.inner.retry } else { RetryPolicy::NEVER };
        let read = method == Method::Get;
        retry(
            policy,
            &format!("{} {path}", method.as_str()),
            |e| e.is_transient(read),
            || self.send_once(method, path, Payload::Params(params)),
        )
        .await
    }

    async fn send_once(&self, method: Method, path: &str, payload: Payload<'_>) -> Result<Envelope, PveError> {
        let url = format!("{}{path}", self.inner.base);
        let http = &self.inner.http;
        let req = match (method, payload) {
            (Method::Get, Payload::Params(p)) => http.get(&url).query(p.pairs()),
            (Method::Delete, Payload::Params(p)) => http.delete(&url).query(p.pairs()),
            (Method::Post, Payload::Params(p)) => http.post(&url).form(p.pairs()),
            (Method::Put, Payload::Params(p)) => http.put(&url).form(p.pairs()),
            (Method::Post, Payload::Json(v)) => http.post(&url).json(v),
            (Method::Put, Payload::Json(v)) => http.put(&url).json(v),
            // PVE refuses a body on GET/DELETE (501), so no such request is ever built.
            (Method::Get | Method::Delete, Payload::Json(_)) => {
                return Err(PveError::Setup {
                    message: format!("{} {path}: a JSON body is only sent with POST or PUT", method.as_str()),
                });
            }
        };
        let m = method.as_str();
        tracing::debug!(method = m, path, "PVE request");
        let resp = req
            .header(AUTHORIZATION, self.inner.auth.clone())
            .send()
            .await
            .map_err(|e| transport(m, path, &e))?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).trim().to_owned())
            .filter(|r| !r.is_empty());
        let bytes = resp.bytes().await.map_err(|e| transport(m, path, &e))?;
        if status.is_success() {
            return parse_success(m, path, &bytes);
        }
        Err(parse_failure(m, path, status, reason, &bytes))
    }
}

pub(crate) fn decode<T: DeserializeOwned>(method: Method, path: &str, data: Value) -> Result<T, PveError> {
    serde_json::from_value(data).map_err(|e| PveError::Decode {
        method: method.as_str(),
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn parse_success(method: &'static str, path: &str, bytes: &[u8]) -> Result<Envelope, PveError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Envelope {
            data: Value::Null,
            total: None,
            changes: None,
        });
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| PveError::Decode {
        method,
        path: path.to_owned(),
        message: format!("body is not JSON ({e})"),
    })?;
    let total = v.get("total").and_then(super::types::lenient_u64);
    let changes = v.get("changes").and_then(super::types::lenient_string);
    let data = match v {
        Value::Object(mut m) => m.remove("data").unwrap_or(Value::Null),
        _ => {
            return Err(PveError::Decode {
                method,
                path: path.to_owned(),
                message: "body has no \"data\" member".into(),
            });
        }
    };
    Ok(Envelope { data, total, changes })
}

/// Builds the error from, in order: the reason phrase (PVE puts the message's first line there;
/// reqwest exposes it only when it differs from the standard phrase), the body `message`
/// (PVE 8.3+), the standard phrase. The `errors` map is always kept.
fn parse_failure(
    method: &'static str,
    path: &str,
    status: reqwest::StatusCode,
    reason: Option<String>,
    bytes: &[u8],
) -> PveError {
    let body: Option<Value> = serde_json::from_slice(bytes).ok();
    let body_message = body
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let errors: BTreeMap<String, String> = body
        .as_ref()
        .and_then(|b| b.get("errors"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map(|s| s.trim().to_owned()).unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let message = reason
        .or(body_message)
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_else(|| "(no message)".to_owned());
    PveError::Api {
        method,
        path: path.to_owned(),
        status: status.as_u16(),
        message,
        errors,
    }
}

fn transport(method: &'static str, path: &str, e: &reqwest::Error) -> PveError {
    if let Some(message) = berth_tls::describe_failure(e, crate::provider::PVE_TRUST_HINT) {
        return PveError::Tls {
            method,
            path: path.to_owned(),
            message,
        };
    }
    let mut message = error_chain(e);
    if e.is_timeout() {
        message = format!("request timed out ({message})");
    }
    PveError::Transport {
        method,
        path: path.to_owned(),
        message,
    }
}
