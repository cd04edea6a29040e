//! Berth's errors as gRPC statuses and back. The status code is the nearest gRPC code (for
//! clients that read nothing else); the details hold a `google.rpc.Status` (the convention
//! grpcio-status and tonic-types read) with one `berth.provider.v1.ErrorDetail`: Berth's own
//! code, the field and the retry-after, so `is_retryable` and the field survive the wire.

use std::time::Duration;

use berth_core::{ErrorCode, ProviderError};
use prost::Message;
use tonic::{Code, Status};

use crate::pb;

/// `google.rpc.Status`, as the `grpc-status-details-bin` trailer carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The longest retry-after taken from a remote (5 minutes).
const MAX_RETRY_AFTER_MS: u64 = 300_000;

const DETAIL_TYPE: &str = "type.googleapis.com/berth.provider.v1.ErrorDetail";

const CODES: [(ErrorCode, pb::ErrorCode, Code); 10] = [
    (ErrorCode::NotFound, pb::ErrorCode::NotFound, Code::NotFound),
    (
        ErrorCode::InvalidSpec,
        pb::ErrorCode::InvalidSpec,
        Code::InvalidArgument,
    ),
    (
        ErrorCode::Unauthorized,
        pb::ErrorCode::Unauthorized,
        Code::PermissionDenied,
    ),
    (ErrorCode::Unsupported, pb::ErrorCode::Unsupported, Code::Unimplemented),
    (ErrorCode::Conflict, pb::ErrorCode::Conflict, Code::FailedPrecondition),
    (
        ErrorCode::QuotaExceeded,
        pb::ErrorCode::QuotaExceeded,
        Code::ResourceExhausted,
    ),
    (
        ErrorCode::RateLimited,
        pb::ErrorCode::RateLimited,
        Code::ResourceExhausted,
    ),
    (ErrorCode::Timeout, pb::ErrorCode::Timeout, Code::DeadlineExceeded),
    (ErrorCode::Unavailable, pb::ErrorCode::Unavailable, Code::Unavailable),
    (ErrorCode::Internal, pb::ErrorCode::Internal, Code::Internal),
];

/// The error's parts: (field, message, retry-after, after).
fn parts(e: &ProviderError) -> (String, String, Option<Duration>, Option<Duration>) {
    match e {
        ProviderError::NotFound { what } | ProviderError::Unsupported { what } => {
            (String::new(), what.clone(), None, None)
        }
        ProviderError::InvalidSpec { field, reason } => (field.clone(), reason.clone(), None, None),
        ProviderError::Unauthorized { message }
        | ProviderError::Conflict { message }
        | ProviderError::QuotaExceeded { message }
        | ProviderError::Unavailable { message }
        | ProviderError::Internal { message } => (String::new(), message.clone(), None, None),
        ProviderError::RateLimited { retry_after } => (String::new(), String::new(), *retry_after, None),
        ProviderError::Timeout { what, after } => (String::new(), what.clone(), None, Some(*after)),
    }
}

