//! The typed client of the control-plane API, used by the agent, the CLI and the tests. It
//! authenticates with a bearer API token (operators, providers, customers) or signs every
//! request with an Ed25519 key (agents, RFC 9421). A refusal comes back as the server's problem
//! document.

use std::time::Duration;

pub use berth_tls::TlsOptions;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::httpsig::RequestSigner;
use crate::wire::*;

/// How requests prove who sends them.
// One per client, made once: the size of the signing variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Signed(RequestSigner),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Signed(s) => write!(f, "Signed({s:?})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused, with its problem document.
    #[error("{} ({}): {}", .0.title, .0.code, .0.detail)]
    Problem(Box<Problem>),
    #[error("HTTP {status} from {url}: {body}")]
    Status { status: u16, url: String, body: String },
    #[error("could not reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected response from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ClientError {
    /// The problem's stable code, if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Problem(p) => Some(&p.code),
            _ => None,
        }
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Problem(p) => Some(p.status),
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The field the problem names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ClientError::Problem(p) => p.field.as_deref(),
            _ => None,
        }
    }
}

/// Cheap to clone: clones share one connection pool.
/// How to make the control plane's certificate trusted, for the error when it is not.
const TRUST_HINT: &str = "give the CA that signed it (`ca_file` in the agent's [api], `--ca-file` or BERTH_CA_FILE for \
     the CLI) or pin it (`tls_fingerprint`, `--tls-fingerprint`; `berth server` prints it)";

/// The `keyid` an enrollment is signed under: the agent has no id yet, so the key being
/// enrolled signs the request and the server checks it against the body's `public_key`.
pub const ENROLL_KEYID: &str = "enroll";

#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    auth: Auth,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish()
    }
}

