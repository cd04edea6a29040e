//! The one place errors become HTTP: every refusal is an RFC 7807 problem document with a stable
//! `code` and, for bad input, the offending `field`. Database detail stays in the server log;
//! callers get a generic message and a status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_api::httpsig::SigError;
use berth_api::wire::Problem;
use berth_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("bad signature: {0}")]
    Signature(#[from] SigError),
    #[error("{0}")]
    Forbidden(String),
    /// Also what a caller gets for something that exists but is not theirs.
    #[error("{0} not found")]
    NotFound(String),
    /// The message alone: the code travels in the problem's `code`, not again in its detail.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive in time (limits.body_timeout_seconds)")]
    BodyTimeout,
    #[error("{0}")]
    Unsupported(String),
    /// The request itself is malformed (a path that is not UTF-8…).
    #[error("{0}")]
    BadRequest(String),
    #[error("this route does not take {0}")]
    MethodNotAllowed(String),
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// Too many requests from one token or address; try again after this many seconds.
    #[error("too many requests; try again in {0} s")]
    RateLimited(u64),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, code, title, field, retryable) = match self {
            ApiError::Invalid { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                "Invalid input",
                Some(field.clone()),
                false,
            ),
            ApiError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                None,
                false,
            ),
            ApiError::Signature(e) => (StatusCode::UNAUTHORIZED, e.code(), "Bad request signature", None, false),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed", None, false),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found", None, false),
            ApiError::Conflict { code, .. } => (
                StatusCode::CONFLICT,
                *code,
                "Conflict",
                None,
                // Waiting helps: the work in the way finishes, or room frees up.
                matches!(*code, "busy" | "no_capacity"),
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Request body too large",
                None,
                false,
            ),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "Request body too slow",
                None,
                true,
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "Bad request", None, false),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                None,
                false,
            ),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long", "URI too long", None, false),
            ApiError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "Request headers too large",
                None,
                false,
            ),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                None,
                true,
            ),
            ApiError::Unsupported(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                None,
                false,
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                None,
                true,
            ),
        };
        let detail = match self {
            ApiError::Invalid { field, reason } => format!("{field}: {reason}"),
            // Operator detail (SQL, paths) stays in the log.
            ApiError::Internal(_) => "the server could not complete the request; it has been logged".into(),
            other => other.to_string(),
        };
        Problem {
            type_: format!("https://berth.dev/problems/{code}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            code: code.into(),
            field,
            retryable,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::LeaseLost(id) => ApiError::conflict(
                "lease_lost",
                format!("the lease on operation {id} is no longer held; stop this work"),
            ),
            StoreError::Invalid { field, reason } => ApiError::invalid(field, reason),
            StoreError::BadToken => ApiError::Unauthenticated(e.to_string()),
            StoreError::Conflict(m) => ApiError::conflict("conflict", m),
            e @ StoreError::NameTaken { .. } => ApiError::conflict("name_taken", format!("{e}; pick another name")),
            e @ StoreError::Quota { .. } => crate::routes::quotas::exceeded(e),
            StoreError::Backend(m) => ApiError::Internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let p = self.problem();
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(p)).into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::RateLimited(secs) = &self
            && let Ok(v) = axum::http::HeaderValue::try_from(secs.to_string())
        {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"berth\""),
            );
        }
        resp
    }
}

/// Parses a JSON body, naming the field that does not fit (`spec.cores`, `labels`…).
/// Every request body is one JSON object and nothing after it. A number with a zero fraction
/// (`2.0`, `1e3`) counts as the integer it is, as JSON Schema says.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::invalid("body", "must be a JSON object ({…})"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut tree = <serde_json::Value as serde::Deserialize>::deserialize(&mut de)
        .map_err(|e| ApiError::invalid("body", format!("is not JSON: {e}")))?;
    de.end()
        .map_err(|_| ApiError::invalid("body", "must be one JSON object with nothing after it"))?;
    integral(&mut tree);
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // Unknown and missing fields name themselves in the message; use that name.
        let named = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"));
        let field = match (path.as_str(), named) {
            (".", Some(n)) => n.to_owned(),
            (".", None) => "body".to_owned(),
            (p, Some(n)) if msg.starts_with("missing field") => format!("{p}.{n}"),
            (p, _) => p.to_owned(),
        };
        ApiError::invalid(field, msg)
    })
}

/// Whole numbers written as floats become integers, everywhere in `v`.
fn integral(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.is_finite() && f.fract() == 0.0 {
                if (0.0..=u64::MAX as f64).contains(&f) {
                    *v = serde_json::Value::from(f as u64);
                } else if (i64::MIN as f64..0.0).contains(&f) {
                    *v = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(integral),
        serde_json::Value::Object(o) => o.values_mut().for_each(integral),
        _ => {}
    }
}

/// Parses a query string, naming the parameter that does not fit; unknown ones are refused
/// when `T` denies unknown fields.
pub fn parse_query<T: serde::de::DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.unwrap_or("").as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let field = match msg.split('`').nth(1) {
            Some(n) if path == "." => n.to_owned(),
            _ if path == "." => "query".to_owned(),
            _ => path,
        };
        ApiError::invalid(field, msg)
    })
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u32,
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        b: String,
    }

    fn field(body: &str) -> String {
        match parse_json::<T>(body.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field(r#"{"a": "x"}"#), "a");
        assert_eq!(field(r#"{"a": 1, "zzz": 2}"#), "zzz");
        assert_eq!(field(r#"{}"#), "a");
        assert_eq!(field(r#"{"a": 1, "inner": {"b": 1}}"#), "inner.b");
        assert_eq!(field(r#"{"a": 1, "inner": {}}"#), "inner.b");
        assert_eq!(field("not json"), "body");
        assert_eq!(field(r#"{"a": 1} garbage"#), "body");
        assert_eq!(field(r#"{"a": 1}{}"#), "body");
        assert_eq!(field(r#"[1, null]"#), "body");
        assert!(parse_json::<T>(b" {\"a\": 1}\n").is_ok());
        assert_eq!(parse_json::<T>(br#"{"a": 7.0}"#).unwrap().a, 7);
        assert_eq!(parse_json::<T>(br#"{"a": 1e3}"#).unwrap().a, 1000);
        assert_eq!(field(r#"{"a": 7.5}"#), "a");
    }

    #[test]
    fn internal_detail_is_not_shown() {
        let p = ApiError::Internal("SELECT secret FROM x".into()).problem();
        assert!(!p.detail.contains("SELECT"));
        assert_eq!((p.status, p.code.as_str()), (500, "internal"));
    }
}
