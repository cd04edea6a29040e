//! TLS against the emulator's self-signed certificate: a pinned fingerprint is accepted, a
//! wrong one refused with both fingerprints named, default verification refuses the unknown CA,
//! and `ca_file` with the emulator's certificate is accepted.

mod common;

use berth_core::{CheckStatus, ErrorCode, ListFilter, Provider};
use berth_proxmox::client::Fingerprint;
use berth_proxmox::client::{ClientOptions, TlsOptions};
use berth_proxmox::{ConfigError, ProxmoxProvider, PveClient, PveError};
use common::*;

const WRONG: &str =
    "sha256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";

#[tokio::test]
async fn the_pinned_fingerprint_is_accepted() {
    let emu = emulator().await;
    let p = provider(&emu);
    p.list(ListFilter::default()).await.expect("pinned connection works");
    // A list of pins (certificate rollover) works when any one matches.
    let mut cfg = config(&emu);
    cfg.tls_fingerprint = Some(format!("{WRONG}, sha256:{}", emu.fingerprint().unwrap()));
    ProxmoxProvider::new(cfg)
        .unwrap()
        .list(ListFilter::default())
        .await
        .expect("second pin matches");
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_clearly() {
    let emu = emulator().await;
    let mut cfg = config(&emu);
    cfg.tls_fingerprint = Some(WRONG.into());
    let p = ProxmoxProvider::new(cfg).unwrap();
    let e = p.list(ListFilter::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("certificate fingerprint mismatch: expected sha256:00:11:22"),
        "{text}"
    );
    assert!(
        text.contains(&format!("server presented sha256:{}", emu.fingerprint().unwrap())),
        "{text}"
    );

    let checks = p.validate().await;
    let api = checks.iter().find(|c| c.name == "api").unwrap();
    assert_eq!(api.status, CheckStatus::Fail);
    assert!(api.detail.contains("fingerprint mismatch"), "{}", api.detail);
    assert!(emu.requests().is_empty(), "no request got through");
}

#[tokio::test]
async fn default_verification_refuses_an_unknown_ca() {
    let emu = emulator().await;
    let mut cfg = config(&emu);
    cfg.tls_fingerprint = None;
    let p = ProxmoxProvider::new(cfg).unwrap();
    let e = p.list(ListFilter::default()).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("certificate not trusted"), "{text}");
    assert!(text.contains("ca_file") && text.contains("tls_fingerprint"), "{text}");

    let c = PveClient::new(ClientOptions::new(
        &emu.base_url(),
        &emu.token_id(),
        berth_core::Secret::new("x"),
    ))
    .unwrap();
    assert!(matches!(c.version().await.unwrap_err(), PveError::Tls { .. }));
}

#[tokio::test]
async fn ca_file_with_the_server_certificate_is_accepted() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("pve-root-ca.pem");
    std::fs::write(&ca, emu.cert_pem().unwrap()).unwrap();
    let mut cfg = config(&emu);
    cfg.tls_fingerprint = None;
    cfg.ca_file = Some(ca.clone());
    ProxmoxProvider::new(cfg.clone())
        .unwrap()
        .list(ListFilter::default())
        .await
        .expect("CA-verified connection");

    // The host name is still checked: the certificate names 127.0.0.1 and localhost.
    cfg.api_url = emu.base_url().replace("127.0.0.1", "localhost");
    ProxmoxProvider::new(cfg)
        .unwrap()
        .list(ListFilter::default())
        .await
        .expect("localhost is in the certificate");

    let pem = berth_proxmox::client::parse_pem_certs(emu.cert_pem().unwrap().as_bytes()).unwrap();
    let mut o = ClientOptions::new(
        &emu.base_url(),
        &emu.token_id(),
        berth_core::Secret::new(emu.token_secret()),
    );
    o.tls = TlsOptions {
        ca_certs: pem,
        ..TlsOptions::default()
    };
    PveClient::new(o).unwrap().version().await.expect("client with the CA");
}

#[tokio::test]
async fn verification_can_be_turned_off_explicitly() {
    let emu = emulator().await;
    let mut cfg = config(&emu);
    cfg.tls_fingerprint = None;
    cfg.verify_ssl = false;
    ProxmoxProvider::new(cfg)
        .unwrap()
        .list(ListFilter::default())
        .await
        .expect("insecure mode connects");
}

#[tokio::test]
async fn bad_tls_material_is_a_config_error() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut cfg = config(&emu);
    cfg.tls_fingerprint = None;
    cfg.ca_file = Some(bad);
    let e: ConfigError = ProxmoxProvider::new(cfg.clone()).unwrap_err();
    assert_eq!(e.key, "ca_file");
    assert!(e.message.contains("no PEM certificate"), "{e}");
    cfg.ca_file = Some(dir.path().join("missing.pem"));
    assert_eq!(ProxmoxProvider::new(cfg).unwrap_err().key, "ca_file");
    assert_eq!(
        Fingerprint::parse(&emu.fingerprint().unwrap()).unwrap().to_string(),
        emu.fingerprint().unwrap()
    );
}
