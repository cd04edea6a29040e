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
    #[error("{code}: {message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Unsupported(String),
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
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, *code, "Conflict", None, *code == "busy"),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Request body too large",
                None,
                false,
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
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
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
    }

    #[test]
    fn internal_detail_is_not_shown() {
        let p = ApiError::Internal("SELECT secret FROM x".into()).problem();
        assert!(!p.detail.contains("SELECT"));
        assert_eq!((p.status, p.code.as_str()), (500, "internal"));
    }
}
