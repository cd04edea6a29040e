//! `berth server` as a real process on SQLite, driven by the client commands an operator, a
//! provider and a customer run: accounts, setup token, offering, order, `op wait`, instances,
//! and `berth audit verify` offline (intact, then after tampering with the database file).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_api::client::{Auth, Client};
use berth_api::httpsig::RequestSigner;
use berth_api::wire::*;
use common::{KEY, berth};

const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str], server: &str, token: Option<&std::path::Path>) -> std::process::Output {
    let mut c = berth();
    c.args(args).env("BERTH_SERVER", server).env_remove("BERTH_TOKEN");
    if let Some(t) = token {
        c.arg("--token-file").arg(t);
    }
    c.output().unwrap()
}

fn json(args: &[&str], server: &str, token: &std::path::Path) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = run(&a, server, Some(token));
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn server_and_client_commands_from_order_to_audit() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = dir.path().join("data/berth.db");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[database]\nsqlite = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Server(
        berth()
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server came up");
    let op_token = dir.path().join("data/operator.token");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&op_token).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let write = |name: &str, token: &serde_json::Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, token.as_str().unwrap()).unwrap();
        p
    };
    let provider = json(&["provider", "create", "acme"], &url, &op_token);
    let p_token = write("provider.token", &provider["token"]);
    // Provider names are unique: a conflict (exit 4) naming the name, not a server error.
    let again = run(&["provider", "create", "acme", "-o", "json"], &url, Some(&op_token));
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(4), "{text}");
    assert!(
        text.contains("\"code\": \"name_taken\"") && text.contains("acme"),
        "{text}"
    );
    let customer = json(&["customer", "create", "alice"], &url, &op_token);
    let c_token = write("customer.token", &customer["token"]);
    let setup = json(&["agent-token", "create", "--ttl", "1h"], &url, &p_token);

    // Operators list customers; every account manages its API tokens; quotas are shown and set.
    let customers = json(&["customer", "list"], &url, &op_token);
    assert_eq!(customers[0]["name"], "alice");
    let ci = json(&["token", "create", "ci", "--ttl", "30d"], &url, &c_token);
    let ci_token = write("ci.token", &ci["token"]);
    let listed = json(&["token", "list"], &url, &ci_token);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let revoked = json(&["token", "revoke", ci["id"].as_str().unwrap()], &url, &c_token);
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    let cid = customer["id"].as_str().unwrap();
    let q = json(&["quota", "set", cid, "--instances", "7"], &url, &op_token);
    assert_eq!(
        (q["instances"].as_i64(), q["own"]["instances"].as_i64()),
        (Some(7), Some(7))
    );
    let q = json(&["quota", "show", cid], &url, &c_token);
    assert_eq!(q["instances"], 7);
    // The provider bounds what each of its customers holds of its instances.
    json(
        &["quota", "set-customer", "default", "--instances", "5"],
        &url,
        &p_token,
    );

    // An agent enrolls with the setup token and reports in.
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let a = Client::new(&url, Auth::None)
        .enroll(setup["token"].as_str().unwrap(), "a1", &key)
        .await
        .unwrap();
    let agent = Client::new(&url, Auth::Signed(RequestSigner::new(key, a.id)));
    agent
        .heartbeat(&Heartbeat {
            version: "t".into(),
            capacity: CapacityReport {
                cores_total: 8,
                cores_free: 8,
                memory_mib_total: 8192,
                memory_mib_free: 8192,
                disk_gib_total: 100,
                disk_gib_free: 100,
                unmetered: false,
            },
            backends: vec![],
            drift: vec![],
            site_drift: None,
            pools: Vec::new(),
        })
        .await
        .unwrap();

    let offering = json(
        &[
            "offering",
            "create",
            "--name",
            "small",
            "--cores",
            "1",
            "--memory-mib",
            "512",
            "--disk-gib",
            "10",
            "--price",
            "4.99EUR/month",
            "--label",
            "ssd=yes",
            "--region",
            "eu-1",
        ],
        &url,
        &p_token,
    );
    let found = json(
        &["offering", "list", "--label", "ssd=yes", "--cores", "1"],
        &url,
        &c_token,
    );
    assert_eq!(found[0]["id"], offering["id"]);
    // Its provider sees, per agent, whether it can be ordered now.
    let out = run(
        &["offering", "show", offering["id"].as_str().unwrap()],
        &url,
        Some(&p_token),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\nprice        4.99 EUR/month\n")
            && text.contains("\norderable    yes")
            && text.contains(": can take it"),
        "{text}"
    );
    assert_eq!(
        offering["price"]["amount"], 499,
        "major units on the command line, minor on the wire"
    );
    offering_names_changes_and_withdrawals(&url, &p_token, &c_token, offering["id"].as_str().unwrap());
    // A private key or a missing file is refused here, before any request (the message names
    // the flag typed, not the API's field).
    let private = dir.path().join("id_ed25519");
    std::fs::write(
        &private,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let offering_id = offering["id"].as_str().unwrap();
    for (key, says) in [
        (
            private.display().to_string(),
            "this is a private key; pass the public key",
        ),
        ("nofile.pub".to_owned(), "no such file: nofile.pub"),
    ] {
        let args = [
            "order",
            "create",
            "--offering",
            offering_id,
            "--name",
            "web-0",
            "--ssh-key",
            &key,
            "--requester-key",
            AGE,
        ];
        let out = run(&args, &url, Some(&c_token));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--ssh-key") && err.contains(says) && !err.contains("b3Bl"),
            "{err}"
        );
    }
    let order = json(
        &[
            "order",
            "create",
            "--offering",
            offering_id,
            "--name",
            "web-1",
            "--ssh-key",
            KEY,
            "--requester-key",
            AGE,
        ],
        &url,
        &c_token,
    );
    let op = order["operation_id"].as_str().unwrap().to_owned();
    // Now a customer of the provider: it gets its own numbers, and reads what is in force.
    let q = json(
        &["quota", "set-customer", cid, "--pending-instances", "2"],
        &url,
        &p_token,
    );
    assert_eq!(
        (q["instances"].as_i64(), q["pending_instances"].as_i64()),
        (None, Some(2))
    );
    let pid = provider["id"].as_str().unwrap();
    let q = json(&["quota", "customer", cid, "--provider", pid], &url, &c_token);
    assert_eq!(
        (q["instances"].as_i64(), q["pending_instances"].as_i64()),
        (Some(5), Some(2))
    );
    let listed = json(&["quota", "customers"], &url, &p_token);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // The agent works the order while the customer follows it.
    let worker = tokio::spawn(async move {
        let w = agent.claim(Duration::from_secs(20)).await.unwrap().unwrap();
        for s in ["clone_template", "start_vm"] {
            agent
                .report(
                    &w.operation_id,
                    w.generation,
                    vec![EventReport {
                        stage: s.into(),
                        phase: "completed".into(),
                        percent: None,
                        message: None,
                    }],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let r = OpResult {
            vm_id: Some("101".into()),
            ip_address: Some("192.0.2.7".into()),
            ..Default::default()
        };
        agent
            .complete(&w.operation_id, w.generation, Completion::Succeeded(r))
            .await
            .unwrap();
    });
    let out = tokio::task::spawn_blocking({
        let (url, c_token, op) = (url.clone(), c_token.clone(), op.clone());
        move || run(&["op", "wait", &op, "--timeout", "60s"], &url, Some(&c_token))
    })
    .await
    .unwrap();
    worker.await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("succeeded 100%") && stdout.contains("192.0.2.7"),
        "{stdout}"
    );
    assert!(
        stderr.contains("clone_template") && stderr.contains("start_vm"),
        "progress lines: {stderr}"
    );
    let list = json(&["instance", "list"], &url, &c_token);
    assert_eq!(
        (list[0]["status"].as_str(), list[0]["vm_id"].as_str()),
        (Some("running"), Some("101"))
    );
    // The audit log as a person reads it: times in RFC 3339 UTC, not epoch milliseconds.
    let out = run(&["audit", "list"], &url, Some(&op_token));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("   SEQ TIME") && text.contains("Z provider.created"),
        "{text}"
    );
    // Filtered by action (a prefix) and actor; followed as it grows.
    let out = run(
        &["audit", "list", "--action", "provider.", "--since", "1h"],
        &url,
        Some(&op_token),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("provider.created") && !text.contains("customer.created"),
        "{text}"
    );
    let out = run(&["audit", "list", "--actor", "nobody"], &url, Some(&op_token));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no entries");
    let all = json(&["audit", "list", "--limit", "1000"], &url, &op_token);
    let last = all.as_array().unwrap().last().unwrap()["seq"].to_string();
    let mut follow = Server(
        berth()
            .args([
                "audit",
                "list",
                "--follow",
                "--action",
                "quota.",
                "--after",
                &last,
                "--token-file",
            ])
            .arg(&op_token)
            .env("BERTH_SERVER", &url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = std::io::BufReader::new(follow.0.stdout.take().unwrap());
    json(&["quota", "set", cid, "--tokens", "9"], &url, &op_token);
    let seen = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        lines.lines().map_while(Result::ok).find(|l| l.contains("quota.set"))
    });
    let seen = tokio::time::timeout(Duration::from_secs(20), seen)
        .await
        .expect("followed in time");
    assert!(seen.unwrap().is_some_and(|l| l.contains(&format!("account:{cid}"))));
    drop(follow);
    // Every action takes an idempotency key: the same key, the same operation (a retry queues
    // nothing more), and names work where ids do.
    let id = list[0]["id"].as_str().unwrap();
    let stop = |key: &str| json(&["instance", "stop", "web-1", "--idempotency-key", key], &url, &c_token);
    let (first, again) = (stop("stop-1"), stop("stop-1"));
    assert!(first["operation_id"].is_string(), "{first}");
    assert_eq!(first["operation_id"], again["operation_id"]);
    assert_ne!(stop("stop-2")["operation_id"], first["operation_id"]);
    // Terminating asks first; without a terminal it needs --yes, and nothing is queued.
    let out = run(&["instance", "terminate", id], &url, Some(&c_token));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("confirm with --yes"));
    assert_eq!(json(&["instance", "show", id], &url, &c_token)["status"], "running");
    // A customer is not an operator: exit code 5, not allowed.
    let out = run(&["provider", "create", "x"], &url, Some(&c_token));
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM: the server stops cleanly.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.0.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = child.0.wait().unwrap();
        std::mem::forget(child);
        s
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");

    let verify = |args: &[&str]| {
        let mut c = berth();
        c.args(args).arg("--config").arg(&config);
        c.output().unwrap()
    };
    let out = verify(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit log intact"));
    // Someone edits an entry in the database file: verify names it.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'operator' WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let out = verify(&["audit", "verify", "-o", "json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["ok"].as_bool(), v["broken_at"].as_i64()), (Some(false), Some(3)));
}

