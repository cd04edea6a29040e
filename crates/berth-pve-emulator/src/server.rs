//! HTTP(S) front end: TLS, connection handling, request parsing, auth, schema validation, PVE's envelope.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::RequestRecord;
use crate::api::{ApiError, Ctx, Params, Reply};
use crate::handlers;
use crate::schema::{Schema, ValidationError};
use crate::state::World;

/// PVE's POST body limit (libpve-http-server-perl 5.2.1+).
const MAX_BODY: usize = 512 * 1024;

/// State shared by every connection and task.
pub(crate) struct Shared {
    world: Mutex<World>,
    pub schema: Option<Schema>,
    pub old_error_envelope: bool,
    pub fingerprint: Option<String>,
    pub cert_pem: Option<String>,
    pub base_url: String,
}

impl Shared {
    pub fn new(
        world: World,
        schema: Option<Schema>,
        old_error_envelope: bool,
        tls: Option<&TlsMaterial>,
        base_url: String,
    ) -> Shared {
        Shared {
            world: Mutex::new(world),
            schema,
            old_error_envelope,
            fingerprint: tls.map(|t| t.fingerprint.clone()),
            cert_pem: tls.map(|t| t.cert_pem.clone()),
            base_url,
        }
    }

    /// Locks the world; a poisoned lock (a panicked handler) is recovered rather than propagated.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The generated self-signed certificate.
pub(crate) struct TlsMaterial {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub fingerprint: String,
    pub cert_pem: String,
}

/// Errors while setting up the listener.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    #[error("generating the self-signed certificate failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("building the TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Generates a self-signed cert for 127.0.0.1/localhost and a rustls acceptor serving it.
pub(crate) fn make_tls() -> Result<TlsMaterial, ServerError> {
    use sha2::Digest;
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let der = certified.cert.der().clone();
    let fingerprint = sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let cert_pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        cert_pem,
    })
}

/// Accepts connections until `shutdown` flips to true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => serve_connection(TokioIo::new(s), shared, sd).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                },
                None => serve_connection(TokioIo::new(stream), shared, sd).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Everything known about a request after parsing; used for the request log.
struct Seen {
    method: String,
    path: String,
    params: Vec<(String, String)>,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let received = std::time::Instant::now();
    let method = req.method().as_str().to_string();
    let raw_path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let rel = match raw_path.strip_prefix("/api2/json") {
        Some("") => "/".to_string(),
        Some(r) if r.starts_with('/') => r.to_string(),
        _ => raw_path.clone(),
    };
    let mut seen = Seen {
        method: method.clone(),
        path: rel.clone(),
        params: Vec::new(),
    };

    let resp = process(&shared, req, &method, &raw_path, &rel, &query, &mut seen).await;
    // A real pveproxy answers in milliseconds, not microseconds (`set_latency`).
    let latency = shared.world().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = match resp {
        Ok(reply) => success_response(reply),
        Err(Outcome::Error(e)) => error_response(&e, shared.old_error_envelope),
        Err(Outcome::Unauthorized) => unauthorized_response(),
    };
    // Passwords never reach the request log (cloud-init `cipassword`, CT root `password`).
    let params = seen
        .params
        .into_iter()
        .map(|(k, v)| {
            if matches!(
                k.as_str(),
                "cipassword" | "password" | "encryption-key" | "keyring" | "master-pubkey"
            ) {
                (k, "**********".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    shared.world().record_request(RequestRecord {
        method: seen.method,
        path: seen.path,
        params,
        status: resp.status().as_u16(),
        received,
        answered: std::time::Instant::now(),
    });
    Ok(resp)
}

enum Outcome {
    Error(ApiError),
    Unauthorized,
}

impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Self {
        Outcome::Error(e)
    }
}

async fn process(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    method: &str,
    raw_path: &str,
    rel: &str,
    query: &str,
    seen: &mut Seen,
) -> Result<Reply, Outcome> {
    let not_implemented = |p: &str| ApiError::Status(501, format!("Method '{method} {p}' not implemented"));
    if !raw_path.starts_with("/api2/json") {
        return Err(not_implemented(raw_path).into());
    }
    let headers = req.headers().clone();

    // A body on GET/DELETE is refused while reading the request, before authentication.
    let content_length: usize = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let has_body = content_length > 0 || headers.contains_key(TRANSFER_ENCODING);
    if (method == "GET" || method == "DELETE") && has_body {
        return Err(ApiError::Status(501, format!("Unexpected content for method '{method}'")).into());
    }
    if content_length > MAX_BODY {
        return Err(ApiError::Status(413, "Request Entity Too Large".to_string()).into());
    }

    // Authentication.
    let auth = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::perms::parse_auth_header);
    let (token, auth_delay) = {
        let world = shared.world();
        let token = auth.and_then(|(id, secret)| world.tokens.get(&id).filter(|t| t.secret == secret).cloned());
        (token, world.timings.auth_failure_delay)
    };
    let Some(token) = token else {
        tokio::time::sleep(auth_delay).await;
        return Err(Outcome::Unauthorized);
    };

    // Parameters: body (form or JSON) for POST/PUT, then the query string, which overrides.
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return Err(ApiError::Status(413, "Request Entity Too Large".to_string()).into()),
    };
    let mut params: Vec<(String, String)> = Vec::new();
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if (method == "POST" || method == "PUT") && !body.is_empty() {
        (params, lists) = parse_body(&body, &content_type)?;
    }
    let query_params: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::Status(400, format!("unable to parse query string: {e}")))?;
    for (k, v) in query_params {
        params.retain(|(bk, _)| *bk != k);
        lists.remove(&k);
        params.push((k, v));
    }
    seen.params = params.clone();

