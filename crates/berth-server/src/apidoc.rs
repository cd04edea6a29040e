//! The finishing touches on the generated OpenAPI document, so that it describes what the
//! server really does: problem responses are `application/problem+json`; a schema that
//! flattens a strict one (`OfferingView` over `OfferingSpec`) lists the fields itself instead
//! of an `allOf` whose strict half would refuse the other half's fields; and who may call what
//! (`securitySchemes`: bearer tokens, and the agents' RFC 9421 signatures).

use serde_json::{Map, Value, json};

pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).expect("the OpenAPI document is JSON");
    problems_as_problem_json(&mut v);
    merge_flattened(&mut v);
    constrain(&mut v);
    security(&mut v);
    v
}

/// A name people see: 1-128 characters, not only spaces, no control or bidirectional-override
/// characters (`berth_core::text::check_name`).
const NAME: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*[^\\u0020\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069][^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]*$";
/// A command: 1-4096 characters, not only white space (Unicode `White_Space`, as Rust's
/// `trim`), no NUL.
const COMMAND: &str = "^[^\\u0000]*[^\\u0000\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$";
/// A host name (`berth_core::spec::validate_dns_name`).
const DNS_NAME: &str = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";
const LABEL: &str = "^[a-z0-9._-]{1,63}$";
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": NAME})
}

/// What the server checks, where the types cannot say it: patterns, lengths, formats.
/// `openssh-public-key`, `age-recipient` and `ed25519-public-key` are formats of Berth's own:
/// an OpenSSH public key line, an age X25519 recipient (`age1…`) and the standard base64 of a
/// 32-byte Ed25519 public key.
fn constrain(v: &mut Value) {
    let props: &[(&str, &str, Value)] = &[
        ("CreateNamed", "name", name()),
        ("CreateToken", "name", name()),
        ("EnrollAgent", "name", name()),
        ("EnrollAgent", "token", json!({"minLength": 1, "maxLength": 256})),
        (
            "EnrollAgent",
            "public_key",
            json!({"format": "ed25519-public-key", "pattern": "^[A-Za-z0-9+/]{43}=$"}),
        ),
        ("OfferingSpec", "name", name()),
        ("OfferingSpec", "template", json!({"pattern": PRINTABLE})),
        ("OfferingSpec", "region", json!({"pattern": LABEL})),
        (
            "OfferingSpec",
            "labels",
            json!({"maxProperties": 32, "propertyNames": {"pattern": LABEL},
                "additionalProperties": {"type": "string", "maxLength": 256, "pattern": PRINTABLE}}),
        ),
        (
            "OfferingSpec",
            "post_provision_commands",
            json!({"items": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": COMMAND}}),
        ),
        ("CreateOrder", "name", json!({"maxLength": 253, "pattern": DNS_NAME})),
        ("CreateOrder", "ssh_public_key", json!({"format": "openssh-public-key"})),
        (
            "CreateOrder",
            "requester_public_key",
            json!({"format": "age-recipient"}),
        ),
        (
            "CreateInstance",
            "name",
            json!({"minLength": 1, "maxLength": 253, "pattern": DNS_NAME}),
        ),
        (
            "CreateInstance",
            "ssh_public_key",
            json!({"format": "openssh-public-key"}),
        ),
        ("CreateInstance", "cores", json!({"minimum": 1, "maximum": 8192})),
        (
            "CreateInstance",
            "memory_mib",
            json!({"minimum": 16, "maximum": 16_777_216}),
        ),
        (
            "CreateInstance",
            "disk_gib",
            json!({"minimum": 1, "maximum": 1_048_576}),
        ),
        (
            "CreateInstance",
            "template",
            json!({"minLength": 1, "maxLength": 256, "pattern": PRINTABLE}),
        ),
        (
            "CreateInstance",
            "post_provision_commands",
            json!({"maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": COMMAND}}),
        ),
        (
            "CreateInstance",
            "requester_public_key",
            json!({"format": "age-recipient"}),
        ),
        (
            "CreateEnrollmentToken",
            "ttl_seconds",
            json!({"minimum": 60, "maximum": 2_592_000}),
        ),
    ];
    for (schema, prop, extra) in props {
        let at = format!("/components/schemas/{schema}/properties/{prop}");
        let target = v.pointer_mut(&at).unwrap_or_else(|| panic!("apidoc: no {at}"));
        // `Option<…>` fields are `["string", "null"]` or a oneOf with null: constrain the value.
        let target = match target.get_mut("oneOf") {
            Some(Value::Array(alts)) => alts
                .iter_mut()
                .find(|a| a.get("type") != Some(&json!("null")))
                .expect("apidoc: a non-null alternative"),
            _ => target,
        };
        merge(target, extra);
    }
    // A change names at least one number (`null` is not one), each bounded as in an order.
    if let Some(r) = v.pointer_mut("/components/schemas/Reconfigure") {
        r["minProperties"] = json!(1);
        for (prop, min, max) in [
            ("cores", 1, 8192),
            ("memory_mib", 16, 16_777_216),
            ("disk_gib", 1, 1_048_576),
        ] {
            let p = &mut r["properties"][prop];
            p["type"] = json!("integer");
            p["minimum"] = json!(min);
            p["maximum"] = json!(max);
        }
    }
    // A saved key is one of two shapes, told apart by `kind`.
    if let Some(save) = v.pointer_mut("/components/schemas/SaveKey") {
        let shape = |kind: &str, format: &str| {
            json!({"type": "object", "additionalProperties": false, "required": ["kind", "name", "public_key"],
                "properties": {"kind": {"type": "string", "enum": [kind]}, "name": name(),
                    "public_key": {"type": "string", "format": format}}})
        };
        let description = save["description"].clone();
        *save = json!({"description": description,
            "oneOf": [shape("ssh", "openssh-public-key"), shape("age", "age-recipient")]});
    }
    let params: &[(&str, Value)] = &[
        ("after", json!({"minLength": 1})),
        ("pubkey", json!({"pattern": "^[0-9a-fA-F]{64}$"})),
        ("wait", json!({"pattern": "^[0-9]{1,9}(ms|s|m)?$"})),
        ("Idempotency-Key", json!({"pattern": "^[\\u0021-\\u007e]{1,255}$"})),
        ("status", json!({"pattern": "^[a-z_]{1,32}$"})),
        ("region", json!({"pattern": LABEL})),
        (
            "labels",
            json!({"pattern": "^([a-z0-9._-]{1,63}=[^,]{0,256})?(,[a-z0-9._-]{1,63}=[^,]{0,256})*$"}),
        ),
        (
            "action",
            json!({"enum": ["provision", "start", "stop", "reboot", "terminate"]}),
        ),
    ];
    for (_, op) in operations(v) {
        for p in op
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            if let Some((_, extra)) = params.iter().find(|(n, _)| *n == name) {
                merge(&mut p["schema"], extra);
            }
        }
    }
}

