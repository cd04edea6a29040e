//! The committed OpenAPI document (`docs/openapi.json`) is what the code generates. When this
//! fails, regenerate it: `BERTH_UPDATE_OPENAPI=1 cargo test -p berth-server --test openapi`.

#[test]
fn committed_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    // Keys sorted: serde_json keeps insertion order when another crate of the build turns on
    // its `preserve_order` feature, so the order would depend on what else was compiled.
    let fresh = serde_json::to_string_pretty(&sorted(berth_server::openapi())).unwrap() + "\n";
    if std::env::var("BERTH_UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/openapi.json is stale: regenerate it with `BERTH_UPDATE_OPENAPI=1 cargo test -p berth-server --test openapi`"
    );
}

#[test]
fn every_route_is_documented_with_problems() {
    let doc = serde_json::to_value(berth_server::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{}", paths.len());
    for p in [
        "/api/v1/orders",
        "/api/v1/operations/{id}/events",
        "/api/v1/providers/{pubkey}/contracts/pending-provision",
        "/api/v1/agent/claim",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    for (p, ops) in paths {
        for (m, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"].get("4XX").is_some(),
                "{m} {p} documents no problem response"
            );
        }
    }
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}
