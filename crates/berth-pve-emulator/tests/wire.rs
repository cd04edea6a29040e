//! Wire conventions: envelope (new and old), headers, 401, 501, nextid, TLS fingerprint, params, ACLs.

mod common;

use berth_pve_emulator::EmulatorConfig;
use common::{Api, fast_config, start, start_with};
use serde_json::json;
use sha2::Digest;

#[tokio::test]
async fn success_envelope_and_headers() {
    let api = start().await;
    let r = api.get("/version").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["server"], "pve-api-daemon/3.0");
    assert_eq!(r.headers["content-type"], "application/json;charset=UTF-8");
    assert!(
        r.data()["version"].as_str().is_some_and(|v| v.starts_with('9')),
        "{}",
        r.raw
    );
    assert!(r.headers.get("connection").is_none_or(|c| c != "close"));
}

#[tokio::test]
async fn error_envelope_new_style() {
    let api = start().await;
    let r = api.get("/cluster/nextid?vmid=9000").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason, "Parameter verification failed.");
    assert_eq!(
        r.body,
        json!({"data": null, "errors": {"vmid": "VM 9000 already exists"}, "message": "Parameter verification failed.\n"})
    );
    assert_eq!(r.headers["connection"], "close");

    let r = api.put("/nodes/pve1/qemu/555/config", &[("cores", "2")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/555.conf' does not exist"
    );
    assert_eq!(
        r.body,
        json!({"data": null, "message": "Configuration file 'nodes/pve1/qemu-server/555.conf' does not exist\n"})
    );
}

#[tokio::test]
async fn error_envelope_old_style() {
    let api = start_with(EmulatorConfig {
        old_error_envelope: true,
        ..fast_config()
    })
    .await;
    let r = api.get("/cluster/nextid?vmid=9001").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"data": null, "errors": {"vmid": "VM 9001 already exists"}})
    );
    let r = api.get("/nodes/pve1/qemu/9001/status/current").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/9001.conf' does not exist"
    );
    assert_eq!(r.raw, r#"{"data":null}"#);
}

#[tokio::test]
async fn unauthorized_requests_get_401_after_the_delay() {
    let api = start().await;
    let bad = api
        .client
        .get(api.url("/version"))
        .header("Authorization", "PVEAPIToken=berth@pve!agent=wrong");
    let r = api.send(bad).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason, "Authentication failed!");
    assert!(r.raw.is_empty());
    let r = api.send(api.client.get(api.url("/version"))).await;
    assert_eq!(r.status, 401);
    let unknown = api
        .client
        .get(api.url("/version"))
        .header("Authorization", "PVEAPIToken=nobody@pve!x=abc");
    assert_eq!(api.send(unknown).await.status, 401);
    // The header value may be URI-escaped.
    let escaped = format!("PVEAPIToken=berth%40pve%21agent={}", api.h.token_secret());
    let r = api
        .send(api.client.get(api.url("/version")).header("Authorization", escaped))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(api.h.requests().iter().any(|q| q.status == 401 && q.path == "/version"));
}

#[tokio::test]
async fn unknown_paths_and_bodies_on_get_are_501() {
    let api = start().await;
    let r = api.get("/foo").await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (501, "Method 'GET /foo' not implemented")
    );
    assert_eq!(r.body["message"], "Method 'GET /foo' not implemented\n");
    let r = api.delete("/version").await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (501, "Method 'DELETE /version' not implemented")
    );
    let with_body = api
        .client
        .get(api.url("/version"))
        .header("Authorization", &api.auth)
        .body("x=1");
    let r = api.send(with_body).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (501, "Unexpected content for method 'GET'")
    );
    let with_body = api
        .client
        .delete(api.url("/nodes/pve1/qemu/9000"))
        .header("Authorization", &api.auth)
        .body("purge=1");
    let r = api.send(with_body).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (501, "Unexpected content for method 'DELETE'")
    );
    assert!(api.guest(9000).is_some());
}

