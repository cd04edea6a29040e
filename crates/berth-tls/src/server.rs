//! The control plane's certificate: read from a PEM certificate chain and a PEM private key,
//! served to every new handshake, and swapped in place by [`ReloadingCert::reload`] (SIGHUP):
//! connections already open keep theirs, new ones get the new one. A reload that fails keeps
//! the old certificate and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::client::{Fingerprint, parse_pem_certs};

/// The certificate and key files, and what they held when last read.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads `cert_file` (the chain, leaf first) and `key_file`; errors name the file and the key
/// (`tls.cert_file`, `tls.key_file`) it came from. The key never appears in them.
fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, (&'static str, String)> {
    let pem = std::fs::read(cert_file).map_err(|e| ("cert_file", format!("{}: {e}", cert_file.display())))?;
    let certs = parse_pem_certs(&pem).map_err(|e| ("cert_file", format!("{}: {e}", cert_file.display())))?;
    let key_pem = std::fs::read(key_file).map_err(|e| ("key_file", format!("{}: {e}", key_file.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        (
            "key_file",
            format!(
                "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
                key_file.display()
            ),
        )
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| ("key_file", format!("{}: unusable private key: {e}", key_file.display())))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        (
            "key_file",
            format!(
                "{} does not belong to the certificate in {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        )
    })?;
    Ok(ck)
}

impl ReloadingCert {
    /// Reads both files now. `Err((key, message))`: `key` is `cert_file` or `key_file`.
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, (&'static str, String)> {
        let ck = load(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Reads the files again and serves what they hold to new connections; on error the
    /// certificate in use stays. Returns the new leaf's fingerprint.
    pub fn reload(&self) -> Result<Fingerprint, String> {
        let ck = load(&self.cert_file, &self.key_file).map_err(|(key, m)| format!("tls.{key}: {m}"))?;
        let fp = leaf_fingerprint(&ck);
        *self.current.write().expect("certificate lock") = Arc::new(ck);
        Ok(fp)
    }

    /// The SHA-256 of the leaf being served (what clients pin).
    pub fn fingerprint(&self) -> Fingerprint {
        leaf_fingerprint(&self.current.read().expect("certificate lock"))
    }

    /// A rustls server configuration serving this certificate (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set TLS versions: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn leaf_fingerprint(ck: &CertifiedKey) -> Fingerprint {
    Fingerprint::of(ck.cert.first().map(|c| c.as_ref()).unwrap_or_default())
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_reloads_and_keeps_the_old_certificate_when_the_new_one_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let r = ReloadingCert::open(&cert, &key).unwrap();
        let first = r.fingerprint();
        let (cert2, key2) = write_pair(dir.path(), "b");
        std::fs::copy(&cert2, &cert).unwrap();
        // The new certificate with the old key: refused, the old pair stays.
        let e = r.reload().unwrap_err();
        assert!(e.starts_with("tls.key_file") && e.contains("does not belong"), "{e}");
        assert_eq!(r.fingerprint(), first);
        std::fs::copy(&key2, &key).unwrap();
        let second = r.reload().unwrap();
        assert_ne!(second, first);
        assert_eq!(r.fingerprint(), second);
        r.server_config().unwrap();
    }

    #[test]
    fn errors_name_the_file_and_never_show_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let e = ReloadingCert::open(&dir.path().join("missing.crt"), &key).unwrap_err();
        assert_eq!(e.0, "cert_file");
        std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
        let e = ReloadingCert::open(&cert, &dir.path().join("bad.key")).unwrap_err();
        assert_eq!(e.0, "key_file");
        assert!(e.1.contains("no PEM private key"), "{}", e.1);
    }
}