pub fn to_status(e: &ProviderError) -> Status {
    let (_, wire, code) = CODES.iter().find(|(c, _, _)| *c == e.code()).copied().unwrap_or((
        ErrorCode::Internal,
        pb::ErrorCode::Internal,
        Code::Internal,
    ));
    let (field, message, retry_after, after) = parts(e);
    let detail = pb::ErrorDetail {
        code: wire as i32,
        field,
        message,
        retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        after_ms: after.map(|d| d.as_millis() as u64),
    };
    let text = e.to_string();
    let status = RpcStatus {
        code: code as i32,
        message: text.clone(),
        details: vec![prost_types::Any {
            type_url: DETAIL_TYPE.into(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, text, status.encode_to_vec().into())
}

/// The error a status stands for: Berth's own from the details when a Berth server sent them,
/// else the nearest by gRPC code (a transport failure is `unavailable`, so it is retried).
pub fn from_status(s: &Status, call: &str) -> ProviderError {
    if let Some(e) = detail_of(s) {
        return e;
    }
    // A transport failure says why in its sources (refused, TLS handshake, reset).
    let mut msg = format!("{call}: {}", s.message());
    let mut cur = std::error::Error::source(s);
    while let Some(e) = cur {
        let t = e.to_string();
        if !msg.contains(&t) {
            msg = format!("{msg}: {t}");
        }
        cur = e.source();
    }
    // A server the client CA does not vouch for: configuration, not a passing failure.
    if msg.contains("invalid peer certificate") {
        return ProviderError::unauthorized(format!("{msg} (check ca_file)"));
    }
    // Made by the transport (a reset stream, a broken connection, a bad frame), whatever its
    // code: the call may be made again (a create resumes by contract).
    if std::error::Error::source(s).is_some() {
        return ProviderError::unavailable(msg);
    }
    match s.code() {
        Code::NotFound => ProviderError::not_found(msg),
        Code::InvalidArgument => ProviderError::invalid("spec", msg),
        Code::Unauthenticated | Code::PermissionDenied => ProviderError::unauthorized(msg),
        Code::Unimplemented => ProviderError::unsupported(msg),
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => ProviderError::conflict(msg),
        // Without Berth's detail there is no telling it is a passing limit.
        Code::ResourceExhausted => ProviderError::QuotaExceeded { message: msg },
        Code::DeadlineExceeded => ProviderError::Timeout {
            what: msg,
            after: Duration::ZERO,
        },
        Code::Unavailable | Code::Cancelled | Code::Unknown => ProviderError::unavailable(msg),
        _ => ProviderError::internal(msg),
    }
}

fn detail_of(s: &Status) -> Option<ProviderError> {
    let status = RpcStatus::decode(s.details()).ok()?;
    let any = status.details.into_iter().find(|a| a.type_url == DETAIL_TYPE)?;
    let d = pb::ErrorDetail::decode(any.value.as_slice()).ok()?;
    let wire = pb::ErrorCode::try_from(d.code).ok()?;
    let code = CODES.iter().find(|(_, w, _)| *w == wire)?.0;
    let m = d.message;
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    Some(match code {
        ErrorCode::NotFound => ProviderError::NotFound { what: m },
        ErrorCode::InvalidSpec => ProviderError::InvalidSpec {
            field: d.field,
            reason: m,
        },
        ErrorCode::Unauthorized => ProviderError::Unauthorized { message: m },
        ErrorCode::Unsupported => ProviderError::Unsupported { what: m },
        ErrorCode::Conflict => ProviderError::Conflict { message: m },
        ErrorCode::QuotaExceeded => ProviderError::QuotaExceeded { message: m },
        // A remote's word on how long to wait is taken up to a bound.
        ErrorCode::RateLimited => ProviderError::RateLimited {
            retry_after: ms(d.retry_after_ms.map(|v| v.min(MAX_RETRY_AFTER_MS))),
        },
        ErrorCode::Timeout => ProviderError::Timeout {
            what: m,
            after: ms(d.after_ms).unwrap_or_default(),
        },
        ErrorCode::Unavailable => ProviderError::Unavailable { message: m },
        ErrorCode::Internal => ProviderError::Internal { message: m },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_the_wire_with_its_field_and_retry_after() {
        let all = [
            ProviderError::not_found("instance web1"),
            ProviderError::invalid("cores", "must be between 1 and 8192 (got 0)"),
            ProviderError::unauthorized("token refused"),
            ProviderError::unsupported("containers"),
            ProviderError::conflict("not Berth's"),
            ProviderError::QuotaExceeded {
                message: "no room".into(),
            },
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_millis(1500)),
            },
            ProviderError::RateLimited { retry_after: None },
            ProviderError::Timeout {
                what: "waiting for the clone".into(),
                after: Duration::from_secs(30),
            },
            ProviderError::unavailable("connection refused"),
            ProviderError::internal("bug"),
        ];
        for e in all {
            let s = to_status(&e);
            let back = from_status(&s, "describe");
            assert_eq!(back, e, "{e}");
            assert_eq!(back.is_retryable(), e.is_retryable());
            assert_eq!(s.message(), e.to_string());
        }
    }

    #[test]
    fn a_status_without_details_maps_by_its_code() {
        let e = from_status(&Status::unavailable("tcp connect error"), "describe");
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("describe: tcp connect error"), "{e}");
        let e = from_status(&Status::unauthenticated("no token"), "list");
        assert_eq!(e.code(), ErrorCode::Unauthorized);
        let e = from_status(&Status::unimplemented("unknown method"), "capacity");
        assert_eq!(e.code(), ErrorCode::Unsupported);
        let e = from_status(&Status::resource_exhausted("quota"), "create");
        assert_eq!(
            e.code(),
            ErrorCode::QuotaExceeded,
            "no detail: not taken for a passing limit"
        );
        let huge = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(
            from_status(&to_status(&huge), "list"),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(300))
            },
            "a remote's retry-after is bounded"
        );
        // Details that are not Berth's are read by code, not trusted.
        let odd = Status::with_details(Code::NotFound, "gone", vec![1, 2, 3].into());
        assert_eq!(from_status(&odd, "describe").code(), ErrorCode::NotFound);
    }
}
