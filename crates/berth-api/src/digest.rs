//! `Content-Digest` (RFC 9530): what the signer puts on every request (`sha-256`) and what the
//! verifier accepts (`sha-256` and `sha-512`; every supported digest given must match).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sfv::{BareItem, Dictionary, ListEntry, Parser};
use sha2::{Digest as _, Sha256, Sha512};

use crate::httpsig::SigError;

pub const DIGEST_HEADER: &str = "content-digest";

/// `sha-256=:<base64>:` of `body`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", B64.encode(Sha256::digest(body)))
}

/// Checks a `Content-Digest` value against `body`.
pub fn verify(value: &str, body: &[u8]) -> Result<(), SigError> {
    let bad = |reason: String| SigError::Malformed {
        field: DIGEST_HEADER,
        reason,
    };
    let dict: Dictionary = Parser::new(value).parse().map_err(|e| bad(e.to_string()))?;
    let mut checked = 0;
    for (alg, entry) in &dict {
        let ListEntry::Item(item) = entry else {
            return Err(bad(format!("{} is not a byte sequence", alg.as_str())));
        };
        let BareItem::ByteSequence(given) = &item.bare_item else {
            return Err(bad(format!("{} is not a byte sequence", alg.as_str())));
        };
        let want: Vec<u8> = match alg.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        if *given != want {
            return Err(SigError::DigestMismatch);
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(bad("no sha-256 or sha-512 digest".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9530 section 2, the example body `{"hello": "world"}`.
    #[test]
    fn rfc_9530_example() {
        let body = br#"{"hello": "world"}"#;
        assert_eq!(
            content_digest(body),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
        verify("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", body).unwrap();
        let both = format!(
            "sha-512=:{}:, sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            B64.encode(Sha512::digest(body))
        );
        verify(&both, body).unwrap();
    }

    #[test]
    fn mismatches_and_junk_are_refused() {
        let d = content_digest(b"abc");
        assert_eq!(verify(&d, b"abd"), Err(SigError::DigestMismatch));
        for junk in ["", "md5=:AAAA:", "sha-256=abc", "sha-256=(1 2)", "sha-256=:!!:"] {
            assert!(
                matches!(verify(junk, b"abc"), Err(SigError::Malformed { .. })),
                "{junk:?}"
            );
        }
        // A wrong sha-512 next to a right sha-256 is still a mismatch.
        let mixed = format!("{d}, sha-512=:{}:", B64.encode([0u8; 64]));
        assert_eq!(verify(&mixed, b"abc"), Err(SigError::DigestMismatch));
    }
}
