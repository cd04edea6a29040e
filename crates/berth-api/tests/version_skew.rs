//! An agent one version newer than its control plane sends fields the control plane does not
//! know: every body an agent sends takes them. What people send still refuses them.

use berth_api::wire::{Complete, CreateOrder, EnrollAgent, LeaseRef, ReportEvents, TemplatesReport};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn takes<T: DeserializeOwned>(body: Value) {
    if let Err(e) = serde_json::from_value::<T>(body.clone()) {
        panic!("{} refused {body}: {e}", std::any::type_name::<T>());
    }
}

#[test]
fn what_a_newer_agent_sends_is_taken() {
    takes::<EnrollAgent>(json!({"token": "t", "name": "a", "public_key": "k", "os": "debian"}));
    takes::<TemplatesReport>(json!({
        "templates": [{"backend": "pve", "id": "9000", "name": "debian", "arch": "x86_64"}],
        "truncated": false
    }));
    takes::<ReportEvents>(json!({
        "generation": 1,
        "events": [{"stage": "clone_template", "phase": "started", "at_ns": 5}],
        "batch": 3
    }));
    takes::<Complete>(json!({
        "generation": 1,
        "outcome": {"succeeded": {
            "vm_id": "100",
            "mac_address": "BC:24:11:00:00:01",
            "commands": [{"command": "true", "exit_status": 0, "output_tail": "", "took_ms": 3}]
        }},
        "agent_version": "0.2.0"
    }));
    takes::<Complete>(json!({
        "generation": 1,
        "outcome": {"failed": {"code": "timeout", "message": "m", "retry_after_ms": 100}}
    }));
    takes::<LeaseRef>(json!({"generation": 2, "progress": 40}));
}

#[test]
fn what_people_send_still_refuses_unknown_fields() {
    let order = json!({
        "offering_id": "o", "name": "web1", "ssh_public_key": "ssh-ed25519 AAAA x", "colour": "red"
    });
    let e = serde_json::from_value::<CreateOrder>(order).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
}
