//! Bad input through the CLI: each is a clear error naming the field, and nothing is created
//! (the emulator sees no mutating request).

mod common;

use common::*;

async fn expect_refused(env: &Env, args: &[&str], needle: &str) {
    let before = env.mutations();
    let out = env.run(args).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "berth {args:?} should fail");
    assert!(err.contains(needle), "berth {args:?}: expected {needle:?} in: {err}");
    assert_eq!(env.mutations(), before, "berth {args:?} must not change anything");
    assert!(env.machines().is_empty());
}

fn create<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["vm", "create", "--name", "web1", "--ssh-key", KEY];
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_before_anything_is_made() {
    let env = start(timings()).await;
    expect_refused(&env, &create(&["--cores", "0"]), "invalid cores").await;
    expect_refused(&env, &create(&["--memory-mib", "8"]), "invalid memory_mib").await;
    // pve1 has 64 GiB.
    expect_refused(&env, &create(&["--memory-mib", "1048576"]), "invalid memory_mib").await;
    expect_refused(&env, &create(&["--disk-gib", "0"]), "invalid disk_gib").await;
    expect_refused(
        &env,
        &["vm", "create", "--name", "web1", "--ssh-key", "ssh-ed25519 nonsense"],
        "invalid ssh_key",
    )
    .await;
    expect_refused(&env, &create(&["--ip", "10.0.0.5"]), "invalid ip").await;
    expect_refused(&env, &["vm", "create", "--name", "my_vm"], "invalid name").await;
    expect_refused(&env, &create(&["--instance-id", "Not_Valid"]), "invalid instance_id").await;
    expect_refused(&env, &create(&["--template", "424242"]), "invalid template").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_name_the_field() {
    let env = start(timings()).await;
    let out = env
        .run(&["vm", "create", "--name", "web1", "--cores", "0", "--output", "json"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "invalid_spec");
    assert_eq!(v["error"]["field"], "cores");

    // A bad configuration file is bad input too: exit 2, and JSON naming file, line and key.
    let good = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        good.replace("template_vmid = 9000", "template_vmid = \"nine\""),
    )
    .unwrap();
    let out = env.run(&["vm", "list", "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "invalid_config");
    assert_eq!(v["error"]["line"], 9);
    assert_eq!(v["error"]["key"], "provisioner.proxmox.template_vmid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_files_name_file_line_and_key() {
    let env = start(timings()).await;
    let good = std::fs::read_to_string(&env.config).unwrap();
    let cases = [
        (good.replace("[provisioner.proxmox]", "[provisioner.proxmox"), ":4:"),
        (good.replace("node = \"pve1\"\n", ""), "key 'provisioner.proxmox.node'"),
        (
            good.replace("template_vmid = 9000", "template_vmid = \"nine\""),
            "berth.toml:9:17:",
        ),
        (
            good.replace("template_vmid = 9000", "template_vmid = \"nine\""),
            "key 'provisioner.proxmox.template_vmid'",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&env.config, &text).unwrap();
        expect_refused(&env, &create(&[]), needle).await;
    }
}
