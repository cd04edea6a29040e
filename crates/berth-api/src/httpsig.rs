//! RFC 9421 HTTP Message Signatures with Ed25519: the generic parts (components, signature base,
//! signing, verifying one labelled signature) and Berth's profile on top of them (every request
//! covers `@method`, `@path`, `@query` and `content-digest`, and carries `created`, `nonce`,
//! `keyid` and `alg="ed25519"`; the verifier checks the clock skew and leaves the replay check of
//! the nonce to the caller).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use http::HeaderMap;
use sfv::{BareItem, Dictionary, ListEntry, Parser};

use crate::digest::{self, DIGEST_HEADER};

/// The label of Berth's signature in `Signature-Input` and `Signature`.
pub const LABEL: &str = "berth";
pub const ALG: &str = "ed25519";
/// Default allowed difference between the signer's `created` and the verifier's clock.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 300;

/// Why a signature was refused. Each variant has a stable code (`code()`) for problem documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("the request is not signed: no {0} header")]
    Missing(&'static str),
    #[error("malformed {field}: {reason}")]
    Malformed { field: &'static str, reason: String },
    #[error("the signature does not cover {0}")]
    NotCovered(String),
    #[error("the signature lacks the `{0}` parameter")]
    MissingParam(&'static str),
    #[error("unsupported signature algorithm {0:?} (expected \"ed25519\")")]
    Algorithm(String),
    #[error("the request has no {0} to cover")]
    NoSuchComponent(String),
    #[error("unknown or revoked key {0:?}")]
    UnknownKey(String),
    #[error("the signature was created {created}, outside the allowed skew of {max_skew}s around {now}")]
    Skew { created: i64, now: i64, max_skew: i64 },
    #[error("the signature expired at {0}")]
    Expired(i64),
    #[error("the body does not match its content-digest")]
    DigestMismatch,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the nonce was already used")]
    Replayed,
}

impl SigError {
    pub fn code(&self) -> &'static str {
        match self {
            SigError::Missing(_) => "signature_missing",
            SigError::Malformed { .. } => "signature_malformed",
            SigError::NotCovered(_) | SigError::MissingParam(_) | SigError::NoSuchComponent(_) => {
                "signature_incomplete"
            }
            SigError::Algorithm(_) => "signature_algorithm",
            SigError::UnknownKey(_) => "unknown_key",
            SigError::Skew { .. } | SigError::Expired(_) => "signature_expired",
            SigError::DigestMismatch => "digest_mismatch",
            SigError::BadSignature => "bad_signature",
            SigError::Replayed => "nonce_replayed",
        }
    }
}

fn malformed(field: &'static str, reason: impl Into<String>) -> SigError {
    SigError::Malformed {
        field,
        reason: reason.into(),
    }
}

/// What a signature covers: derived components and header fields (lowercase names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Method,
    Authority,
    Path,
    Query,
    Field(String),
}

impl Component {
    pub fn name(&self) -> &str {
        match self {
            Component::Method => "@method",
            Component::Authority => "@authority",
            Component::Path => "@path",
            Component::Query => "@query",
            Component::Field(f) => f,
        }
    }

    fn parse(s: &str) -> Result<Component, SigError> {
        Ok(match s {
            "@method" => Component::Method,
            "@authority" => Component::Authority,
            "@path" => Component::Path,
            "@query" => Component::Query,
            d if d.starts_with('@') => {
                return Err(malformed(
                    "Signature-Input",
                    format!("derived component {d} is not supported"),
                ));
            }
            f if f
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !f.is_empty() =>
            {
                Component::Field(f.to_owned())
            }
            other => {
                return Err(malformed(
                    "Signature-Input",
                    format!("{other:?} is not a lowercase field name"),
                ));
            }
        })
    }
}

/// The signature parameters Berth understands, in the order it writes them.
const PARAM_NAMES: [&str; 5] = ["created", "expires", "nonce", "keyid", "alg"];

/// The signature parameters: the covered components in order, then the parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params {
    pub components: Vec<Component>,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub alg: Option<String>,
    pub keyid: Option<String>,
    /// Parameters in the order they were given (for re-serialising a received signature).
    order: Vec<&'static str>,
}

fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Params {
    /// Parameters are written in the order of `PARAM_NAMES` (`created`, `expires`, `nonce`, `keyid`, `alg`).
    pub fn new(components: Vec<Component>) -> Params {
        Params {
            components,
            ..Params::default()
        }
    }

    fn order(&self) -> Vec<&'static str> {
        if !self.order.is_empty() {
            return self.order.clone();
        }
        let present = [
            self.created.is_some(),
            self.expires.is_some(),
            self.nonce.is_some(),
            self.keyid.is_some(),
            self.alg.is_some(),
        ];
        PARAM_NAMES
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The serialised inner list with its parameters (the `@signature-params` value).
    pub fn serialize(&self) -> String {
        let names: Vec<String> = self.components.iter().map(|c| sf_string(c.name())).collect();
        let mut out = format!("({})", names.join(" "));
        for p in self.order() {
            let _ = match p {
                "created" => write!(out, ";created={}", self.created.unwrap_or_default()),
                "expires" => write!(out, ";expires={}", self.expires.unwrap_or_default()),
                "nonce" => write!(out, ";nonce={}", sf_string(self.nonce.as_deref().unwrap_or_default())),
                "keyid" => write!(out, ";keyid={}", sf_string(self.keyid.as_deref().unwrap_or_default())),
                "alg" => write!(out, ";alg={}", sf_string(self.alg.as_deref().unwrap_or_default())),
                _ => Ok(()),
            };
        }
        out
    }

    fn from_entry(entry: &ListEntry) -> Result<Params, SigError> {
        let ListEntry::InnerList(list) = entry else {
            return Err(malformed("Signature-Input", "the entry is not an inner list"));
        };
        let mut components = Vec::new();
        for item in &list.items {
            let BareItem::String(s) = &item.bare_item else {
                return Err(malformed("Signature-Input", "a component is not a string"));
            };
            if !item.params.is_empty() {
                return Err(malformed("Signature-Input", "component parameters are not supported"));
            }
            let c = Component::parse(s.as_str())?;
            if components.contains(&c) {
                return Err(malformed("Signature-Input", format!("{} is listed twice", c.name())));
            }
            components.push(c);
        }
        let mut p = Params::new(components);
        for (k, v) in &list.params {
            let int = || match v {
                BareItem::Integer(i) => Ok(i64::from(*i)),
                _ => Err(malformed(
                    "Signature-Input",
                    format!("{} must be an integer", k.as_str()),
                )),
            };
            let string = || match v {
                BareItem::String(s) => Ok(s.as_str().to_owned()),
                _ => Err(malformed("Signature-Input", format!("{} must be a string", k.as_str()))),
            };
            let Some(&name) = PARAM_NAMES.iter().find(|n| **n == k.as_str()) else {
                return Err(malformed(
                    "Signature-Input",
                    format!("parameter {:?} is not supported", k.as_str()),
                ));
            };
            match name {
                "created" => p.created = Some(int()?),
                "expires" => p.expires = Some(int()?),
                "nonce" => p.nonce = Some(string()?),
                "keyid" => p.keyid = Some(string()?),
                _ => p.alg = Some(string()?),
            }
            p.order.push(name);
        }
        Ok(p)
    }
}

/// The parts of a request a signature can cover.
pub struct Message<'a> {
    pub method: &'a str,
    pub authority: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl<'a> Message<'a> {
    /// From a method, a URI (origin-form or absolute) and the headers.
    pub fn new(method: &'a http::Method, uri: &'a http::Uri, headers: &'a HeaderMap) -> Message<'a> {
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()));
        Message {
            method: method.as_str(),
            authority,
            path: uri.path(),
            query: uri.query(),
            headers,
        }
    }

    fn value(&self, c: &Component) -> Result<String, SigError> {
        Ok(match c {
            Component::Method => self.method.to_owned(),
            Component::Authority => self
                .authority
                .ok_or_else(|| SigError::NoSuchComponent("@authority".into()))?
                .to_ascii_lowercase(),
            Component::Path => {
                if self.path.is_empty() {
                    "/".to_owned()
                } else {
                    self.path.to_owned()
                }
            }
            Component::Query => format!("?{}", self.query.unwrap_or("")),
            Component::Field(name) => {
                let values: Vec<&str> = self
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| v.to_str().map(str::trim))
                    .collect::<Result<_, _>>()
                    .map_err(|_| malformed("headers", format!("{name} is not visible ASCII")))?;
                if values.is_empty() {
                    return Err(SigError::NoSuchComponent(name.clone()));
                }
                values.join(", ")
            }
        })
    }
}

