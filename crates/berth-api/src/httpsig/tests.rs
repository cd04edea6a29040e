use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use http::{HeaderMap, HeaderValue, Method, Uri};

use super::*;

/// RFC 9421 appendix B.1.4, `test-key-ed25519`: PKCS #8 and SPKI bodies (the key is their tail).
const TEST_KEY_PRIVATE: &str = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF";
const TEST_KEY_PUBLIC: &str = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";

fn tail32(b64: &str) -> [u8; 32] {
    let der = B64.decode(b64).unwrap();
    der[der.len() - 32..].try_into().unwrap()
}

fn test_key() -> SigningKey {
    SigningKey::from_bytes(&tail32(TEST_KEY_PRIVATE))
}

/// The test-request of RFC 9421 appendix B.2 (the fields B.2.6 covers).
fn test_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.com"));
    h.insert("date", HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "content-digest",
        HeaderValue::from_static(
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        ),
    );
    h.insert("content-length", HeaderValue::from_static("18"));
    h
}

const B26_BASE: &str = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"";
const B26_INPUT: &str = "sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"";
const B26_SIGNATURE: &str =
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";

fn b26_params() -> Params {
    Params {
        created: Some(1618884473),
        keyid: Some("test-key-ed25519".into()),
        ..Params::new(vec![
            Component::Field("date".into()),
            Component::Method,
            Component::Path,
            Component::Authority,
            Component::Field("content-type".into()),
            Component::Field("content-length".into()),
        ])
    }
}

#[test]
fn rfc_9421_b_1_4_key_pair_matches() {
    assert_eq!(test_key().verifying_key().to_bytes(), tail32(TEST_KEY_PUBLIC));
}

#[test]
fn rfc_9421_b_2_6_signing_reproduces_the_rfc() {
    let headers = test_request();
    let uri: Uri = "/foo?param=Value&Pet=dog".parse().unwrap();
    let msg = Message::new(&Method::POST, &uri, &headers);
    assert_eq!(signature_base(&msg, &b26_params()).unwrap(), B26_BASE);
    let (input, signature) = sign(&msg, &b26_params(), "sig-b26", &test_key()).unwrap();
    assert_eq!(input, B26_INPUT);
    assert_eq!(
        signature, B26_SIGNATURE,
        "Ed25519 is deterministic: the RFC's exact bytes"
    );
}

#[test]
fn rfc_9421_b_2_6_the_rfcs_signature_verifies() {
    let mut headers = test_request();
    headers.insert("signature-input", HeaderValue::from_static(B26_INPUT));
    headers.insert("signature", HeaderValue::from_static(B26_SIGNATURE));
    let uri: Uri = "/foo?param=Value&Pet=dog".parse().unwrap();
    let public = VerifyingKey::from_bytes(&tail32(TEST_KEY_PUBLIC)).unwrap();
    let key_for = |id: Option<&str>| (id == Some("test-key-ed25519")).then_some(public);
    let p = verify_signature(&Message::new(&Method::POST, &uri, &headers), "sig-b26", &key_for).unwrap();
    assert_eq!(
        p,
        Params {
            order: vec!["created", "keyid"],
            ..b26_params()
        }
    );
    // One changed covered value breaks it.
    headers.insert("content-length", HeaderValue::from_static("19"));
    let err = verify_signature(&Message::new(&Method::POST, &uri, &headers), "sig-b26", &key_for).unwrap_err();
    assert_eq!(err, SigError::BadSignature);
}

const NOW: i64 = 1_800_000_000;

struct Agent {
    signer: RequestSigner,
    public: VerifyingKey,
}

fn agent(seed: u8) -> Agent {
    let key = SigningKey::from_bytes(&[seed; 32]);
    Agent {
        public: key.verifying_key(),
        signer: RequestSigner::new(key, format!("agent-{seed}")),
    }
}

struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn signed(a: &Agent, nonce: &str) -> Req {
    let method = Method::POST;
    let uri: Uri = "/api/v1/agents/claim?wait=30s".parse().unwrap();
    let body = br#"{"backends":["proxmox"]}"#.to_vec();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    a.signer
        .sign_with_nonce(&method, &uri, &mut headers, &body, NOW, nonce)
        .unwrap();
    Req {
        method,
        uri,
        headers,
        body,
    }
}

