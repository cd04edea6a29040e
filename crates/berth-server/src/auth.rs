//! Who is calling, and what they may touch. Operators, providers and customers send a bearer API
//! token; agents sign every request (RFC 9421, keyid = agent id) and the server checks the key is
//! enrolled and not revoked, the digest, the clock skew, and that the nonce is new across every
//! replica (the nonce table). [`Authed`] reads the body once (within the size limit),
//! authenticates, then parses the body, so signatures cover exactly the bytes parsed.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use base64::Engine as _;
use berth_api::httpsig::{self, SigError};
use berth_store::{InstanceRecord, Role};

use crate::AppState;
use crate::problem::{ApiError, ApiResult, parse_json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Operator,
    Provider(String),
    Customer(String),
    Agent {
        id: String,
        provider_id: String,
    },
    /// A request signed by the Ed25519 key (standard base64) it asks to enroll.
    Enrolling(String),
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Operator => "operator".into(),
            Caller::Provider(p) => format!("provider:{p}"),
            Caller::Customer(c) => format!("customer:{c}"),
            Caller::Agent { id, .. } => format!("agent:{id}"),
            Caller::Enrolling(_) => "enrolling".into(),
        }
    }

    pub fn require_authenticated(&self) -> ApiResult<()> {
        match self {
            Caller::Anonymous => Err(ApiError::Unauthenticated(
                "send `Authorization: Bearer <API token>` or sign the request".into(),
            )),
            _ => Ok(()),
        }
    }

    pub fn require_operator(&self) -> ApiResult<()> {
        self.require_authenticated()?;
        match self {
            Caller::Operator => Ok(()),
            _ => Err(ApiError::Forbidden("only operators may do this".into())),
        }
    }

    pub fn require_customer(&self) -> ApiResult<&str> {
        self.require_authenticated()?;
        match self {
            Caller::Customer(c) => Ok(c),
            _ => Err(ApiError::Forbidden("only customers place orders".into())),
        }
    }

    pub fn require_provider(&self) -> ApiResult<&str> {
        self.require_authenticated()?;
        match self {
            Caller::Provider(p) => Ok(p),
            _ => Err(ApiError::Forbidden("only providers may do this".into())),
        }
    }

    pub fn require_agent(&self) -> ApiResult<(&str, &str)> {
        self.require_authenticated()?;
        match self {
            Caller::Agent { id, provider_id } => Ok((id, provider_id)),
            _ => Err(ApiError::Forbidden("only signed agent requests may do this".into())),
        }
    }

    /// The provider whose things this caller manages: `None` for operators (all of them).
    /// Customers manage no provider's things.
    pub fn provider_scope(&self) -> ApiResult<Option<&str>> {
        self.require_authenticated()?;
        match self {
            Caller::Operator => Ok(None),
            Caller::Provider(p) | Caller::Agent { provider_id: p, .. } => Ok(Some(p)),
            _ => Err(ApiError::Forbidden("only operators and providers may do this".into())),
        }
    }

    /// Whether this caller manages `provider_id`'s things (operators: all).
    pub fn manages_provider(&self, provider_id: &str) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Provider(p) | Caller::Agent { provider_id: p, .. } => p == provider_id,
            _ => false,
        }
    }

    pub fn sees_instance(&self, i: &InstanceRecord) -> bool {
        match self {
            Caller::Customer(c) => i.customer_id.as_deref() == Some(c),
            other => other.manages_provider(&i.provider_id),
        }
    }
}

/// How a body is read: nothing, or JSON of a type.
pub trait FromBody: Sized {
    fn from_body(content_type: Option<&str>, bytes: &Bytes) -> ApiResult<Self>;
}

/// No body expected: empty, `{}` or `null`.
pub struct Empty;

impl FromBody for Empty {
    fn from_body(_: Option<&str>, bytes: &Bytes) -> ApiResult<Self> {
        let t = std::str::from_utf8(bytes).unwrap_or("x").trim();
        if t.is_empty() || t == "{}" || t == "null" {
            Ok(Empty)
        } else {
            Err(ApiError::invalid(
                "body",
                "this request takes no body (send nothing or `{}`)",
            ))
        }
    }
}

/// A JSON body of `T` (unknown fields refused, errors name the field), parsed when the request
/// arrives but reported only when the handler takes it with [`Json::get`] — after it checked who
/// is calling, so a caller without the right learns that first, not what their body lacks.
pub struct Json<T>(ApiResult<T>);

impl<T> Json<T> {
    /// The body, or why it does not fit.
    pub fn get(self) -> ApiResult<T> {
        self.0
    }
}

impl<T: serde::de::DeserializeOwned> FromBody for Json<T> {
    fn from_body(content_type: Option<&str>, bytes: &Bytes) -> ApiResult<Self> {
        let ct = content_type.unwrap_or("");
        if !ct
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        {
            return Ok(Json(Err(ApiError::Unsupported(format!(
                "send the body as `Content-Type: application/json` (got {:?})",
                ct
            )))));
        }
        Ok(Json(parse_json(bytes)))
    }
}

