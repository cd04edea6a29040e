//! How a client checks a server: system roots by default, an extra CA from `ca_file`, SHA-256
//! leaf fingerprint pinning (a custom rustls verifier that still checks handshake signatures),
//! and the explicit, logged opt-out. Also turns a failed handshake into a clear message. Used
//! for the Proxmox API and for the control plane (agent and CLI).

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER encoding (what Proxmox shows as its "fingerprint", and what
/// `berth server` prints for its own certificate).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Accepts `sha256:AB:CD:…`, `AB:CD:…` or plain hex, any case.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .unwrap_or(t);
        let hex_only: String = t.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&hex_only).map_err(|_| {
            format!("expected a SHA-256 fingerprint like \"sha256:AB:CD:…\" (32 hex bytes); {s:?} is not hex")
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "expected a SHA-256 fingerprint of 32 bytes like \"sha256:AB:CD:…\"; {s:?} has {} bytes",
                b.len()
            )
        })?;
        Ok(Fingerprint(arr))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&parts.join(":"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A comma-separated list of fingerprints (several pins allow a certificate rollover).
pub fn parse_fingerprints(s: &str) -> Result<Vec<Fingerprint>, String> {
    let pins: Vec<Fingerprint> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Fingerprint::parse)
        .collect::<Result<_, _>>()?;
    if pins.is_empty() {
        return Err("expected at least one SHA-256 fingerprint like \"sha256:AB:CD:…\"".into());
    }
    Ok(pins)
}

/// Reads every certificate of a PEM bundle.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a valid PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// How the client checks the server's certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Extra trusted CAs (from `ca_file`); the host name is still checked.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// Accepted leaf fingerprints; when set, a matching leaf is trusted without a CA chain.
    pub fingerprints: Vec<Fingerprint>,
    /// `false` turns verification off entirely (explicit opt-out, logged).
    pub insecure: bool,
    /// What the server is, for messages ("the Proxmox API", "the control plane").
    pub server: &'static str,
    /// How to fix an untrusted certificate, for the error ("set ca_file to …").
    pub trust_hint: &'static str,
}

impl TlsOptions {
    /// A CA file (PEM bundle) and/or pins (comma-separated SHA-256 fingerprints), as read from
    /// a config file or the command line. Errors say which of the two is wrong.
    pub fn from_files(ca_file: Option<&std::path::Path>, fingerprints: Option<&str>) -> Result<TlsOptions, String> {
        let ca_certs = match ca_file {
            None => Vec::new(),
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| format!("ca_file {}: {e}", p.display()))?;
                parse_pem_certs(&pem).map_err(|e| format!("ca_file {}: {e}", p.display()))?
            }
        };
        let fingerprints = match fingerprints {
            None => Vec::new(),
            Some(f) => parse_fingerprints(f).map_err(|e| format!("tls_fingerprint: {e}"))?,
        };
        Ok(TlsOptions {
            ca_certs,
            fingerprints,
            ..TlsOptions::default()
        })
    }
}

