//! The manual backend through the CLI: `berth vm create` waits in `waiting_for_operator`; an
//! operator sees the request with `vm list --pending` and submits the details with
//! `vm complete`; the waiting create then prints the machine. The password never shows.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

use common::{KEY, berth, stderr, stdout};

fn run(config: &Path, args: &[&str]) -> Output {
    berth()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("berth runs")
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        "[provisioner]\ntype = \"manual\"\n\n[provisioner.manual]\nstate_dir = \"requests\"\npoll_interval_ms = 50\n",
    )
    .unwrap();
    (dir, config)
}

/// Starts a create and returns once it reports waiting for an operator.
fn start_create(config: &Path, id: &str, extra: &[&std::ffi::OsStr]) -> std::process::Child {
    let mut child = berth()
        .args([
            "vm",
            "create",
            "--name",
            id,
            "--ssh-key",
            KEY,
            "--instance-id",
            id,
            "--output",
            "json",
            "--config",
        ])
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    loop {
        let line = lines.next().expect("create keeps logging until it waits").unwrap();
        if line.contains("stage=waiting_for_operator") && line.contains("started") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn an_operator_completes_a_waiting_create() {
    let (dir, config) = setup();
    let pw_out = dir.path().join("root-password");
    let child = start_create(&config, "hand-1", &["--password-out".as_ref(), pw_out.as_os_str()]);

    let pending = run(&config, &["vm", "list", "--pending"]);
    assert!(pending.status.success(), "{}", stderr(&pending));
    assert!(stdout(&pending).contains("hand-1"), "{}", stdout(&pending));
    // What to build: the key to install and the network asked for, and how to hand it over.
    let sheet = run(&config, &["vm", "request", "hand-1"]);
    assert!(sheet.status.success(), "{}", stderr(&sheet));
    let text = stdout(&sheet);
    assert!(
        text.contains(&format!("ssh keys     {KEY}"))
            && text.contains("\nipv4         dhcp\n")
            && text.contains("berth vm complete hand-1 --ip ADDRESS"),
        "{text}"
    );
    let unknown = run(&config, &["vm", "request", "hand-404"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no request hand-404 waits"),
        "{}",
        stderr(&unknown)
    );

    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-root-pw\n").unwrap();
    let args = [
        "vm",
        "complete",
        "hand-1",
        "--ip",
        "203.0.113.7",
        "--ssh-port",
        "2222",
        "--password-file",
    ];
    let done = berth()
        .args(args)
        .arg(&pw)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", stderr(&done));

    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "create: {}", String::from_utf8_lossy(&out.stdout));
    let inst: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inst["ipv4"], "203.0.113.7");
    assert_eq!(inst["ssh_port"], 2222);
    assert_eq!(inst["state"], "running");
    for text in [stdout(&out), stdout(&done), stderr(&done)] {
        assert!(!text.contains("s3cret-root-pw"), "the password leaked: {text}");
    }
    // The password reaches only the requested file, private to its owner.
    assert_eq!(std::fs::read_to_string(&pw_out).unwrap(), "s3cret-root-pw\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&pw_out).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(
        stdout(&run(&config, &["vm", "list", "--pending"])).lines().count() <= 1,
        "nothing pending any more"
    );
}

#[test]
fn a_failed_request_ends_the_create_with_the_reason() {
    let (_dir, config) = setup();
    let child = start_create(&config, "hand-2", &[]);
    let failed = run(&config, &["vm", "fail", "hand-2", "--reason", "no capacity in rack 4"]);
    assert!(failed.status.success(), "{}", stderr(&failed));
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no capacity in rack 4"),
        "{v}"
    );

    let again = run(&config, &["vm", "complete", "hand-2", "--ip", "203.0.113.8"]);
    assert!(!again.status.success(), "a failed request cannot be completed");
    let wrong = run(&config, &["vm", "complete", "nobody", "--ip", "203.0.113.9"]);
    assert!(stderr(&wrong).contains("no manual request"), "{}", stderr(&wrong));
}
