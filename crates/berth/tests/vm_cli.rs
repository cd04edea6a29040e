//! `berth vm` and `berth ct` as a user runs them, against the PVE emulator over HTTPS.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_lifecycle_through_the_cli() {
    let env = start(timings()).await;
    let create = [
        "vm",
        "create",
        "--name",
        "web1",
        "--cores",
        "2",
        "--memory-mib",
        "2048",
        "--disk-gib",
        "20",
        "--ssh-key",
        KEY,
        "--instance-id",
        "web1-order-42",
    ];
    let inst = env.json(&create).await;
    assert_eq!(inst["instance_id"], "web1-order-42");
    assert_eq!(inst["state"], "running");
    assert_eq!(inst["node"], "pve1");
    assert_eq!(inst["name"], "web1");
    assert!(inst["ipv4"].is_string(), "create waits for the address: {inst}");
    let vmid = inst["vmid"].as_u64().expect("vmid in JSON");

    // The second create with the same instance id returns the same VM.
    let again = env.json(&create).await;
    assert_eq!(again["vmid"].as_u64(), Some(vmid));
    assert_eq!(env.machines().len(), 1, "one VM after two creates");

    // The VM got what was asked for.
    let g = env.machines().pop().unwrap();
    assert_eq!(g.config.get("cores").map(String::as_str), Some("2"));
    assert!(
        g.tags.iter().any(|t| t == "berth-web1-order-42"),
        "ownership tag: {:?}",
        g.tags
    );
    assert!(
        g.config.get("sshkeys").is_some_and(|k| k.contains("AAAAC3Nz")),
        "ssh key applied"
    );

    let list = env.json(&["vm", "list"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let by_vmid = env.json(&["vm", "describe", &vmid.to_string()]).await;
    assert_eq!(by_vmid["instance_id"], "web1-order-42");
    // A name works wherever an id does.
    let by_name = env.json(&["vm", "describe", "web1"]).await;
    assert_eq!(by_name["instance_id"], "web1-order-42");

    // The same id with another spec is reported, not answered with the old machine.
    let mut bigger = create.to_vec();
    let at = bigger.iter().position(|a| *a == "--cores").unwrap();
    bigger[at + 1] = "4";
    bigger.extend(["--output", "json"]);
    let other = env.run(&bigger).await;
    assert_eq!(other.status.code(), Some(4), "a conflict: {}", stdout(&other));
    assert!(stdout(&other).contains("cores 2 (asked 4)"), "{}", stdout(&other));
    assert_eq!(env.machines().len(), 1);

    assert_eq!(env.json(&["vm", "stop", "web1-order-42"]).await["state"], "stopped");
    // Start waits for the address, as create does.
    let started = env.json(&["vm", "start", "web1-order-42"]).await;
    assert_eq!(started["state"], "running");
    assert!(started["ipv4"].is_string(), "start waits for the address: {started}");
    assert_eq!(env.json(&["vm", "reboot", "web1-order-42"]).await["state"], "running");
    // Durations carry their unit.
    let unitless = env
        .run(&["vm", "shutdown", "web1-order-42", "--timeout", "30", "--output", "json"])
        .await;
    assert_eq!(unitless.status.code(), Some(2), "{}", stdout(&unitless));
    assert!(stdout(&unitless).contains("no unit"), "{}", stdout(&unitless));
    assert_eq!(
        env.json(&["vm", "shutdown", "web1-order-42", "--timeout", "30s"]).await["state"],
        "stopped"
    );
    // As `qm reboot`: a stopped machine is not rebooted (nor started unasked).
    let refused = env.run(&["vm", "reboot", "web1-order-42"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is stopped; reboot needs it running"));
    assert_eq!(env.json(&["vm", "describe", "web1-order-42"]).await["state"], "stopped");

    let human = env.run(&["vm", "describe", "web1-order-42"]).await;
    assert!(human.status.success());
    let text = stdout(&human);
    assert!(
        text.contains("vmid") && text.contains(&vmid.to_string()) && text.contains("stopped"),
        "{text}"
    );

    // Without a terminal to ask on, a delete needs --yes; nothing is touched until then.
    let refused = env.run(&["vm", "delete", "web1-order-42"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("confirm with --yes"));
    assert_eq!(env.machines().len(), 1);
    let del = env.json(&["vm", "delete", "web1-order-42", "--yes"]).await;
    assert_eq!(del["outcome"], "deleted");
    assert!(env.machines().is_empty());
    let del = env.json(&["vm", "delete", "web1-order-42", "--yes"]).await;
    assert_eq!(del["outcome"], "already_absent", "delete of a missing VM succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_listed_by_kind() {
    let env = start(timings()).await;
    let vms = env.json(&["vm", "templates"]).await;
    let ids: Vec<_> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.contains(&"9000".to_owned()) && ids.contains(&"9100".to_owned()),
        "{ids:?}"
    );
    assert!(vms.as_array().unwrap().iter().all(|t| t["kind"] == "vm"), "{vms}");
    let cts = env.json(&["ct", "templates"]).await;
    assert!(
        cts.as_array().unwrap().iter().all(|t| t["kind"] == "container"),
        "{cts}"
    );
    assert!(
        cts.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"].as_str().unwrap().contains("vztmpl")),
        "{cts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_hides_foreign_vms_unless_all() {
    let env = start(timings()).await;
    env.emu.add_foreign_vm("pve1", 555, "not-ours");
    let owned = env.json(&["vm", "list"]).await;
    assert_eq!(owned.as_array().map(Vec::len), Some(0), "{owned}");
    let all = env.json(&["vm", "list", "--all"]).await;
    assert!(all.as_array().unwrap().iter().any(|i| i["name"] == "not-ours"), "{all}");
    // Berth refuses to delete what it does not own.
    let out = env.run(&["vm", "delete", "555", "--yes"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not managed by Berth"), "{}", stderr(&out));
    assert_eq!(env.machines().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_through_the_cli() {
    let env = start(timings()).await;
    let inst = env
        .json(&[
            "ct",
            "create",
            "--name",
            "ct1",
            "--cores",
            "1",
            "--memory-mib",
            "512",
            "--disk-gib",
            "8",
            "--ssh-key",
            KEY,
            "--instance-id",
            "ct1",
        ])
        .await;
    assert_eq!(inst["kind"], "container");
    assert_eq!(inst["state"], "running");
    let g = env.machines().pop().unwrap();
    assert_eq!(g.kind, "lxc");
    assert_eq!(env.json(&["ct", "stop", "ct1"]).await["state"], "stopped");
    assert_eq!(env.json(&["ct", "start", "ct1"]).await["state"], "running");
    let list = env.json(&["ct", "list"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let vms = env.json(&["vm", "list", "--kind", "vm"]).await;
    assert_eq!(vms.as_array().map(Vec::len), Some(0));
    assert_eq!(env.json(&["ct", "delete", "ct1", "--yes"]).await["outcome"], "deleted");
    assert!(env.machines().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_each_check() {
    let env = start(timings()).await;
    let out = env.run(&["doctor"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.lines().count() >= 5, "one line per check: {text}");
    assert!(!text.contains("FAIL"), "{text}");

    // A wrong token secret: the token check fails, doctor exits non-zero, the secret is not shown.
    std::fs::write(&env.config, config_text(&env.emu, "wrong-secret-0000")).unwrap();
    let out = env.run(&["doctor"]).await;
    let text = stdout(&out) + &stderr(&out);
    assert!(!out.status.success());
    assert!(text.contains("FAIL"), "{text}");
    assert!(!text.contains("wrong-secret-0000"), "secret leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_writes_usable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let out = berth().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let public = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    berth_core::SshPublicKey::parse(public.trim()).unwrap();
    let again = berth().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(!again.status.success(), "keygen never overwrites");
    // The same output contract as every command: JSON when asked, pretty-printed.
    let out = berth()
        .args(["keygen", "--output", "json", "--out"])
        .arg(dir.path().join("k2"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v["public_key"].as_str().unwrap().ends_with("k2.pub"), "{v}");
    assert!(
        text.contains("\n  \"private_key\""),
        "pretty like every command: {text}"
    );
}

/// Snapshots through the CLI: taken, listed under a header, rolled back (asked for without a
/// terminal), deleted; a name PVE refuses is named before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_through_the_cli() {
    let env = start(timings()).await;
    let made = env
        .json(&[
            "vm",
            "create",
            "--name",
            "snappy",
            "--ssh-key",
            KEY,
            "--instance-id",
            "vm-snappy",
        ])
        .await;
    assert_eq!(made["state"], "running");
    let s = env
        .json(&[
            "vm",
            "snapshot",
            "snappy",
            "before-upgrade",
            "--description",
            "2 cores",
            "--vmstate",
        ])
        .await;
    assert_eq!(
        (s[0]["name"].as_str(), s[0]["vmstate"].as_bool()),
        (Some("before-upgrade"), Some(true))
    );
    let listed = env.run(&["vm", "snapshots", "vm-snappy"]).await;
    let text = stdout(&listed);
    assert!(
        text.starts_with("NAME ") && text.contains("before-upgrade") && text.contains(" yes "),
        "{text}"
    );
    let bad = env
        .run(&["vm", "snapshot", "vm-snappy", "1st try", "--output", "json"])
        .await;
    assert_eq!(bad.status.code(), Some(2), "{}", stdout(&bad));
    assert!(stdout(&bad).contains("\"field\": \"name\""), "{}", stdout(&bad));
    // Rolling back loses writes: refused without a terminal unless --yes.
    let unasked = env.run(&["vm", "rollback", "vm-snappy", "before-upgrade"]).await;
    assert_eq!(unasked.status.code(), Some(2));
    assert!(stderr(&unasked).contains("--yes"), "{}", stderr(&unasked));
    let back = env
        .json(&["vm", "rollback", "vm-snappy", "before-upgrade", "--yes"])
        .await;
    assert_eq!(back["state"], "running", "its memory was saved");
    let gone = env
        .json(&["vm", "snapshot-delete", "vm-snappy", "before-upgrade"])
        .await;
    assert_eq!(gone["outcome"], "deleted");
    let again = env
        .json(&["vm", "snapshot-delete", "vm-snappy", "before-upgrade"])
        .await;
    assert_eq!(again["outcome"], "already_absent");
    assert_eq!(
        stdout(&env.run(&["vm", "snapshots", "vm-snappy"]).await).trim(),
        "no snapshots"
    );
    // Moving it: a running VM only with --online; then it lives on pve2.
    let offline = env
        .run(&["vm", "migrate", "vm-snappy", "--to", "pve2", "--output", "json"])
        .await;
    assert_eq!(offline.status.code(), Some(2), "{}", stdout(&offline));
    assert!(
        stdout(&offline).contains("\"field\": \"online\""),
        "{}",
        stdout(&offline)
    );
    let nowhere = env
        .run(&["vm", "migrate", "vm-snappy", "--to", "pve9", "--online"])
        .await;
    assert!(stderr(&nowhere).contains("cannot move to pve9"), "{}", stderr(&nowhere));
    let moved = env
        .json(&["vm", "migrate", "vm-snappy", "--to", "pve2", "--online"])
        .await;
    assert_eq!(
        (&moved["node"], &moved["state"]),
        (&serde_json::json!("pve2"), &serde_json::json!("running")),
        "{moved}"
    );
    let again = env
        .run(&["vm", "migrate", "vm-snappy", "--to", "pve2", "--online"])
        .await;
    assert!(stderr(&again).contains("is already on node pve2"), "{}", stderr(&again));
}

/// `berth pve`: the cluster's pools (a machine Berth made is in `berth`) and a node's storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pve_pools_and_storage_through_the_cli() {
    let env = start(timings()).await;
    let made = env
        .json(&[
            "vm",
            "create",
            "--name",
            "pooled",
            "--ssh-key",
            KEY,
            "--instance-id",
            "vm-pooled",
        ])
        .await;
    let pools = env.json(&["pve", "pool", "list"]).await;
    assert!(
        pools.as_array().unwrap().iter().any(|p| p["poolid"] == "berth"),
        "{pools}"
    );
    let shown = env.run(&["pve", "pool", "show", "berth"]).await;
    let text = stdout(&shown);
    assert!(
        text.starts_with("pool         berth") && text.contains(&format!("VM {} (pooled) on pve1", made["vmid"])),
        "{text}"
    );
    let storage = env.run(&["pve", "storage", "list"]).await;
    let text = stdout(&storage);
    assert!(
        text.starts_with("STORAGE ") && text.contains("local-lvm        lvmthin"),
        "{text}"
    );
    let local = env.run(&["pve", "storage", "show", "local"]).await;
    let text = stdout(&local);
    assert!(
        text.starts_with("storage      local\ntype         dir")
            && text.contains("on node      pve1: active")
            && text.contains("path         /var/lib/vz"),
        "{text}"
    );
    let json = env
        .json(&["pve", "storage", "show", "local-lvm", "--node", "pve2"])
        .await;
    assert_eq!(
        (
            &json["config"]["options"]["vgname"],
            &json["node"],
            &json["status"]["type"]
        ),
        (
            &serde_json::json!("pve"),
            &serde_json::json!("pve2"),
            &serde_json::json!("lvmthin")
        ),
        "{json}"
    );
    let net = env.run(&["pve", "network", "list"]).await;
    let text = stdout(&net);
    assert!(
        text.starts_with("IFACE ") && text.contains("vmbr0        bridge   static   10.0.0.11/24"),
        "{text}"
    );
    let vmbr0 = env.json(&["pve", "network", "show", "vmbr0", "--node", "pve2"]).await;
    assert_eq!(vmbr0["cidr"], "10.0.0.12/24", "{vmbr0}");
    let noif = env.run(&["pve", "network", "show", "vmbr9"]).await;
    assert!(!noif.status.success());
    assert!(String::from_utf8_lossy(&noif.stderr).contains("iface: interface does not exist"));
    let backups = env.run(&["pve", "backup", "list"]).await;
    let text = stdout(&backups);
    assert!(
        text.starts_with("no backup jobs\n\nnot covered by any backup job: VM ")
            && text.contains(&format!("VM {} (pooled)", made["vmid"])),
        "{text}"
    );
    let nojob = env.run(&["pve", "backup", "show", "nightly"]).await;
    assert!(!nojob.status.success());
    assert!(String::from_utf8_lossy(&nojob.stderr).contains("No such job 'nightly'"));
    let ha = env.run(&["pve", "ha", "list"]).await;
    assert_eq!(
        stdout(&ha).trim_end(),
        "no HA resources\n\nno HA rules",
        "{}",
        stdout(&ha)
    );
    let noha = env.run(&["pve", "ha", "show", "vm:4242"]).await;
    assert!(!noha.status.success());
    assert!(String::from_utf8_lossy(&noha.stderr).contains("no such resource 'vm:4242'"));
    let nostore = env.run(&["pve", "storage", "show", "nope"]).await;
    assert!(!nostore.status.success());
    assert!(String::from_utf8_lossy(&nostore.stderr).contains("storage 'nope' does not exist"));
    let missing = env.run(&["pve", "pool", "show", "nope", "--output", "json"]).await;
    assert!(!missing.status.success());
    assert!(
        stdout(&missing).contains("pool 'nope' does not exist"),
        "{}",
        stdout(&missing)
    );
}

/// A machine without any SSH key is made (a console or a password may be all that is wanted),
/// with a warning that nobody can log in by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_without_a_key_warns() {
    let env = start(timings()).await;
    let out = env.run(&["vm", "create", "--name", "nokey", "--output", "json"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: no SSH key given"), "{err}");
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(made["instance_id"].as_str().unwrap().starts_with("vm-"), "{made}");
}
