//! HTTPS on the control plane, with a real `berth server` process: it serves the certificate in
//! `[tls]` (and says its fingerprint); the CLI trusts it through `--ca-file` or a pin and refuses
//! an untrusted or mismatched certificate with a message that says what to do; the agent
//! enrolls and runs over it with `ca_file`; SIGHUP swaps the certificate for new connections;
//! every answer carries HSTS; plain HTTP on a non-loopback address is refused at start.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_api::client::{Auth, Client, ClientError, TlsOptions};
use common::berth;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 in `name.crt` / `name.key`; its sha256 pin.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let pin = format!("sha256:{}", berth_tls::Fingerprint::of(c.cert.der()));
    (cert, key, pin)
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cli(args: &[&str], url: &str, token: &Path, tls: &[&str]) -> std::process::Output {
    berth()
        .args(args)
        .args(["--server", url, "--token-file"])
        .arg(token)
        .args(tls)
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_CA_FILE")
        .env_remove("BERTH_TLS_FINGERPRINT")
        .output()
        .unwrap()
}

fn pinned(url: &str, pin: &str) -> Client {
    let tls = TlsOptions::from_files(None, Some(pin)).unwrap();
    Client::with_tls(url, Auth::None, &tls).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_serves_https_that_clients_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pin) = certificate(dir.path(), "server");
    let port = port();
    let config = dir.path().join("server.toml");
    let token = dir.path().join("operator.token");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[database]\nsqlite = \"{}\"\n[api]\noperator_token_file = \"{}\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.path().join("berth.db").display(),
            token.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = berth()
        .args(["server", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = format!("https://127.0.0.1:{port}");
    let mut said = Vec::new();
    while !said.iter().any(|l: &String| l.contains("TLS certificate sha256:")) {
        said.push(rx.recv_timeout(Duration::from_secs(30)).expect("berth server starts"));
    }
    assert!(
        said.iter().any(|l| l.contains(&format!("listening on {url}"))),
        "{said:?}"
    );
    assert!(said.iter().any(|l| l.contains(&pin)), "prints the pin: {said:?}");

    // The CLI: a CA file or the pin is trusted; nothing, or another pin, is refused and says why.
    let list = ["provider", "list"];
    let ok = cli(&list, &url, &token, &["--ca-file", cert.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let ok = cli(&list, &url, &token, &["--tls-fingerprint", &pin]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let untrusted = cli(&list, &url, &token, &[]);
    let text = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(
        text.contains("certificate not trusted") && text.contains("--ca-file"),
        "{text}"
    );
    let (_, _, other) = certificate(dir.path(), "other");
    let wrong = cli(&list, &url, &token, &["--tls-fingerprint", &other]);
    let text = String::from_utf8_lossy(&wrong.stderr);
    assert!(text.contains("certificate fingerprint mismatch"), "{text}");
    let bad = cli(&list, &url, &token, &["--tls-fingerprint", "AB:CD"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--tls-fingerprint"),
        "names the flag"
    );

    // Each request is in the access log: route, status, caller, client; never the token.
    let secret = std::fs::read_to_string(&token).unwrap().trim().to_owned();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        while let Ok(l) = rx.try_recv() {
            said.push(l);
        }
        let logged = said.iter().any(|l| {
            l.contains("route=/api/v1/providers")
                && l.contains("status=200")
                && l.contains("caller=operator")
                && l.contains("client=127.0.0.1")
        });
        if logged {
            break;
        }
        assert!(Instant::now() < until, "no access log line: {said:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!said.iter().any(|l| l.contains(&secret)), "a token in the log");

    // HSTS on every answer.
    let http = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap()])
        .build()
        .unwrap();
    let r = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );

    // The agent enrolls and heartbeats over HTTPS, trusting the CA file.
    let operator = Client::with_tls(
        &url,
        Auth::Bearer(std::fs::read_to_string(&token).unwrap().trim().into()),
        &TlsOptions::from_files(Some(&cert), None).unwrap(),
    )
    .unwrap();
    let p = operator.create_provider("acme").await.unwrap();
    let setup = operator.create_enrollment_token(&p.id, None).await.unwrap();
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent_toml = agent_dir.join("berth.toml");
    // The agent refuses a server whose certificate is not the one it trusts: another CA file, or
    // another pin; nothing is enrolled (the setup token stays usable).
    let agent_with = |file: &Path, api_tls: String| {
        std::fs::write(
            file,
            format!(
                "[provisioner]\ntype = \"manual\"\n\n[api]\nendpoint = \"{url}\"\n{api_tls}\n\n[agent]\nstate_dir = \"state\"\n\n[polling]\nheartbeat_interval_seconds = 1\n"
            ),
        )
        .unwrap();
    };
    let enroll = || {
        berth()
            .args(["agent", "enroll", "--name", "tls", "--config"])
            .arg(&agent_toml)
            .env("BERTH_SETUP_TOKEN", &setup.token)
            .output()
            .unwrap()
    };
    let (other_cert, _, other_pin) = certificate(dir.path(), "other");
    for wrong in [
        format!("ca_file = \"{}\"", other_cert.display()),
        format!("tls_fingerprint = \"{other_pin}\""),
    ] {
        agent_with(&agent_toml, wrong.clone());
        let out = enroll();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "enrolled with {wrong}");
        assert!(err.contains("certificate"), "{wrong}: {err}");
    }
    agent_with(&agent_toml, format!("ca_file = \"{}\"", cert.display()));
    let out = enroll();
    assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
    let mut agent = Server(
        berth()
            .args(["agent", "--config"])
            .arg(&agent_toml)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(30);
    while !operator.agents().await.unwrap().iter().any(|a| a.alive) {
        assert!(Instant::now() < until, "no heartbeat over HTTPS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `berth agent status`: identity, backends, journal, and the control plane's view.
    let status = |config: &Path| {
        berth()
            .args(["agent", "status", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let out = status(&agent_toml);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "(tls) of provider",
        "  manual (manual)",
        "journal: no operation in progress",
        "control plane: alive",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    // The same agent pinning the server's certificate instead of trusting a CA.
    let pinned_toml = agent_dir.join("pinned.toml");
    agent_with(&pinned_toml, format!("tls_fingerprint = \"{pin}\""));
    let out = status(&pinned_toml);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pinned: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("control plane: alive"), "pinned: {text}");
    let _ = agent.0.kill();

    // SIGHUP: new connections get the new certificate; one open before it stays up. A client
    // pinned to the old certificate keeps asking over its connection throughout: a dropped
    // connection would have to be made again, and the old pin would refuse the new certificate.
    let kept = pinned(&url, &pin);
    assert!(!matches!(kept.agents().await, Err(ClientError::Transport { .. })));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = tokio::spawn({
        let done = done.clone();
        async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e @ ClientError::Transport { .. }) = kept.agents().await {
                    return Err(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(())
        }
    });
    let (cert2, key2, pin2) = certificate(dir.path(), "next");
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.0.id() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        // Unauthenticated: past the handshake the server answers 401; before, the pin fails.
        if !matches!(pinned(&url, &pin2).agents().await, Err(ClientError::Transport { .. })) {
            break;
        }
        assert!(Instant::now() < until, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    asking
        .await
        .unwrap()
        .expect("the connection open before the reload stayed up");
    let old = pinned(&url, &pin).agents().await.unwrap_err().to_string();
    assert!(old.contains("certificate fingerprint mismatch"), "{old}");
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:{}\"\n[database]\nsqlite = \"{}\"\n",
            port(),
            dir.path().join("b.db").display()
        ),
    )
    .unwrap();
    let out = berth().args(["server", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("listen:") && text.contains("allow_plaintext"), "{text}");
}
