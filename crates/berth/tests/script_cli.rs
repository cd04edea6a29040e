//! `berth vm` on the script backend, driving the Python example backend through a real
//! berth.toml: the same commands, the same guarantees, whatever the backend.

mod common;

use std::path::Path;
use std::process::Output;

use common::{KEY, berth, stderr};

fn run(config: &Path, args: &[&str]) -> Output {
    berth()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("berth runs")
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = args.to_vec();
    full.extend(["--output", "json"]);
    let out = run(config, &full);
    assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn vm_commands_drive_a_script_backend() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/script-backend/berth_backend.py");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[provisioner]\ntype = \"script\"\n\n[provisioner.script]\ncommand = \"{}\"\ntimeout_seconds = 30\n\
             env = {{ BERTH_EXAMPLE_STATE = \"{}\" }}\n",
            example.display(),
            state.display()
        ),
    )
    .unwrap();

    let doctor = run(&config, &["doctor"]);
    assert!(doctor.status.success(), "{}", String::from_utf8_lossy(&doctor.stdout));

    let create = [
        "vm",
        "create",
        "--name",
        "s1",
        "--ssh-key",
        KEY,
        "--instance-id",
        "order-7",
    ];
    let inst = json(&config, &create);
    assert_eq!(inst["instance_id"], "order-7");
    assert_eq!(inst["state"], "running");
    assert!(inst["ipv4"].is_string(), "{inst}");
    let again = json(&config, &create);
    assert_eq!(
        again["backend_id"], inst["backend_id"],
        "create is idempotent by instance id"
    );
    assert_eq!(json(&config, &["vm", "list"]).as_array().map(Vec::len), Some(1));
    // The backend's own id names the machine too.
    let external = inst["backend_id"].as_str().unwrap().to_owned();
    assert_eq!(json(&config, &["vm", "describe", &external])["instance_id"], "order-7");

    assert_eq!(json(&config, &["vm", "stop", "order-7"])["state"], "stopped");
    assert_eq!(json(&config, &["vm", "start", "order-7"])["state"], "running");
    assert_eq!(
        json(&config, &["vm", "delete", "order-7", "--yes"])["outcome"],
        "deleted"
    );
    assert_eq!(
        json(&config, &["vm", "delete", "order-7", "--yes"])["outcome"],
        "already_absent"
    );
    assert_eq!(json(&config, &["vm", "list"]).as_array().map(Vec::len), Some(0));
}