/// Applies the TLS policy to a reqwest builder.
pub fn apply(builder: reqwest::ClientBuilder, opts: &TlsOptions) -> Result<reqwest::ClientBuilder, String> {
    if !opts.fingerprints.is_empty() {
        let config = pinned_config(opts)?;
        return Ok(builder.tls_backend_preconfigured(config));
    }
    if opts.insecure {
        tracing::warn!(
            server = opts.server,
            "TLS certificate verification is OFF: anyone on the path can impersonate the server and read the \
             credentials sent to it; set ca_file or tls_fingerprint instead"
        );
        return Ok(builder.tls_danger_accept_invalid_certs(true));
    }
    if opts.ca_certs.is_empty() {
        return Ok(builder);
    }
    let certs = opts
        .ca_certs
        .iter()
        .map(|c| reqwest::Certificate::from_der(c.as_ref()).map_err(|e| format!("unusable CA certificate: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(builder.tls_certs_merge(certs))
}

fn pinned_config(opts: &TlsOptions) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let fallback = if opts.ca_certs.is_empty() {
        None
    } else {
        let mut roots = RootCertStore::empty();
        for c in &opts.ca_certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("cannot build the CA verifier: {e}"))?;
        Some(v)
    };
    let verifier = PinnedLeaf {
        pins: opts.fingerprints.clone(),
        fallback,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// Trusts a leaf whose SHA-256 is pinned (or, failing that, one the optional CA verifies).
/// Handshake signatures are always verified with the provider's algorithms.
#[derive(Debug)]
struct PinnedLeaf {
    pins: Vec<Fingerprint>,
    fallback: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedLeaf {
    fn algs(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity.as_ref());
        if self.pins.contains(&presented) {
            return Ok(ServerCertVerified::assertion());
        }
        if let Some(ca) = &self.fallback
            && ca
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .is_ok()
        {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = FingerprintMismatch {
            expected: self.pins.clone(),
            presented,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(mismatch),
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs().supported_schemes()
    }
}

/// The pinned verifier's refusal, carried through rustls and reqwest to `describe_failure`.
#[derive(Debug)]
struct FingerprintMismatch {
    expected: Vec<Fingerprint>,
    presented: Fingerprint,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected: Vec<String> = self.expected.iter().map(|p| format!("sha256:{p}")).collect();
        write!(
            f,
            "certificate fingerprint mismatch: expected {}, server presented sha256:{}",
            expected.join(" or "),
            self.presented
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Finds a TLS verification failure in an error chain and explains it, or `None` when the
/// error is not about TLS.
/// `trust_hint` finishes the message for a certificate no trusted CA signed.
pub fn describe_failure(err: &(dyn std::error::Error + 'static), trust_hint: &str) -> Option<String> {
    let tls = find_rustls_error(err)?;
    Some(match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            match (*other.0).downcast_ref::<FingerprintMismatch>() {
                Some(m) => m.to_string(),
                None => format!("certificate rejected: {other}"),
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            format!("certificate not trusted: it is not signed by a CA this host trusts; {trust_hint}")
        }
        rustls::Error::InvalidCertificate(e) => {
            format!("certificate not trusted: {e}; fix the server certificate, or set ca_file or tls_fingerprint")
        }
        other => format!("TLS handshake failed: {other}"),
    })
}

fn find_rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // io::Error::source() skips its payload (and payloads nest), so step into it directly.
        cur = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let colon = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let a = Fingerprint::parse(colon).unwrap();
        assert_eq!(Fingerprint::parse(&format!("sha256:{colon}")).unwrap(), a);
        assert_eq!(Fingerprint::parse(&colon.replace(':', "").to_lowercase()).unwrap(), a);
        assert_eq!(a.to_string(), colon);
        assert!(Fingerprint::parse("AB:CD").unwrap_err().contains("32 bytes"));
        assert!(Fingerprint::parse("zz").unwrap_err().contains("not hex"));
        assert_eq!(
            parse_fingerprints(&format!("{colon}, sha256:{colon}")).unwrap().len(),
            2
        );
        assert!(parse_fingerprints(" , ").is_err());
    }

    #[test]
    fn pem_errors_are_clear() {
        assert!(parse_pem_certs(b"hello").unwrap_err().contains("no PEM certificate"));
    }

    #[test]
    fn mismatch_message_names_both_sides() {
        let m = FingerprintMismatch {
            expected: vec![Fingerprint([1; 32])],
            presented: Fingerprint([2; 32]),
        };
        let err = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(m))));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        let nested = std::io::Error::other(io);
        let msg = describe_failure(&nested, "set ca_file").unwrap();
        assert!(
            msg.starts_with("certificate fingerprint mismatch: expected sha256:01:01"),
            "{msg}"
        );
        assert!(msg.contains("server presented sha256:02:02"), "{msg}");
    }
}