/// The nonces a verifier has seen (the server keeps them in its database).
#[derive(Default)]
struct Seen(std::sync::Mutex<std::collections::HashSet<(String, String)>>);

fn check(a: &Agent, r: &Req, now: i64, seen: &Seen) -> Result<Verified, SigError> {
    let (id, key) = (a.signer.keyid().to_owned(), a.public);
    let key_for = move |k: &str| (k == id).then_some(key);
    let v = verify_request(
        &r.method,
        &r.uri,
        &r.headers,
        &r.body,
        now,
        DEFAULT_MAX_SKEW_SECS,
        &key_for,
    )?;
    if !seen.0.lock().unwrap().insert((v.keyid.clone(), v.nonce.clone())) {
        return Err(SigError::Replayed);
    }
    Ok(v)
}

#[test]
fn profile_round_trip_and_replay() {
    let a = agent(7);
    let r = signed(&a, "n-1");
    let input = r.headers["signature-input"].to_str().unwrap();
    assert_eq!(
        input,
        "berth=(\"@method\" \"@path\" \"@query\" \"content-digest\");created=1800000000;nonce=\"n-1\";keyid=\"agent-7\";alg=\"ed25519\""
    );
    let nonces = Seen::default();
    let v = check(&a, &r, NOW + 10, &nonces).unwrap();
    assert_eq!((v.keyid.as_str(), v.created, v.nonce.as_str()), ("agent-7", NOW, "n-1"));
    // Accepted through the whole second NOW + skew (clocks read in whole seconds).
    assert_eq!(v.remember_until, NOW + DEFAULT_MAX_SKEW_SECS + 1);
    assert!(check(&a, &signed(&a, "late"), NOW + DEFAULT_MAX_SKEW_SECS, &nonces).is_ok());
    let long = "n".repeat(129);
    assert!(matches!(
        check(&a, &signed(&a, &long), NOW, &nonces),
        Err(SigError::Malformed { field: "nonce", .. })
    ));
    assert_eq!(check(&a, &r, NOW + 10, &nonces), Err(SigError::Replayed));
    // Random nonces differ.
    let mut h1 = HeaderMap::new();
    let mut h2 = HeaderMap::new();
    a.signer.sign(&r.method, &r.uri, &mut h1, b"", NOW).unwrap();
    a.signer.sign(&r.method, &r.uri, &mut h2, b"", NOW).unwrap();
    assert_ne!(h1["signature-input"], h2["signature-input"]);
}

#[test]
fn every_tampering_is_refused_with_its_own_error() {
    let a = agent(7);
    let fresh = Seen::default;
    let mut r = signed(&a, "n");
    r.body = br#"{"backends":["libvirt"]}"#.to_vec();
    assert_eq!(check(&a, &r, NOW, &fresh()), Err(SigError::DigestMismatch));

    let mut r = signed(&a, "n");
    r.method = Method::PUT;
    assert_eq!(check(&a, &r, NOW, &fresh()), Err(SigError::BadSignature));

    let mut r = signed(&a, "n");
    r.uri = "/api/v1/agents/claim?wait=1s".parse().unwrap();
    assert_eq!(check(&a, &r, NOW, &fresh()), Err(SigError::BadSignature));

    let mut r = signed(&a, "n");
    r.uri = "/api/v1/agents/other?wait=30s".parse().unwrap();
    assert_eq!(check(&a, &r, NOW, &fresh()), Err(SigError::BadSignature));

    // A body and digest swapped together still fail: the digest is covered.
    let mut r = signed(&a, "n");
    r.body = b"{}".to_vec();
    r.headers.insert(
        DIGEST_HEADER,
        HeaderValue::try_from(digest::content_digest(b"{}")).unwrap(),
    );
    assert_eq!(check(&a, &r, NOW, &fresh()), Err(SigError::BadSignature));

    let r = signed(&a, "n");
    assert!(matches!(check(&a, &r, NOW + 301, &fresh()), Err(SigError::Skew { .. })));
    assert!(matches!(check(&a, &r, NOW - 301, &fresh()), Err(SigError::Skew { .. })));

    let other = agent(8);
    assert_eq!(
        check(&other, &r, NOW, &fresh()),
        Err(SigError::UnknownKey("agent-7".into()))
    );
    // The right keyid with another key (a revoked and re-enrolled agent, a forged keyid).
    let impostor = Agent {
        signer: RequestSigner::new(SigningKey::from_bytes(&[9; 32]), "agent-7"),
        public: a.public,
    };
    let forged = signed(&impostor, "n");
    assert_eq!(check(&a, &forged, NOW, &fresh()), Err(SigError::BadSignature));

    for name in ["signature", "signature-input", DIGEST_HEADER] {
        let mut r = signed(&a, "n");
        r.headers.remove(name);
        let err = check(&a, &r, NOW, &fresh()).unwrap_err();
        assert_eq!(err.code(), "signature_missing", "{name}: {err}");
    }
}