    let segs: Vec<String> = rel
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let path = format!("/{}", segs.join("/"));
    seen.path = path.clone();
    let route = handlers::route(method, &segs);

    // Path parameters given again as parameters must agree with the URI.
    if let Some(route) = &route {
        let mut errors = BTreeMap::new();
        for (name, value) in route.path_params() {
            if let Some((_, v)) = params.iter().find(|(k, _)| k == name)
                && *v != value
            {
                errors.insert(
                    name.to_string(),
                    "duplicate parameter (already defined in URI) with conflicting values!".to_string(),
                );
            }
            params.retain(|(k, _)| k != name);
            lists.remove(name);
        }
        if !errors.is_empty() {
            return Err(ApiError::Param(errors).into());
        }
    }

    // Schema validation (the whole point of loading apidata.json).
    if let Some(schema) = &shared.schema {
        match schema.validate(method, &path, &params) {
            Ok(()) => {}
            Err(ValidationError::UnknownPath) | Err(ValidationError::MethodNotAllowed) => {
                return Err(not_implemented(&path).into());
            }
            Err(ValidationError::Params(errors)) => {
                let detail: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {}", v.trim_end())).collect();
                shared
                    .world()
                    .violations
                    .push(format!("{method} {path}: {}", detail.join("; ")));
                return Err(ApiError::Param(errors).into());
            }
        }
    }
    let Some(route) = route else {
        return Err(not_implemented(&path).into());
    };

    // proxyto: a node that is not in the cluster cannot be resolved.
    let unknown_node = route.node.as_deref().filter(|n| shared.world().node(n).is_none());
    if let Some(node) = unknown_node {
        return Err(ApiError::fail(format!(
            "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
        ))
        .into());
    }

    let params = Params { pairs: params, lists };
    let mut ctx = Ctx {
        shared: shared.clone(),
        token,
        params,
        task_fault: None,
    };
    crate::faults::apply(&mut ctx, method, raw_path, &path, &route).await?;
    Ok(handlers::dispatch(&mut ctx, route)?)
}

/// Body parameters as text, plus (JSON bodies only) the arrays among them element by element.
type BodyParams = (Vec<(String, String)>, BTreeMap<String, Vec<String>>);

fn parse_body(body: &Bytes, content_type: &str) -> Result<BodyParams, ApiError> {
    if content_type.starts_with("application/json") {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::Status(400, format!("unable to parse JSON body: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::Status(400, "JSON body must be an object".to_string()));
        };
        let mut lists = BTreeMap::new();
        let pairs = map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                if let Value::Array(items) = &v {
                    lists.insert(k.clone(), items.iter().map(json_text).collect());
                }
                let s = json_text(&v);
                (k, s)
            })
            .collect();
        return Ok((pairs, lists));
    }
    let pairs = serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::Status(400, format!("unable to parse request body: {e}")))?;
    Ok((pairs, BTreeMap::new()))
}

/// A JSON value as the text PVE's handlers see: booleans `1`/`0`, strings unquoted.
fn json_text(v: &Value) -> String {
    match v {
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn base_response(status: u16, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(hyper::header::SERVER, HeaderValue::from_static("pve-api-daemon/3.0"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
    h.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    h.insert(hyper::header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&http_date(std::time::SystemTime::now())) {
        h.insert(hyper::header::EXPIRES, v);
    }
    if status >= 400 {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn success_response(reply: Reply) -> Response<Body> {
    let mut body = json!({ "data": reply.data });
    if let Some(total) = reply.total {
        body["total"] = json!(total);
    }
    if let Some(changes) = reply.changes {
        body["changes"] = json!(changes);
    }
    base_response(200, serde_json::to_vec(&body).unwrap_or_default())
}

pub(crate) fn error_response(err: &ApiError, old_envelope: bool) -> Response<Body> {
    let message = err.to_string();
    let mut body = serde_json::Map::new();
    body.insert("data".into(), Value::Null);
    if let Some(errors) = err.errors() {
        body.insert("errors".into(), json!(errors));
    }
    if !old_envelope {
        body.insert(
            "message".into(),
            Value::String(format!("{}\n", message.trim_end_matches('\n'))),
        );
    }
    let mut resp = base_response(
        err.status(),
        serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    );
    set_reason(&mut resp, &message);
    resp
}

fn unauthorized_response() -> Response<Body> {
    let mut resp = base_response(401, Vec::new());
    set_reason(&mut resp, "Authentication failed!");
    resp
}

/// The reason phrase is the first line of the message (PVE never sends more).
fn set_reason(resp: &mut Response<Body>, message: &str) {
    let first = message.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return;
    }
    let clean: String = first
        .chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' })
        .collect();
    if let Ok(reason) = ReasonPhrase::try_from(clean) {
        resp.extensions_mut().insert(reason);
    }
}

/// RFC 7231 IMF-fixdate.
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {year} {h:02}:{m:02}:{s:02} GMT",
        WD[days.rem_euclid(7) as usize],
        MON[(month - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_date_epoch() {
        assert_eq!(super::http_date(std::time::UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(super::http_date(t), "Tue, 14 Nov 2023 22:13:20 GMT");
    }
}