#[test]
fn a_bad_server_config_names_file_place_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[database]\nsqlite = \"x.db\"\n[agents]\nlease_ttl_seconds = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("server")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.toml") && err.contains("agents.lease_ttl_seconds"),
        "{err}"
    );
}

/// Offering names are unique per provider; `offering update` changes the flags named; a
/// withdrawn offering is listed for its provider with `--all` (customers may not ask).
fn offering_names_changes_and_withdrawals(url: &str, p: &std::path::Path, c: &std::path::Path, id: &str) {
    let create = |name: &str| {
        run(
            &[
                "offering",
                "create",
                "--name",
                name,
                "--cores",
                "1",
                "--memory-mib",
                "512",
                "--disk-gib",
                "10",
                "-o",
                "json",
            ],
            url,
            Some(p),
        )
    };
    let taken = create("small");
    let text = String::from_utf8_lossy(&taken.stdout);
    assert_eq!(taken.status.code(), Some(4), "a conflict: {text}");
    assert!(text.contains("\"code\": \"name_taken\""), "{text}");

    let changed = json(
        &["offering", "update", id, "--price", "5EUR/month", "--label", "none"],
        url,
        p,
    );
    assert_eq!(
        (&changed["price"]["amount"], &changed["labels"], &changed["cores"]),
        (&serde_json::json!(500), &serde_json::json!({}), &serde_json::json!(1)),
        "only the flags named change: {changed}"
    );

    let tmp = String::from_utf8_lossy(&create("tmp").stdout).into_owned();
    let tmp: serde_json::Value = serde_json::from_str(&tmp).unwrap();
    let tmp_id = tmp["id"].as_str().unwrap();
    json(&["offering", "withdraw", tmp_id], url, p);
    let on_sale = json(&["offering", "list"], url, p);
    assert!(on_sale.as_array().unwrap().iter().all(|o| o["id"] != tmp["id"]));
    let out = run(&["offering", "list", "--all"], url, Some(p));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ID ") && text.lines().any(|l| l.starts_with(tmp_id) && l.ends_with("withdrawn")),
        "{text}"
    );
    let out = run(&["offering", "list", "--all"], url, Some(c));
    assert_eq!(
        out.status.code(),
        Some(5),
        "not allowed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("withdrawn offerings"));
}
