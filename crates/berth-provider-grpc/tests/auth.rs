//! Who may call a served provider: a bearer token, mutual TLS (right client certificate
//! accepted; none, another CA's or an expired one refused), and no plaintext off loopback.

mod common;

use std::path::Path;
use std::sync::Arc;

use berth_core::{ErrorCode, ListFilter, Provider};
use berth_provider_grpc::{RemoteConfig, ServeError, ServeOptions, ServerTls, bind};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, date_time_ymd,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_server_refuses_a_missing_or_wrong_token_and_makes_nothing() {
    let emu = emulator().await;
    let served = serve(Arc::new(proxmox(&emu)), "127.0.0.1:0", None, Some("right-token")).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = config(&endpoint(&served));
    for c in [plain.clone(), with_token(plain.clone(), dir.path(), "wrong-token")] {
        let r = remote(&c, dir.path());
        let e = r.list(ListFilter::default()).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthorized, "{e}");
        assert!(e.to_string().contains("bearer token"), "{e}");
        assert!(
            !e.to_string().contains("right-token"),
            "the expected token is never said: {e}"
        );
        let e = r
            .create(&spec(berth_core::GuestKind::Vm, "refused"), &berth_core::NoProgress)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthorized, "{e}");
    }
    assert!(emu.guests().iter().all(|g| g.template), "nothing was made");
    let ok = remote(&with_token(plain, dir.path(), "right-token"), dir.path());
    ok.list(ListFilter::default()).await.unwrap();
}

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A certificate for `names` signed by this CA: (cert PEM, key PEM).
    fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose, expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.extended_key_usages = vec![purpose];
        if expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

/// A server certificate for 127.0.0.1 from `pki`, in files; client certificates from `client_ca`.
fn server_tls(dir: &Path, pki: &Pki, client_ca: Option<std::path::PathBuf>) -> ServerTls {
    let (cert, key) = pki.leaf(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, false);
    ServerTls {
        cert_file: write(dir, "server.crt", &cert),
        key_file: write(dir, "server.key", &key),
        client_ca_file: client_ca,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_the_right_client_certificate_and_refuses_others() {
    let emu = emulator().await;
    let pki = Pki::new("berth test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &pki.ca.pem());
    let tls = server_tls(dir.path(), &pki, Some(ca_file.clone()));
    let served = serve(Arc::new(proxmox(&emu)), "127.0.0.1:0", Some(tls), None).await;
    let base = RemoteConfig {
        ca_file: Some(ca_file),
        ..config(&endpoint(&served).replace("http://", "https://"))
    };
    let with_client = |name: &str, (cert, key): (String, String)| RemoteConfig {
        client_cert: Some(write(dir.path(), &format!("{name}.crt"), &cert)),
        client_key: Some(write(dir.path(), &format!("{name}.key"), &key)),
        ..base.clone()
    };

    let good = with_client("good", pki.leaf(&["agent"], ExtendedKeyUsagePurpose::ClientAuth, false));
    let caps = remote(&good, dir.path()).capabilities().await.unwrap();
    assert!(caps.vms, "{caps:?}");

    let other = Pki::new("another CA");
    let cases = [
        ("no client certificate", base.clone()),
        (
            "another CA's certificate",
            with_client(
                "other",
                other.leaf(&["agent"], ExtendedKeyUsagePurpose::ClientAuth, false),
            ),
        ),
        (
            "an expired certificate",
            with_client(
                "expired",
                pki.leaf(&["agent"], ExtendedKeyUsagePurpose::ClientAuth, true),
            ),
        ),
    ];
    for (what, c) in cases {
        let e = remote(&c, dir.path()).capabilities().await.unwrap_err();
        eprintln!("{what}: {e}");
        assert_eq!(e.code(), ErrorCode::Unauthorized, "{what}: {e}");
        assert!(e.to_string().contains("certificate"), "{what}: the error says why: {e}");
    }

    // And the client checks the server: a server certificate from another CA is refused.
    let wrong_ca = RemoteConfig {
        ca_file: Some(write(dir.path(), "other-ca.pem", &other.ca.pem())),
        ..good.clone()
    };
    let e = remote(&wrong_ca, dir.path()).capabilities().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized, "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[tokio::test]
async fn plaintext_off_loopback_and_tcp_open_to_anyone_are_refused_at_start() {
    let e = bind(ServeOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        tls: None,
        token: None,
        allow_unauthenticated: true,
    })
    .await
    .err()
    .expect("refused");
    assert!(matches!(e, ServeError::Plaintext(_)), "{e}");
    assert!(e.to_string().contains("plaintext is only for loopback"), "{e}");
    let pki = Pki::new("berth test CA");
    let dir = tempfile::tempdir().unwrap();
    let tls = server_tls(dir.path(), &pki, None);
    let ok = bind(ServeOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        tls: Some(tls.clone()),
        token: Some(berth_core::Secret::new("t")),
        allow_unauthenticated: false,
    })
    .await;
    assert!(ok.is_ok(), "with TLS any address may be served");
    // Nobody to check the caller: refused unless asked for by name, on loopback too.
    for tls in [None, Some(tls)] {
        let e = bind(ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls,
            token: None,
            allow_unauthenticated: false,
        })
        .await
        .err()
        .expect("refused");
        assert!(matches!(e, ServeError::Unauthenticated(_)), "{e}");
        assert!(
            e.to_string().contains("set a bearer token or client certificates"),
            "{e}"
        );
    }
    // A Unix socket is its permissions: 0600.
    let sock = dir.path().join("p.sock");
    let served = bind(ServeOptions {
        listen: format!("unix:{}", sock.display()).parse().unwrap(),
        tls: None,
        token: None,
        allow_unauthenticated: false,
    })
    .await
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    drop(served);
    // Something else at the path is never removed to make room.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let e = bind(ServeOptions {
        listen: format!("unix:{}", file.display()).parse().unwrap(),
        tls: None,
        token: None,
        allow_unauthenticated: false,
    })
    .await
    .err()
    .expect("refused");
    assert!(e.to_string().contains("cannot listen"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn a_bad_remote_table_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let cases = [
        ("endpoint = \"http://192.0.2.7:7443\"", "endpoint", "only for loopback"),
        ("endpoint = \"ftp://127.0.0.1:7443\"", "endpoint", "unknown scheme"),
        ("endpoint = \"http://127.0.0.1\"", "endpoint", "no port"),
        ("endpoint = \"unix:relative.sock\"", "endpoint", "absolute path"),
        ("endpoint = \"https://pve1:7443\"", "ca_file", "CA"),
        (
            "endpoint = \"https://pve1:7443\"\nca_file = \"ca.pem\"",
            "ca_file",
            "not a readable file",
        ),
        (
            "endpoint = \"http://127.0.0.1:7443\"\nclient_cert = \"a.crt\"",
            "client_key",
            "go together",
        ),
        (
            "endpoint = \"http://127.0.0.1:7443\"\ncall_timeout_secs = 0",
            "call_timeout_secs",
            "at least",
        ),
    ];
    for (toml_text, key, says) in cases {
        let c: RemoteConfig = toml::from_str(toml_text).unwrap();
        let e = c.validate(base).unwrap_err();
        assert_eq!(e.key, key, "{toml_text}: {e}");
        assert!(e.message.contains(says), "{toml_text}: {e}");
    }
    let e = toml::from_str::<RemoteConfig>("endpoint = \"unix:/x\"\ntokn_file = \"t\"").unwrap_err();
    assert!(e.to_string().contains("tokn_file"), "{e}");
}
