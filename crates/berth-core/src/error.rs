//! The error taxonomy shared by every backend and carried on the wire: each error has a stable
//! code and knows whether retrying the same call may succeed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Stable, wire-visible error codes (API problem documents and the script protocol use them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    InvalidSpec,
    Unauthorized,
    Unsupported,
    Conflict,
    QuotaExceeded,
    RateLimited,
    Timeout,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidSpec => "invalid_spec",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Conflict => "conflict",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a backend reports when an operation fails. Messages are operator-facing: they carry the
/// backend's own wording (task log tail, HTTP reason) but never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("not found: {what}")]
    NotFound { what: String },
    #[error("invalid {field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },
    #[error("unsupported: {what}")]
    Unsupported { what: String },
    #[error("conflict: {message}")]
    Conflict { message: String },
    #[error("quota exceeded: {message}")]
    QuotaExceeded { message: String },
    #[error("rate limited{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("timed out after {}s: {what}", after.as_secs())]
    Timeout { what: String, after: Duration },
    #[error("backend unavailable: {message}")]
    Unavailable { message: String },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl ProviderError {
    pub fn not_found(what: impl Into<String>) -> Self {
        ProviderError::NotFound { what: what.into() }
    }
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProviderError::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }
    pub fn unsupported(what: impl Into<String>) -> Self {
        ProviderError::Unsupported { what: what.into() }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ProviderError::Conflict {
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ProviderError::Unavailable {
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ProviderError::Internal {
            message: message.into(),
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ProviderError::Unauthorized {
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ProviderError::NotFound { .. } => ErrorCode::NotFound,
            ProviderError::InvalidSpec { .. } => ErrorCode::InvalidSpec,
            ProviderError::Unauthorized { .. } => ErrorCode::Unauthorized,
            ProviderError::Unsupported { .. } => ErrorCode::Unsupported,
            ProviderError::Conflict { .. } => ErrorCode::Conflict,
            ProviderError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            ProviderError::RateLimited { .. } => ErrorCode::RateLimited,
            ProviderError::Timeout { .. } => ErrorCode::Timeout,
            ProviderError::Unavailable { .. } => ErrorCode::Unavailable,
            ProviderError::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// Whether the same call, made again later, may succeed without anything being changed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. } | ProviderError::Timeout { .. } | ProviderError::Unavailable { .. }
        )
    }

    /// Prefix the human message with context, keeping the code.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            ProviderError::NotFound { what } => ProviderError::NotFound {
                what: format!("{ctx}: {what}"),
            },
            ProviderError::InvalidSpec { field, reason } => ProviderError::InvalidSpec {
                field,
                reason: format!("{ctx}: {reason}"),
            },
            ProviderError::Unauthorized { message } => ProviderError::Unauthorized {
                message: format!("{ctx}: {message}"),
            },
            ProviderError::Unsupported { what } => ProviderError::Unsupported {
                what: format!("{ctx}: {what}"),
            },
            ProviderError::Conflict { message } => ProviderError::Conflict {
                message: format!("{ctx}: {message}"),
            },
            ProviderError::QuotaExceeded { message } => ProviderError::QuotaExceeded {
                message: format!("{ctx}: {message}"),
            },
            e @ ProviderError::RateLimited { .. } => e,
            ProviderError::Timeout { what, after } => ProviderError::Timeout {
                what: format!("{ctx}: {what}"),
                after,
            },
            ProviderError::Unavailable { message } => ProviderError::Unavailable {
                message: format!("{ctx}: {message}"),
            },
            ProviderError::Internal { message } => ProviderError::Internal {
                message: format!("{ctx}: {message}"),
            },
        }
    }
}

/// `a: b: c` from an error and its sources, skipping a source whose text an earlier one already
/// contains (many errors repeat their source in their own message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        assert!(ProviderError::unavailable("x").is_retryable());
        assert!(ProviderError::RateLimited { retry_after: None }.is_retryable());
        assert!(
            ProviderError::Timeout {
                what: "x".into(),
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(!ProviderError::not_found("x").is_retryable());
        assert!(!ProviderError::invalid("cores", "must be at least 1").is_retryable());
        assert!(!ProviderError::internal("x").is_retryable());
        assert!(!ProviderError::conflict("x").is_retryable());
    }

    #[test]
    fn context_keeps_code_and_field() {
        let e = ProviderError::invalid("memory_mib", "too big").context("node pve1");
        assert_eq!(e.code(), ErrorCode::InvalidSpec);
        assert_eq!(e.to_string(), "invalid memory_mib: node pve1: too big");
    }

    #[test]
    fn codes_serialize_snake_case() {
        assert_eq!(
            serde_json::to_string(&ErrorCode::QuotaExceeded).unwrap(),
            "\"quota_exceeded\""
        );
        assert_eq!(ErrorCode::RateLimited.as_str(), "rate_limited");
    }
}