/// The signature base (RFC 9421 section 2.5) of `msg` for `params`.
pub fn signature_base(msg: &Message, params: &Params) -> Result<String, SigError> {
    let mut base = String::new();
    for c in &params.components {
        let v = msg.value(c)?;
        if v.contains('\n') {
            return Err(malformed("headers", format!("{} holds a newline", c.name())));
        }
        let _ = writeln!(base, "\"{}\": {v}", c.name());
    }
    let _ = write!(base, "\"@signature-params\": {}", params.serialize());
    Ok(base)
}

/// Signs `msg`; returns the `Signature-Input` and `Signature` header values for `label`.
pub fn sign(msg: &Message, params: &Params, label: &str, key: &SigningKey) -> Result<(String, String), SigError> {
    let base = signature_base(msg, params)?;
    let sig = key.sign(base.as_bytes());
    Ok((
        format!("{label}={}", params.serialize()),
        format!("{label}=:{}:", B64.encode(sig.to_bytes())),
    ))
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, SigError> {
    let mut all = headers.get_all(name).iter();
    let v = all.next().ok_or(SigError::Missing(name))?;
    if all.next().is_some() {
        return Err(malformed(name, "given more than once"));
    }
    v.to_str().map_err(|_| malformed(name, "not visible ASCII"))
}

fn dictionary(headers: &HeaderMap, name: &'static str) -> Result<Dictionary, SigError> {
    Parser::new(header(headers, name)?)
        .parse()
        .map_err(|e| malformed(name, e.to_string()))
}

/// The parameters of signature `label` and whether its signature verifies with the key that
/// `key_for` returns for its `keyid` (or the one key given when there is no `keyid`).
pub fn verify_signature(
    msg: &Message,
    label: &str,
    key_for: &dyn Fn(Option<&str>) -> Option<VerifyingKey>,
) -> Result<Params, SigError> {
    let params = labelled_params(msg.headers, label)?;
    let key = key_for(params.keyid.as_deref())
        .ok_or_else(|| SigError::UnknownKey(params.keyid.clone().unwrap_or_default()))?;
    check_signature(msg, label, &params, &key)?;
    Ok(params)
}

/// The parameters of the signature labelled `label` in `Signature-Input`.
fn labelled_params(headers: &HeaderMap, label: &str) -> Result<Params, SigError> {
    let inputs = dictionary(headers, "signature-input")?;
    let entry = inputs
        .get(label)
        .ok_or_else(|| malformed("signature-input", format!("no signature labelled {label:?}")))?;
    Params::from_entry(entry)
}

/// Whether the `Signature` labelled `label` verifies over `msg` and `params` with `key`.
fn check_signature(msg: &Message, label: &str, params: &Params, key: &VerifyingKey) -> Result<(), SigError> {
    let sigs = dictionary(msg.headers, "signature")?;
    let sig_bytes = match sigs.get(label) {
        Some(ListEntry::Item(item)) => match &item.bare_item {
            BareItem::ByteSequence(b) => b.clone(),
            _ => return Err(malformed("signature", "the value is not a byte sequence")),
        },
        _ => return Err(malformed("signature", format!("no signature labelled {label:?}"))),
    };
    if let Some(alg) = &params.alg
        && alg != ALG
    {
        return Err(SigError::Algorithm(alg.clone()));
    }
    let sig =
        Signature::from_slice(&sig_bytes).map_err(|_| malformed("signature", "not a 64-byte Ed25519 signature"))?;
    let base = signature_base(msg, params)?;
    key.verify_strict(base.as_bytes(), &sig)
        .map_err(|_| SigError::BadSignature)
}

/// A signer with Berth's profile: one agent (or user) key and its id.
#[derive(Clone)]
pub struct RequestSigner {
    key: SigningKey,
    keyid: String,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner")
            .field("keyid", &self.keyid)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The components every Berth-signed request covers.
pub fn profile_components() -> Vec<Component> {
    vec![
        Component::Method,
        Component::Path,
        Component::Query,
        Component::Field(DIGEST_HEADER.to_owned()),
    ]
}

impl RequestSigner {
    pub fn new(key: SigningKey, keyid: impl Into<String>) -> RequestSigner {
        RequestSigner {
            key,
            keyid: keyid.into(),
        }
    }

    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// Adds `content-digest`, `signature-input` and `signature` to `headers` for a request of
    /// `method` to `uri` with `body`, created at `now` (Unix seconds) with a fresh random nonce.
    pub fn sign(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), SigError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| malformed("nonce", e.to_string()))?;
        self.sign_with_nonce(method, uri, headers, body, now, &hex::encode(nonce))
    }

    /// As [`RequestSigner::sign`] with a given nonce (tests).
    pub fn sign_with_nonce(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
        body: &[u8],
        now: i64,
        nonce: &str,
    ) -> Result<(), SigError> {
        let value = |s: String| http::HeaderValue::try_from(s).map_err(|e| malformed("headers", e.to_string()));
        headers.insert(DIGEST_HEADER, value(digest::content_digest(body))?);
        let params = Params {
            created: Some(now),
            nonce: Some(nonce.to_owned()),
            keyid: Some(self.keyid.clone()),
            alg: Some(ALG.to_owned()),
            ..Params::new(profile_components())
        };
        let (input, signature) = sign(&Message::new(method, uri, headers), &params, LABEL, &self.key)?;
        headers.insert("signature-input", value(input)?);
        headers.insert("signature", value(signature)?);
        Ok(())
    }
}