#[tokio::test]
async fn nextid_is_a_string() {
    let api = start().await;
    assert_eq!(api.get("/cluster/nextid").await.body, json!({"data": "100"}));
    assert_eq!(api.get("/cluster/nextid?vmid=4242").await.body, json!({"data": "4242"}));
    api.h.add_foreign_vm("pve2", 100, "other");
    assert_eq!(api.get("/cluster/nextid").await.body, json!({"data": "101"}));
}

#[tokio::test]
async fn fingerprint_matches_the_served_certificate() {
    let api = start().await;
    let fp = api.h.fingerprint().expect("TLS has a fingerprint");
    assert!(api.h.base_url().starts_with("https://127.0.0.1:"));
    let res = api
        .client
        .get(api.url("/nodes"))
        .header("Authorization", &api.auth)
        .send()
        .await
        .unwrap();
    let info = res
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info")
        .clone();
    let der = info.peer_certificate().expect("peer certificate");
    let served: Vec<String> = sha2::Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(served.join(":"), fp);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["ssl_fingerprint"] == fp.as_str())
    );
}

#[tokio::test]
async fn plain_http_works() {
    let api = start_with(EmulatorConfig {
        tls: false,
        ..fast_config()
    })
    .await;
    assert!(api.h.base_url().starts_with("http://127.0.0.1:"));
    assert!(api.h.fingerprint().is_none() && api.h.cert_pem().is_none());
    assert_eq!(api.get("/nodes").await.data().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn query_overrides_body_and_json_bodies_work() {
    let api = start().await;
    api.clone_9000(120, &[]).await;
    let r = api.put("/nodes/pve1/qemu/120/config?cores=3", &[("cores", "2")]).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, json!({"data": null}));
    let json_put = api
        .client
        .put(api.url("/nodes/pve1/qemu/120/config"))
        .header("Authorization", &api.auth)
        .json(&json!({"sockets": 2, "onboot": true}));
    assert_eq!(api.send(json_put).await.status, 200);
    let cfg = api.get("/nodes/pve1/qemu/120/config").await;
    assert_eq!(cfg.data()["cores"], 3);
    assert_eq!(cfg.data()["sockets"], 2);
    assert_eq!(cfg.data()["onboot"], 1);
    let rec = api.h.requests();
    let put = rec
        .iter()
        .find(|r| r.method == "PUT" && r.path == "/nodes/pve1/qemu/120/config")
        .unwrap();
    assert_eq!(put.params, vec![("cores".to_string(), "3".to_string())]);
}

async fn limited(api: &Api, acl: Vec<(&str, Vec<&str>)>) -> String {
    let acl = acl
        .into_iter()
        .map(|(p, v)| (p.to_string(), v.into_iter().map(str::to_string).collect()))
        .collect();
    api.h.add_token("ops@pve!ro", "sekrit", acl);
    "PVEAPIToken=ops@pve!ro=sekrit".to_string()
}

#[tokio::test]
async fn token_acls_filter_lists_and_produce_403() {
    let api = start().await;
    let auth = limited(
        &api,
        vec![
            ("/vms/9000", vec!["VM.Audit", "VM.Clone"]),
            ("/storage/local-lvm", vec!["Datastore.Audit"]),
        ],
    )
    .await;
    let get = |p: &str| api.client.get(api.url(p)).header("Authorization", &auth);
    let r = api.send(get("/cluster/resources?type=vm")).await;
    let ids: Vec<u64> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![9000]);
    let r = api.send(get("/nodes/pve1/storage")).await;
    let names: Vec<&str> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["storage"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["local-lvm"]);
    assert_eq!(api.send(get("/pools")).await.body, json!({"data": []}));
    let r = api.send(get("/access/permissions")).await;
    assert_eq!(r.data()["/vms/9000"], json!({"VM.Audit": 1, "VM.Clone": 1}));
    let r = api
        .send(get("/nodes/pve1/qemu/9000/agent/network-get-interfaces"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.reason,
        "Permission check failed (/vms/9000, VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted)"
    );
    let clone = api
        .client
        .post(api.url("/nodes/pve1/qemu/9000/clone"))
        .header("Authorization", &auth)
        .form(&[("newid", "130")]);
    let r = api.send(clone).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "Permission check failed (/vms/130, VM.Allocate)")
    );
    let r = api
        .send(
            api.client
                .get(api.url("/nodes/pve1/status"))
                .header("Authorization", &auth),
        )
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "Permission check failed (/nodes/pve1, Sys.Audit)")
    );
    // Root-only options stay root-only for tokens.
    let r = api
        .put("/nodes/pve1/qemu/9000/config?skiplock=1", &[("cores", "2")])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"]["skiplock"], "Only root may use this option.");
}

