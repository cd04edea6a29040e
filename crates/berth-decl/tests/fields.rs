//! The field table (`src/fields_table.rs`) is what `apidata.json` says: per kind, every parameter
//! of the create call, whether only the create call takes it, and its default. Skips with a
//! printed reason without `../shared`; `BERTH_UPDATE_FIELDS=1` rewrites the table.

use std::path::PathBuf;

use serde_json::Value;

fn find<'a>(nodes: &'a [Value], path: &str) -> Option<&'a Value> {
    for n in nodes {
        if n["path"] == path {
            return Some(n);
        }
        if let Some(r) = n["children"].as_array().and_then(|c| find(c, path)) {
            return Some(r);
        }
    }
    None
}

fn props<'a>(api: &'a [Value], path: &str, method: &str) -> &'a serde_json::Map<String, Value> {
    find(api, path)
        .and_then(|n| n["info"][method]["parameters"]["properties"].as_object())
        .unwrap_or_else(|| panic!("{method} {path} in apidata"))
}

/// A default as Berth compares it: booleans 1/0, numbers as text, descriptive text dropped.
fn default_of(p: &Value) -> Option<String> {
    let d = p.get("default")?;
    let text = match d {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if p["type"] == "boolean" {
        return Some(
            if matches!(text.as_str(), "1" | "yes" | "true" | "on") {
                "1"
            } else {
                "0"
            }
            .into(),
        );
    }
    (!text.contains(' ')).then_some(text)
}

fn table(api: &[Value], name: &str, create: (&str, &str), update: (&str, &str), skip: &[&str]) -> String {
    let post = props(api, create.0, create.1);
    let put = props(api, update.0, update.1);
    let mut out = format!("#[rustfmt::skip]\npub(crate) const {name}: &[Field] = &[\n");
    for (k, p) in post {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let create_only = !put.contains_key(k);
        let default = default_of(p).map_or("None".to_owned(), |d| format!("Some({d:?})"));
        let boolean = p["type"] == "boolean";
        out.push_str(&format!(
            "    Field {{ name: {k:?}, create_only: {create_only}, default: {default}, boolean: {boolean} }},\n"
        ));
    }
    out.push_str("];\n");
    out
}

#[test]
fn the_field_table_is_what_the_schema_says() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let schema = manifest.join("../../../shared/pve/apidata.json");
    if !schema.is_file() {
        println!("skipped: {} is not there", schema.display());
        return;
    }
    let api: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&schema).unwrap()).unwrap();
    let mut src = String::from(
        "//! Generated from `../shared/pve/apidata.json` by `tests/fields.rs`; do not edit\n\
         //! (`BERTH_UPDATE_FIELDS=1 cargo nextest run -p berth-decl --test fields` rewrites it).\n\n\
         use crate::fields::Field;\n\n",
    );
    src += &table(
        &api,
        "STORAGE",
        ("/storage", "POST"),
        ("/storage/{storage}", "PUT"),
        &["storage"],
    );
    src += "\n";
    src += &table(
        &api,
        "NETWORK",
        ("/nodes/{node}/network", "POST"),
        ("/nodes/{node}/network/{iface}", "PUT"),
        &["node", "iface"],
    );
    src += "\n";
    src += &table(
        &api,
        "BACKUP",
        ("/cluster/backup", "POST"),
        ("/cluster/backup/{id}", "PUT"),
        &["id"],
    );
    src += "\n";
    src += &table(&api, "POOL", ("/pools", "POST"), ("/pools", "PUT"), &["poolid"]);
    src += "\n";
    src += &table(
        &api,
        "QEMU",
        ("/nodes/{node}/qemu", "POST"),
        ("/nodes/{node}/qemu/{vmid}/config", "PUT"),
        &["node", "vmid"],
    );
    src += "\n";
    src += &table(
        &api,
        "LXC",
        ("/nodes/{node}/lxc", "POST"),
        ("/nodes/{node}/lxc/{vmid}/config", "PUT"),
        &["node", "vmid"],
    );
    let path = manifest.join("src/fields_table.rs");
    if std::env::var_os("BERTH_UPDATE_FIELDS").is_some() {
        std::fs::write(&path, &src).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == src,
        "src/fields_table.rs is not what apidata.json says; rerun with BERTH_UPDATE_FIELDS=1"
    );
}