/// The authenticated caller and the parsed body of a request.
pub struct Authed<T = Empty> {
    pub caller: Caller,
    pub body: T,
}

impl<T: FromBody + Send> FromRequest<AppState> for Authed<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let limit = state.cfg.api.body_limit_bytes;
        let bytes = match axum::body::to_bytes(body, limit).await {
            Ok(b) => b,
            Err(e) if crate::serve::is_timeout(&e) => return Err(ApiError::BodyTimeout),
            Err(_) => return Err(ApiError::TooLarge(limit)),
        };
        let caller = authenticate(state, &parts, &bytes).await?;
        crate::access::note_caller(&parts.extensions, caller.actor());
        let ct = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let body = match T::from_body(ct, &bytes) {
            Ok(b) => b,
            // A body where none is taken: say first that the caller is unknown.
            Err(e) => {
                caller.require_authenticated()?;
                return Err(e);
            }
        };
        Ok(Authed { caller, body })
    }
}

/// A caller already authenticated by a layer in this process (the dashboard's session), put in
/// a request's extensions. A client cannot set extensions, so only in-process callers carry it;
/// the handlers then authorize it exactly as they would the same principal's bearer token.
#[derive(Debug, Clone)]
pub struct InProcess(pub Caller);

async fn authenticate(state: &AppState, parts: &axum::http::request::Parts, body: &[u8]) -> ApiResult<Caller> {
    if let Some(InProcess(c)) = parts.extensions.get::<InProcess>() {
        return Ok(c.clone());
    }
    if parts.headers.contains_key("signature-input") || parts.headers.contains_key("signature") {
        if httpsig::signature_keyid(&parts.headers)? == berth_api::client::ENROLL_KEYID {
            return verify_enrollment(state, parts, body).await;
        }
        return verify_agent(state, parts, body).await;
    }
    let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let token = auth
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| ApiError::Unauthenticated("the Authorization header must be `Bearer <API token>`".into()))?;
    match state.store.token_principal(token, crate::now_ms()).await? {
        Some((Role::Operator, _)) => Ok(Caller::Operator),
        Some((Role::Provider, p)) => Ok(Caller::Provider(p)),
        Some((Role::Customer, c)) => Ok(Caller::Customer(c)),
        None => Err(ApiError::Unauthenticated("unknown or revoked API token".into())),
    }
}

/// An enrollment signed by the key it enrolls (the body's `public_key`): checked like an
/// agent's request, nonce included.
async fn verify_enrollment(state: &AppState, parts: &axum::http::request::Parts, body: &[u8]) -> ApiResult<Caller> {
    let public_key = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["public_key"].as_str().map(str::to_owned))
        .ok_or_else(|| ApiError::invalid("public_key", "the enrollment names the key that signs it"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&public_key)
        .ok()
        .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
        .and_then(|raw| ed25519_dalek::VerifyingKey::from_bytes(&raw).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "public_key",
                "must be the standard base64 of a 32-byte Ed25519 public key",
            )
        })?;
    let now = crate::now_ms() / 1000;
    let skew = state.cfg.agents.max_clock_skew_seconds as i64;
    let verified = httpsig::verify_request(&parts.method, &parts.uri, &parts.headers, body, now, skew, &|id| {
        (id == berth_api::client::ENROLL_KEYID).then_some(key)
    })?;
    let keyid = format!("enroll:{public_key}");
    if !state
        .store
        .nonce_first_use(&keyid, &verified.nonce, verified.remember_until * 1000, crate::now_ms())
        .await?
    {
        return Err(SigError::Replayed.into());
    }
    Ok(Caller::Enrolling(public_key))
}

async fn verify_agent(state: &AppState, parts: &axum::http::request::Parts, body: &[u8]) -> ApiResult<Caller> {
    let keyid = httpsig::signature_keyid(&parts.headers)?;
    // An unknown id and a revoked agent are refused alike.
    let agent = match state.store.agent(&keyid).await {
        Ok(a) if a.revoked_at.is_none() => Some(a),
        Ok(_) | Err(berth_store::StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let key = agent.as_ref().and_then(|a| {
        let raw = base64::engine::general_purpose::STANDARD.decode(&a.public_key).ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw.try_into().ok()?).ok()
    });
    let now = crate::now_ms() / 1000;
    let skew = state.cfg.agents.max_clock_skew_seconds as i64;
    // The URI as the agent signed it: path and query (the authority is not covered).
    let verified = httpsig::verify_request(&parts.method, &parts.uri, &parts.headers, body, now, skew, &|id| {
        if id == keyid { key } else { None }
    })?;
    if !state
        .store
        .nonce_first_use(
            &verified.keyid,
            &verified.nonce,
            verified.remember_until * 1000,
            crate::now_ms(),
        )
        .await?
    {
        return Err(SigError::Replayed.into());
    }
    let agent = agent.ok_or_else(|| ApiError::from(SigError::UnknownKey(keyid)))?;
    Ok(Caller::Agent {
        id: agent.id,
        provider_id: agent.provider_id,
    })
}