#[test]
fn signatures_that_cover_too_little_or_use_another_alg_are_refused() {
    let a = agent(7);
    let key = SigningKey::from_bytes(&[7; 32]);
    let uri: Uri = "/api/v1/x?y=1".parse().unwrap();
    let base = |components: Vec<Component>| {
        let mut headers = HeaderMap::new();
        headers.insert(
            DIGEST_HEADER,
            HeaderValue::try_from(digest::content_digest(b"")).unwrap(),
        );
        (
            headers,
            Params {
                created: Some(NOW),
                nonce: Some("n".into()),
                keyid: Some("agent-7".into()),
                alg: Some(ALG.into()),
                ..Params::new(components)
            },
        )
    };
    let finish = |mut headers: HeaderMap, params: &Params| {
        let (i, s) = sign(&Message::new(&Method::GET, &uri, &headers), params, LABEL, &key).unwrap();
        headers.insert("signature-input", HeaderValue::try_from(i).unwrap());
        headers.insert("signature", HeaderValue::try_from(s).unwrap());
        Req {
            method: Method::GET,
            uri: uri.clone(),
            headers,
            body: Vec::new(),
        }
    };
    let (h, p) = base(vec![
        Component::Method,
        Component::Path,
        Component::Field(DIGEST_HEADER.into()),
    ]);
    let r = finish(h, &p);
    assert_eq!(
        check(&a, &r, NOW, &Seen::default()),
        Err(SigError::NotCovered("@query".into()))
    );

    let (h, mut p) = base(profile_components());
    p.nonce = None;
    let r = finish(h, &p);
    assert_eq!(
        check(&a, &r, NOW, &Seen::default()),
        Err(SigError::MissingParam("nonce"))
    );

    let (h, mut p) = base(profile_components());
    p.alg = Some("hmac-sha256".into());
    let r = finish(h, &p);
    assert_eq!(
        check(&a, &r, NOW, &Seen::default()),
        Err(SigError::Algorithm("hmac-sha256".into()))
    );

    let (h, mut p) = base(profile_components());
    p.expires = Some(NOW - 1);
    let r = finish(h, &p);
    assert_eq!(check(&a, &r, NOW, &Seen::default()), Err(SigError::Expired(NOW - 1)));
}

#[test]
fn malformed_headers_are_clear_errors() {
    let a = agent(7);
    for (name, value) in [
        ("signature-input", "berth=(\"@method\""),
        ("signature-input", "other=(\"@method\");created=1"),
        (
            "signature-input",
            "berth=(\"@method\" \"@method\" \"@path\" \"@query\" \"content-digest\");created=1800000000;nonce=\"n\";keyid=\"agent-7\"",
        ),
        ("signature-input", "berth=(\"@request-target\");created=1"),
        ("signature-input", "berth=(\"Date\");created=1"),
        ("signature-input", "berth=(\"@method\");created=\"soon\""),
        ("signature", "berth=:AAAA:"),
        ("signature", "berth=\"text\""),
    ] {
        let mut r = signed(&a, "n");
        r.headers.insert(name, HeaderValue::from_static(value));
        let err = check(&a, &r, NOW, &Seen::default()).unwrap_err();
        assert!(
            matches!(err, SigError::Malformed { .. } | SigError::NotCovered(_)),
            "{name}: {value}: {err}"
        );
    }
    let mut r = signed(&a, "n");
    let again = r.headers["signature"].clone();
    r.headers.append("signature", again);
    let err = check(&a, &r, NOW, &Seen::default()).unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
}

#[test]
fn debug_never_shows_the_key() {
    let a = agent(7);
    let shown = format!("{:?}", a.signer);
    assert!(shown.contains("agent-7") && shown.contains("redacted"), "{shown}");
    assert!(!shown.contains("SigningKey"), "{shown}");
}
