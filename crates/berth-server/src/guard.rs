//! Requests refused before any route sees them, each with a problem document: a request target
//! longer than [`MAX_URI`], headers larger than [`MAX_HEADERS`] (hyper itself cuts heads past
//! its 64 KiB buffer, without a body), and a path whose percent-escapes are not UTF-8.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;

pub const MAX_URI: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 32 * 1024;

pub async fn check(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI {
        return ApiError::UriTooLong(MAX_URI).into_response();
    }
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > MAX_HEADERS {
        return ApiError::HeadersTooLarge(MAX_HEADERS).into_response();
    }
    let path = req.uri().path();
    if path.contains('%') && percent_decode(path).is_none() {
        return ApiError::BadRequest("the path is not valid UTF-8 once its %-escapes are decoded".into())
            .into_response();
    }
    next.run(req).await
}

/// `s` with `%XX` escapes decoded, if the result is UTF-8 (a bad escape: `None`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_to_utf8_or_not_at_all() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%C3%A9").as_deref(), Some("/é"));
        assert_eq!(percent_decode("/%FF%FE"), None);
        assert_eq!(percent_decode("/%G1"), None);
        assert_eq!(percent_decode("/%4"), None);
    }
}