#[tokio::test]
async fn guests_are_only_found_on_their_node() {
    let api = start().await;
    let r = api.get("/nodes/pve2/qemu/9000/status/current").await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            500,
            "Configuration file 'nodes/pve2/qemu-server/9000.conf' does not exist"
        )
    );
    let r = api.get("/nodes/pve1/lxc/9000/status/current").await;
    assert_eq!(r.reason, "Configuration file 'nodes/pve1/lxc/9000.conf' does not exist");
    let r = api.get("/nodes/pve9/qemu").await;
    assert_eq!(r.status, 500);
    assert!(r.reason.starts_with("hostname lookup 'pve9' failed"), "{}", r.reason);
    let r = api.get("/nodes/pve1/status").await;
    assert_eq!(r.data()["cpuinfo"]["cpus"], 16);
    assert_eq!(r.data()["memory"]["total"], 64u64 << 30);
}

#[tokio::test]
async fn schema_violations_are_400_and_recorded() {
    let api = start().await;
    if !api.h.schema_loaded() {
        eprintln!("skipping: the PVE schema (../shared/pve/apidata.json or BERTH_PVE_SCHEMA) is absent");
        return;
    }
    let r = api
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "130"), ("name", "my_vm"), ("bogus", "1")],
        )
        .await;
    assert_eq!((r.status, r.reason.as_str()), (400, "Parameter verification failed."));
    assert!(r.body["errors"]["name"].as_str().is_some(), "{}", r.raw);
    assert!(r.body["errors"]["bogus"].as_str().is_some(), "{}", r.raw);
    let v = api.h.schema_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("POST /nodes/pve1/qemu/9000/clone: "), "{v:?}");
    assert!(api.guest(130).is_none());
}

#[tokio::test]
async fn without_a_schema_handlers_still_check_required_params() {
    let api = start_with(EmulatorConfig {
        schema_path: None,
        ..fast_config()
    })
    .await;
    assert!(!api.h.schema_loaded());
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["errors"],
        json!({"newid": "property is missing and it is not optional"})
    );
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "abc")]).await;
    assert_eq!(
        r.body["errors"],
        json!({"newid": "type check ('integer') failed - got 'abc'"})
    );
    let r = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "130"), ("full", "true")])
        .await;
    assert_eq!(
        r.body["errors"],
        json!({"full": "type check ('boolean') failed - got 'true'"})
    );
    let r = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "130"), ("node", "pve2")])
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["errors"]["node"]
            .as_str()
            .unwrap()
            .starts_with("duplicate parameter")
    );
}

#[tokio::test]
async fn binary_prints_its_coordinates_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth-pve-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-tls",
            "--token-secret",
            "bin-secret",
            "--clone-ms",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut kv = std::collections::BTreeMap::new();
    while kv.len() < 3 {
        let line = lines.next_line().await.unwrap().expect("a line");
        let (k, v) = line.split_once('=').expect("key=value");
        kv.insert(k.to_string(), v.to_string());
    }
    assert!(kv["url"].starts_with("http://127.0.0.1:"));
    assert_eq!(kv["token_id"], "berth@pve!agent");
    assert_eq!(kv["token_secret"], "bin-secret");
    let res = reqwest::Client::new()
        .get(format!("{}/api2/json/cluster/nextid", kv["url"]))
        .header("Authorization", "PVEAPIToken=berth@pve!agent=bin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap(), json!({"data": "100"}));
    child.kill().await.expect("child stops");
}