/// A verified Berth request: who signed it, when, with which nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub keyid: String,
    pub created: i64,
    pub nonce: String,
    /// Until when (Unix seconds, exclusive) the signature passes the skew check: the verifier's
    /// clock is read in whole seconds, so through the whole second `created + max_skew`. The
    /// caller must refuse `(keyid, nonce)` seen before, and remember it until then.
    pub remember_until: i64,
}

/// Verifies a request under Berth's profile: the `berth` signature covers the profile's
/// components, carries `created` within `max_skew` of `now`, a nonce and a known `keyid`; the
/// body matches its `content-digest`; the signature verifies. Refusing a nonce seen before is
/// the caller's (it needs storage every server replica shares): see [`Verified::remember_until`].
pub fn verify_request(
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    max_skew: i64,
    key_for: &dyn Fn(&str) -> Option<VerifyingKey>,
) -> Result<Verified, SigError> {
    // Parse and check the cheap things before any cryptography.
    let params = labelled_params(headers, LABEL)?;
    for c in profile_components() {
        if !params.components.contains(&c) {
            return Err(SigError::NotCovered(c.name().to_owned()));
        }
    }
    let created = params.created.ok_or(SigError::MissingParam("created"))?;
    let nonce = params.nonce.clone().ok_or(SigError::MissingParam("nonce"))?;
    let keyid = params.keyid.clone().ok_or(SigError::MissingParam("keyid"))?;
    if (now - created).abs() > max_skew {
        return Err(SigError::Skew { created, now, max_skew });
    }
    if let Some(e) = params.expires
        && e < now
    {
        return Err(SigError::Expired(e));
    }
    let key = key_for(&keyid).ok_or_else(|| SigError::UnknownKey(keyid.clone()))?;
    digest::verify(header(headers, DIGEST_HEADER)?, body)?;
    check_signature(&Message::new(method, uri, headers), LABEL, &params, &key)?;
    if nonce.is_empty() || nonce.len() > 128 {
        return Err(malformed("nonce", "must be 1-128 characters"));
    }
    Ok(Verified {
        keyid,
        created,
        nonce,
        remember_until: created + max_skew + 1,
    })
}

/// The `keyid` of Berth's signature on a request, read before verifying (to look the key up).
pub fn signature_keyid(headers: &HeaderMap) -> Result<String, SigError> {
    labelled_params(headers, LABEL)?
        .keyid
        .ok_or(SigError::MissingParam("keyid"))
}

#[cfg(test)]
mod tests;