/// How long an ordinary request may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Client {
    /// `base` is the server's URL (`http://127.0.0.1:8420`), without `/api/v1`.
    pub fn new(base: &str, auth: Auth) -> Client {
        Client::with_tls(base, auth, &TlsOptions::default()).expect("a default HTTP client builds")
    }

    /// A client that checks the control plane's certificate as `tls` says (system roots by
    /// default; a CA file; SHA-256 pins).
    pub fn with_tls(base: &str, auth: Auth, tls: &TlsOptions) -> Result<Client, String> {
        let tls = TlsOptions {
            server: "the control plane",
            trust_hint: TRUST_HINT,
            ..tls.clone()
        };
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        let http = berth_tls::apply(builder, &tls)?
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API token this client sends, if it uses one.
    pub fn bearer_token(&self) -> Option<&str> {
        match &self.auth {
            Auth::Bearer(t) => Some(t),
            _ => None,
        }
    }

    /// Sends one request; `Ok(None)` for `204 No Content`.
    pub async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Option<T>, ClientError> {
        Ok(self
            .exchange(method, path_and_query, body, headers, timeout)
            .await?
            .map(|(v, _)| v))
    }

    /// Every item of a paged list, following `Link: <…>; rel="next"` page by page.
    pub(crate) async fn get_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(p) = next.take() {
            let Some((page, headers)) = self
                .exchange::<(), Vec<T>>(http::Method::GET, &p, None, &[], TIMEOUT)
                .await?
            else {
                break;
            };
            out.extend(page);
            next = headers
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
        }
        Ok(out)
    }

    /// One request and the response's headers; `Ok(None)` for `204 No Content`.
    async fn exchange<B: Serialize, T: DeserializeOwned>(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Option<(T, http::HeaderMap)>, ClientError> {
        let url = format!("{}{path_and_query}", self.base);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode {
                url: url.clone(),
                reason: format!("encoding the request: {e}"),
            })?,
            None => Vec::new(),
        };
        let mut hm = http::HeaderMap::new();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(*k), http::HeaderValue::try_from(*v)) {
                hm.insert(k, v);
            }
        }
        if body.is_some() {
            hm.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        self.authorize(&method, &url, &bytes, &mut hm)?;
        let resp = self
            .http
            .request(method, &url)
            .headers(hm)
            .body(bytes)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport(&url, &e))?;
        let status = resp.status();
        let response_headers = resp.headers().clone();
        let text = resp.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        if status == http::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(refusal(status, url, &text));
        }
        serde_json::from_slice(&text)
            .map(|v| Some((v, response_headers)))
            .map_err(|e| ClientError::Decode {
                url,
                reason: e.to_string(),
            })
    }

    /// Adds the caller's credentials to `hm`: the bearer token, or the request's signature.
    pub(crate) fn authorize(
        &self,
        method: &http::Method,
        url: &str,
        bytes: &[u8],
        hm: &mut http::HeaderMap,
    ) -> Result<(), ClientError> {
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(t) => {
                let v = http::HeaderValue::try_from(format!("Bearer {t}")).map_err(|_| ClientError::Decode {
                    url: url.to_owned(),
                    reason: "the API token is not a valid header value".into(),
                })?;
                hm.insert(http::header::AUTHORIZATION, v);
            }
            Auth::Signed(signer) => {
                let uri: http::Uri = url.parse().map_err(|e| ClientError::Decode {
                    url: url.to_owned(),
                    reason: format!("{e}"),
                })?;
                signer
                    .sign(method, &uri, hm, bytes, now_secs())
                    .map_err(|e| ClientError::Decode {
                        url: url.to_owned(),
                        reason: format!("signing: {e}"),
                    })?;
            }
        }
        Ok(())
    }

    /// A request whose answer has a body.
    pub(crate) async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<T, ClientError> {
        self.request(method, path, body, headers, timeout)
            .await?
            .ok_or_else(|| ClientError::Decode {
                url: format!("{}{path}", self.base),
                reason: "no content where a body was expected".into(),
            })
    }

    /// A request answered with `204 No Content` (a body, if any, is not read).
    async fn send<B: Serialize>(
        &self,
        method: http::Method,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.request::<_, serde_json::Value>(method, path, Some(body), &[], timeout)
            .await
            .map(|_| ())
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(http::Method::GET, path, None, &[], TIMEOUT).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.call(http::Method::POST, path, Some(body), &[], TIMEOUT).await
    }

    // Operators.
    pub async fn create_provider(&self, name: &str) -> Result<AccountCreated, ClientError> {
        self.post("/api/v1/providers", &CreateNamed { name: name.into() }).await
    }
    pub async fn providers(&self) -> Result<Vec<ProviderView>, ClientError> {
        self.get_all("/api/v1/providers").await
    }
    pub async fn create_customer(&self, name: &str) -> Result<AccountCreated, ClientError> {
        self.post("/api/v1/customers", &CreateNamed { name: name.into() }).await
    }
    pub async fn keys(&self) -> Result<Vec<KeyView>, ClientError> {
        self.get_all("/api/v1/keys").await
    }
    pub async fn save_key(&self, key: &SaveKey) -> Result<KeyView, ClientError> {
        self.post("/api/v1/keys", key).await
    }
    pub async fn customers(&self) -> Result<Vec<CustomerView>, ClientError> {
        self.get_all("/api/v1/customers").await
    }
    pub async fn audit(&self, after: i64, limit: i64) -> Result<Vec<AuditEntryView>, ClientError> {
        self.get(&format!("/api/v1/audit?after={after}&limit={limit}")).await
    }

    // Providers.
    pub async fn create_enrollment_token(
        &self,
        provider_id: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<EnrollmentTokenView, ClientError> {
        self.post(
            &format!("/api/v1/providers/{provider_id}/enrollment-tokens"),
            &CreateEnrollmentToken { ttl_seconds },
        )
        .await
    }
    pub async fn agents(&self) -> Result<Vec<AgentView>, ClientError> {
        self.get_all("/api/v1/agents").await
    }
    pub async fn agent(&self, id: &str) -> Result<AgentView, ClientError> {
        self.get(&format!("/api/v1/agents/{id}")).await
    }
    pub async fn revoke_agent(&self, id: &str) -> Result<AgentView, ClientError> {
        self.post(&format!("/api/v1/agents/{id}/revoke"), &serde_json::json!({}))
            .await
    }
    pub async fn agent_templates(&self, id: &str) -> Result<Vec<TemplateView>, ClientError> {
        self.get(&format!("/api/v1/agents/{id}/templates")).await
    }
    pub async fn provider_templates(&self, provider_id: &str) -> Result<Vec<TemplateView>, ClientError> {
        self.get(&format!("/api/v1/providers/{provider_id}/templates")).await
    }
    pub async fn create_offering(&self, spec: &OfferingSpec) -> Result<OfferingView, ClientError> {
        self.post("/api/v1/offerings", spec).await
    }
    pub async fn withdraw_offering(&self, id: &str) -> Result<OfferingView, ClientError> {
        self.post(&format!("/api/v1/offerings/{id}/withdraw"), &serde_json::json!({}))
            .await
    }
    pub async fn pending_provision(&self, pubkey_hex: &str) -> Result<Vec<PendingContract>, ClientError> {
        self.get_all(&format!("/api/v1/providers/{pubkey_hex}/contracts/pending-provision"))
            .await
    }

    // Customers (and everyone: discovery).
    /// `query` is the query string without `?` (`cores=2&region=eu`), or empty.
    pub async fn offerings(&self, query: &str) -> Result<Vec<OfferingView>, ClientError> {
        self.get_all(&format!("/api/v1/offerings?{query}")).await
    }
    pub async fn offering(&self, id: &str) -> Result<OfferingView, ClientError> {
        self.get(&format!("/api/v1/offerings/{id}")).await
    }
    pub async fn create_order(
        &self,
        order: &CreateOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, ClientError> {
        let headers: Vec<(&str, &str)> = idempotency_key.map(|k| ("idempotency-key", k)).into_iter().collect();
        self.call(http::Method::POST, "/api/v1/orders", Some(order), &headers, TIMEOUT)
            .await
    }
    /// Places a machine on a chosen agent and backend (providers, operators).
    pub async fn create_instance(&self, req: &CreateInstance, key: Option<&str>) -> Result<Accepted, ClientError> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        self.call(http::Method::POST, "/api/v1/instances", Some(req), &headers, TIMEOUT)
            .await
    }
    pub async fn instances(&self) -> Result<Vec<InstanceView>, ClientError> {
        self.get_all("/api/v1/instances").await
    }
    /// The instances with `status` (as the API filters them).
    pub async fn instances_with_status(&self, status: &str) -> Result<Vec<InstanceView>, ClientError> {
        // Statuses are lowercase words; anything else is the server's to refuse, sent as typed
        // but escaped.
        let q: String = status
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.get_all(&format!("/api/v1/instances?status={q}")).await
    }
    pub async fn instance(&self, id: &str) -> Result<InstanceView, ClientError> {
        self.get(&format!("/api/v1/instances/{id}")).await
    }
    /// `action`: `provision`, `start`, `stop`, `reboot`, `terminate`.
    pub async fn operation(&self, id: &str) -> Result<OperationView, ClientError> {
        self.get(&format!("/api/v1/operations/{id}")).await
    }
    /// Answers an operation that waits for an operator (a machine built by hand).
    pub async fn submit_input(
        &self,
        operation_id: &str,
        input: &OperatorInput,
    ) -> Result<OperatorInputView, ClientError> {
        self.post(&format!("/api/v1/operations/{operation_id}/input"), input)
            .await
    }
    /// The operator's input to an operation, and whether its agent applied it.
    pub async fn operation_input(&self, operation_id: &str) -> Result<OperatorInputView, ClientError> {
        self.get(&format!("/api/v1/operations/{operation_id}/input")).await
    }
    /// Long-polls until the operation is done or `wait` (at most 60 s) passes.
    pub async fn wait_operation(&self, id: &str, wait: Duration) -> Result<OperationView, ClientError> {
        let path = format!("/api/v1/operations/{id}?wait={}s", wait.as_secs().max(1));
        self.call::<(), _>(http::Method::GET, &path, None, &[], wait + Duration::from_secs(30))
            .await
    }

    // Agents (signed).
    /// Enrolls `key`'s public half with a setup token. The request is signed by `key` itself
    /// (keyid [`ENROLL_KEYID`]), so the control plane knows the agent holds the key it enrolls.
    pub async fn enroll(
        &self,
        token: &str,
        name: &str,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<AgentView, ClientError> {
        use base64::Engine as _;
        let body = EnrollAgent {
            token: token.into(),
            name: name.into(),
            public_key: base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes()),
        };
        let signed = Client {
            auth: Auth::Signed(RequestSigner::new(key.clone(), ENROLL_KEYID)),
            ..self.clone()
        };
        signed.post("/api/v1/agents/enroll", &body).await
    }
    pub async fn me(&self) -> Result<AgentView, ClientError> {
        self.get("/api/v1/agent/me").await
    }
    /// Long-polls for work for up to `wait`; `None` when there was none.
    pub async fn claim(&self, wait: Duration) -> Result<Option<Claimed>, ClientError> {
        let path = format!("/api/v1/agent/claim?wait={}ms", wait.as_millis());
        self.request::<serde_json::Value, Claimed>(
            http::Method::POST,
            &path,
            Some(&serde_json::json!({})),
            &[],
            wait + Duration::from_secs(30),
        )
        .await
    }
    /// Long-polls for up to `wait` for an operator's input to the operation this agent holds;
    /// `None` when none came.
    pub async fn wait_input(
        &self,
        operation_id: &str,
        generation: i64,
        wait: Duration,
    ) -> Result<Option<OperatorInput>, ClientError> {
        let path = format!(
            "/api/v1/agent/operations/{operation_id}/input/wait?wait={}ms",
            wait.as_millis()
        );
        self.request(
            http::Method::POST,
            &path,
            Some(&LeaseRef { generation }),
            &[],
            wait + Duration::from_secs(30),
        )
        .await
    }
    /// Tells the control plane the agent took the operator's input (`error`: not applied, why).
    pub async fn take_input(
        &self,
        operation_id: &str,
        generation: i64,
        error: Option<String>,
    ) -> Result<(), ClientError> {
        self.send(
            http::Method::POST,
            &format!("/api/v1/agent/operations/{operation_id}/input/taken"),
            &InputTaken { generation, error },
            TIMEOUT,
        )
        .await
    }
    pub async fn renew(&self, operation_id: &str, generation: i64) -> Result<LeaseView, ClientError> {
        self.post(
            &format!("/api/v1/agent/operations/{operation_id}/renew"),
            &LeaseRef { generation },
        )
        .await
    }
    pub async fn release(&self, operation_id: &str, generation: i64) -> Result<(), ClientError> {
        self.send(
            http::Method::POST,
            &format!("/api/v1/agent/operations/{operation_id}/release"),
            &LeaseRef { generation },
            TIMEOUT,
        )
        .await
    }
    pub async fn report(
        &self,
        operation_id: &str,
        generation: i64,
        events: Vec<EventReport>,
    ) -> Result<(), ClientError> {
        self.send(
            http::Method::POST,
            &format!("/api/v1/agent/operations/{operation_id}/events"),
            &ReportEvents { generation, events },
            TIMEOUT,
        )
        .await
    }
    pub async fn complete(
        &self,
        operation_id: &str,
        generation: i64,
        outcome: Completion,
    ) -> Result<OperationView, ClientError> {
        self.post(
            &format!("/api/v1/agent/operations/{operation_id}/complete"),
            &Complete { generation, outcome },
        )
        .await
    }
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), ClientError> {
        self.send(
            http::Method::POST,
            "/api/v1/agent/heartbeat",
            hb,
            Duration::from_secs(30),
        )
        .await
    }
    pub async fn report_templates(&self, templates: Vec<TemplateReport>) -> Result<(), ClientError> {
        self.send(
            http::Method::PUT,
            "/api/v1/agent/templates",
            &TemplatesReport { templates },
            Duration::from_secs(30),
        )
        .await
    }
}

/// A request that did not get an answer: the cause, with what to set when the server's
/// certificate is not trusted.
pub(crate) fn transport(url: &str, e: &reqwest::Error) -> ClientError {
    ClientError::Transport {
        url: url.to_owned(),
        reason: berth_tls::describe_failure(e, TRUST_HINT).unwrap_or_else(|| error_chain(e)),
    }
}

/// A refusal: the problem document, or the status and the start of the body.
pub(crate) fn refusal(status: http::StatusCode, url: String, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(p) => ClientError::Problem(Box::new(p)),
        Err(_) => ClientError::Status {
            status: status.as_u16(),
            url,
            body: String::from_utf8_lossy(body).chars().take(500).collect(),
        },
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The target of `rel="next"` in a `Link` header (RFC 8288), if any.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_found_in_link() {
        assert_eq!(
            next_link("</api/v1/instances?after=a>; rel=\"next\"").as_deref(),
            Some("/api/v1/instances?after=a")
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
        assert_eq!(next_link("garbage"), None);
    }
}