fn merge(target: &mut Value, extra: &Value) {
    if let (Some(t), Some(e)) = (target.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
}

fn operations(v: &mut Value) -> impl Iterator<Item = (String, &mut Map<String, Value>)> {
    v["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.iter_mut())
        .flat_map(|(path, item)| {
            let path = path.clone();
            item.as_object_mut()
                .into_iter()
                .flat_map(|ops| ops.values_mut())
                .filter_map(Value::as_object_mut)
                .map(move |op| (path.clone(), op))
        })
}

fn problems_as_problem_json(v: &mut Value) {
    for (_, op) in operations(v) {
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        for (status, r) in responses.iter_mut() {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            if let Some(content) = r.get_mut("content").and_then(Value::as_object_mut)
                && let Some(body) = content.remove("application/json")
            {
                content.insert("application/problem+json".into(), body);
            }
        }
        // Every route may answer 429 (rate limits) with a Retry-After.
        responses.entry("429").or_insert_with(|| {
            json!({
                "description": "too many requests from this address or credential",
                "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            })
        });
    }
}

/// `{"allOf": [{"$ref": strict}, {object}]}` → one object with both halves' fields.
fn merge_flattened(v: &mut Value) {
    let Some(schemas) = v.pointer("/components/schemas").and_then(Value::as_object).cloned() else {
        return;
    };
    for schema in v["components"]["schemas"]
        .as_object_mut()
        .into_iter()
        .flat_map(|s| s.values_mut())
    {
        let Some(parts) = schema.get("allOf").and_then(Value::as_array).cloned() else {
            continue;
        };
        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        for part in &parts {
            let part = match part.get("$ref").and_then(Value::as_str) {
                Some(r) => match r.strip_prefix("#/components/schemas/").and_then(|n| schemas.get(n)) {
                    Some(s) => s,
                    None => continue,
                },
                None => part,
            };
            if let Some(p) = part.get("properties").and_then(Value::as_object) {
                properties.extend(p.clone());
            }
            if let Some(r) = part.get("required").and_then(Value::as_array) {
                required.extend(r.iter().cloned());
            }
        }
        let mut merged = Map::new();
        if let Some(d) = schema.get("description") {
            merged.insert("description".into(), d.clone());
        }
        merged.insert("type".into(), json!("object"));
        merged.insert("required".into(), Value::Array(required));
        merged.insert("properties".into(), Value::Object(properties));
        *schema = Value::Object(merged);
    }
}

fn security(v: &mut Value) {
    v["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`berth_tok_…`) of an operator, provider or customer"
        },
        "agent_signature": {
            "type": "apiKey",
            "in": "header",
            "name": "Signature",
            "description": "Agents sign every request (RFC 9421, Ed25519, keyid = the agent id) with `Signature-Input`, `Signature` and `Content-Digest`"
        }
    });
    for (path, op) in operations(v) {
        let security = if path == "/api/v1/agents/enroll" {
            // The enrollment token in the body is the credential.
            json!([])
        } else if path.starts_with("/api/v1/agent/") {
            json!([{"agent_signature": []}])
        } else if path.starts_with("/api/v1/providers/") && path.contains("/contracts/") {
            json!([{"bearer": []}, {"agent_signature": []}])
        } else {
            json!([{"bearer": []}])
        };
        op.insert("security".into(), security);
    }
}
