//! Protocol error handling with small inline scripts: every kind of bad answer becomes a clear
//! error naming the script, the action and what was wrong; timeouts kill the process group;
//! `retry_possible` and `code` are honoured; secrets never reach errors or logs; the
//! environment is cleared except what is configured.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{
    CheckStatus, DeleteOutcome, ErrorCode, GuestKind, InstanceId, InstanceRef, ListFilter, NetworkSpec, NoProgress,
    PowerOp, Provider, ProviderError, VmSpec,
};
use berth_script::{ScriptConfig, ScriptProvider};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable `/bin/sh` script and a provider using it for every action.
    fn provider(&self, body: &str, tweak: impl FnOnce(&mut ScriptConfig)) -> ScriptProvider {
        let script = self.path("backend.sh");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut config = ScriptConfig::with_command("backend.sh");
        config.timeout_seconds = 60;
        tweak(&mut config);
        ScriptProvider::new(config, self.dir.path()).unwrap()
    }
}

fn id(s: &str) -> InstanceRef {
    InstanceRef::Id(InstanceId::parse(s).unwrap())
}

fn spec(tag: &str) -> VmSpec {
    VmSpec {
        instance_id: InstanceId::parse(tag).unwrap(),
        name: tag.into(),
        kind: GuestKind::Vm,
        cores: 1,
        memory_mib: 1500,
        disk_gib: 5,
        template: None,
        ssh_keys: vec![],
        user: None,
        network: NetworkSpec::default(),
    }
}

async fn describe_err(p: &ScriptProvider) -> ProviderError {
    p.describe(&id("c1")).await.unwrap_err()
}

const INSTANCE: &str =
    r#"{"success": true, "instance": {"external_id": "vm-1", "contract_id": "c1", "state": "running"}}"#;

#[tokio::test]
async fn exit_status_disagreeing_with_success_is_an_error() {
    let env = Env::new();
    let p = env.provider(&format!("echo '{INSTANCE}'; exit 3"), |_| {});
    let err = describe_err(&p).await;
    let text = err.to_string();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(text.contains("backend.sh") && text.contains("action status"), "{text}");
    assert!(
        text.contains("disagree") && text.contains("\"success\": true"),
        "{text}"
    );
    assert!(text.contains("vm-1"), "the output is quoted: {text}");

    let p = env.provider("echo '{\"success\": false, \"error\": \"boom\"}'", |_| {});
    let text = describe_err(&p).await.to_string();
    assert!(
        text.contains("disagree") && text.contains("\"success\": false"),
        "{text}"
    );
}

#[tokio::test]
async fn empty_non_json_and_wrong_shape_output_are_named() {
    let env = Env::new();
    let cases = [
        ("echo 'dying' >&2; exit 0", vec!["printed nothing", "dying"]),
        ("echo 'Traceback: oops'", vec!["not JSON", "Traceback: oops"]),
        (
            r#"echo '{"success": true, "instance": {"external_id": 5}}'"#,
            vec!["not a protocol-1 response", "external_id"],
        ),
        (
            r#"echo '{"success": true, "instance": {"external_id": "vm-1", "ip_adress": "10.0.0.1"}}'"#,
            vec!["not a protocol-1 response", "ip_adress"],
        ),
        (r#"echo '{"success": true}'"#, vec!["no \"instance\""]),
        (
            r#"echo '{"success": true, "protocol": 2, "instance": {"external_id": "v"}}'"#,
            vec!["protocol 2"],
        ),
        (r#"printf '\377\376'"#, vec!["not valid UTF-8"]),
    ];
    for (body, wants) in cases {
        let p = env.provider(body, |_| {});
        let err = describe_err(&p).await;
        assert_eq!(err.code(), ErrorCode::Internal, "{body}: {err}");
        let text = err.to_string();
        assert!(text.contains("backend.sh") && text.contains("status"), "{text}");
        for want in wants {
            assert!(text.contains(want), "{body}: {text} should mention {want}");
        }
    }
}

#[tokio::test]
async fn too_much_output_is_refused() {
    let env = Env::new();
    let p = env.provider("yes '{}'", |c| c.max_output_bytes = 4096);
    let err = describe_err(&p).await;
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(err.to_string().contains("larger than 4096 bytes"), "{err}");
}

#[tokio::test]
async fn timeout_kills_the_scripts_process_group() {
    let env = Env::new();
    let pidfile = env.path("pid");
    let p = env.provider(
        &format!("sleep 60 & echo $! > '{}'; sleep 60", pidfile.display()),
        // Long enough for the shell to start and write the pidfile on a loaded machine.
        |c| c.timeout_seconds = 5,
    );
    let err = describe_err(&p).await;
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("backend.sh") && err.to_string().contains("killed"),
        "{err}"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let mut gone = false;
    for _ in 0..200 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => gone = true,
            Ok(s) => gone = s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')),
        }
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the script's background job {pid} survived the timeout");
}

#[tokio::test]
async fn retry_possible_and_codes_are_honoured() {
    let env = Env::new();
    let p = env.provider(
        r#"echo '{"success": false, "error": "storage busy", "retry_possible": true}'; exit 1"#,
        |_| {},
    );
    let err = describe_err(&p).await;
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("storage busy"), "{err}");

    let p = env.provider(
        r#"echo '{"success": false, "error": "locked", "code": "conflict", "retry_possible": true}'; exit 1"#,
        |_| {},
    );
    assert!(describe_err(&p).await.is_retryable());

    let p = env.provider(r#"echo '{"success": false, "error": "disk full"}'; exit 1"#, |_| {});
    let err = describe_err(&p).await;
    assert!(!err.is_retryable() && err.code() == ErrorCode::Internal, "{err:?}");

    let p = env.provider(
        r#"echo '{"success": false, "error": "no quota", "code": "quota_exceeded"}'; exit 1"#,
        |_| {},
    );
    assert_eq!(describe_err(&p).await.code(), ErrorCode::QuotaExceeded);

    let p = env.provider(
        r#"echo '{"success": false, "error": "bad size", "code": "invalid_spec", "field": "memory_mib"}'; exit 1"#,
        |_| {},
    );
    match p.create(&spec("c1"), &NoProgress).await {
        Err(ProviderError::InvalidSpec { field, .. }) => assert_eq!(field, "memory_mib"),
        other => panic!("expected invalid memory_mib, got {other:?}"),
    }
}

#[tokio::test]
async fn a_scripts_error_text_has_secrets_redacted() {
    let env = Env::new();
    let p = env.provider(
        r#"echo '{"success": false, "error": "password=hunter2 failed"}'; exit 1"#,
        |_| {},
    );
    let err = describe_err(&p).await;
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("password=<redacted> failed"), "the rest is kept: {text}");
}

#[tokio::test]
async fn not_found_code_means_not_found_and_delete_succeeds() {
    let env = Env::new();
    let p = env.provider(
        r#"echo '{"success": false, "error": "no such vm", "code": "not_found"}'; exit 1"#,
        |_| {},
    );
    assert_eq!(describe_err(&p).await.code(), ErrorCode::NotFound);
    assert_eq!(p.delete(&id("c1")).await.unwrap(), DeleteOutcome::AlreadyAbsent);
    let err = p.power(&id("c1"), PowerOp::Start).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_listed_machine_with_a_bad_contract_id_is_not_owned_and_does_not_fail_the_list() {
    let env = Env::new();
    let p = env.provider(
        r#"echo '{"success": true, "instances": [
            {"external_id": "vm-1", "contract_id": "c1", "state": "running"},
            {"external_id": "vm-2", "contract_id": "not a valid id!", "state": "running"}]}'"#,
        |_| {},
    );
    let owned = p.list(ListFilter::default()).await.unwrap();
    assert_eq!(owned.len(), 1, "{owned:?}");
    assert_eq!(owned[0].backend_id, "vm-1");
    let all = p
        .list(ListFilter {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let bad = all.iter().find(|i| i.backend_id == "vm-2").unwrap();
    assert_eq!(bad.instance_id, None);
}

#[tokio::test]
async fn listing_only_containers_does_not_run_the_script() {
    let env = Env::new();
    let marker = env.path("ran");
    let p = env.provider(
        &format!(
            r#": > '{}'; echo '{{"success": true, "instances": []}}'"#,
            marker.display()
        ),
        |_| {},
    );
    let listed = p
        .list(ListFilter {
            all: true,
            kind: Some(GuestKind::Container),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.is_empty());
    assert!(!marker.exists(), "the script ran for a containers-only listing");
}

#[tokio::test]
async fn machines_without_a_contract_are_not_touched() {
    let env = Env::new();
    let p = env.provider(
        r#"echo '{"success": true, "instance": {"external_id": "vm-9", "state": "running"}}'"#,
        |_| {},
    );
    let r = InstanceRef::Backend("vm-9".into());
    assert_eq!(p.describe(&r).await.unwrap().instance_id, None);
    assert_eq!(
        p.power(&r, PowerOp::Stop).await.unwrap_err().code(),
        ErrorCode::Conflict
    );
    assert_eq!(p.delete(&r).await.unwrap_err().code(), ErrorCode::Conflict);
    // A status answer about another machine than the one asked for is refused.
    let err = p.describe(&InstanceRef::Backend("vm-1".into())).await.unwrap_err();
    assert!(err.to_string().contains("asked for external_id vm-1"), "{err}");
}

#[tokio::test]
async fn provision_request_carries_protocol_offering_and_instance_config() {
    let env = Env::new();
    let req = env.path("req.json");
    let p = env.provider(
        &format!(
            r#"cat > '{}'
case "$BERTH_ACTION" in
  status) echo '{{"success": false, "code": "not_found", "error": "none"}}'; exit 1 ;;
  provision) echo '{{"success": true, "instance": {{"external_id": "vm-7", "ip_address": "10.1.2.3", "state": "running", "root_password": "pw-hunter2"}}}}' ;;
esac"#,
            req.display()
        ),
        |_| {},
    );
    let inst = p.create(&spec("c7"), &NoProgress).await.unwrap();
    assert_eq!(inst.instance_id, Some(InstanceId::parse("c7").unwrap()));
    assert_eq!(inst.backend_id, "vm-7");
    assert!(!format!("{inst:?}").contains("hunter2"));
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(&req).unwrap()).unwrap();
    assert_eq!(sent["protocol"], 1);
    assert_eq!(sent["action"], "provision");
    assert_eq!(sent["contract_id"], "c7");
    assert_eq!(sent["offering"]["memory_mib"], 1500);
    assert_eq!(sent["offering"]["memory_gb"], 2, "rounded up");
    assert_eq!(sent["offering"]["storage_gb"], 5);
    assert_eq!(sent["instance_config"]["name"], "c7");
    assert_eq!(sent["instance_config"]["network"]["ipv4"]["mode"], "dhcp");
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn root_password_never_reaches_logs_or_errors() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::new();
    // Echoes its answer to stderr too (a debugging habit), then answers with a wrong shape.
    let p = env.provider(
        r#"out='{"success": true, "instance": {"external_id": "vm-1", "root_password": "hunter2", "ssh_port": "x"}}'
echo "$out" >&2; echo "token=tok-hunter2" >&2; echo "$out""#,
        |_| {},
    );
    let err = describe_err(&p).await;
    let text = format!("{err} {err:?}");
    assert!(text.contains("root_password"), "the field is named: {text}");
    assert!(!text.contains("hunter2"), "{text}");

    // A good answer carrying a password: fine, and still not logged.
    let p = env.provider(
        r#"echo '{"success": true, "instance": {"external_id": "vm-1", "contract_id": "c1", "root_password": "hunter2"}}' | tee /dev/stderr"#,
        |_| {},
    );
    let inst = p.describe(&id("c1")).await.unwrap();
    assert!(!format!("{inst:?}").contains("hunter2"));

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("backend.sh"), "stderr was logged: {logged}");
    assert!(logged.contains("<redacted>"), "{logged}");
    assert!(!logged.contains("hunter2"), "{logged}");
}

#[tokio::test]
async fn environment_is_cleared_except_what_is_configured() {
    let env = Env::new();
    let out = env.path("env.txt");
    let p = env.provider(
        &format!("env > '{}'; echo '{{\"success\": true}}'", out.display()),
        |c| {
            c.env.insert("FIXED".into(), "1".into());
            c.pass_env.push("HOME".into());
        },
    );
    let checks = p.validate().await;
    assert!(checks.iter().all(|c| c.status == CheckStatus::Ok), "{checks:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    for must in ["PATH", "LC_ALL", "BERTH_PROTOCOL", "BERTH_ACTION", "FIXED"] {
        assert!(names.contains(&must), "{must} missing from {names:?}");
    }
    if std::env::var("HOME").is_ok() {
        assert!(names.contains(&"HOME"), "pass_env copies HOME: {names:?}");
    }
    // What a shell adds by itself is allowed; nothing else from the test's environment is.
    let allowed = [
        "PATH",
        "LC_ALL",
        "BERTH_PROTOCOL",
        "BERTH_ACTION",
        "FIXED",
        "HOME",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    let extra: Vec<&&str> = names.iter().filter(|n| !allowed.contains(n)).collect();
    assert!(extra.is_empty(), "unexpected variables reached the script: {extra:?}");
    assert!(text.contains("BERTH_ACTION=health"));
}

#[tokio::test]
async fn doctor_reports_missing_and_non_executable_scripts() {
    let env = Env::new();
    let p = env.provider("echo '{\"success\": true}'", |c| {
        c.provision = Some(PathBuf::from("missing.sh"));
        c.stop = Some(PathBuf::from("plain.txt"));
    });
    std::fs::File::create(env.path("plain.txt"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let checks = p.validate().await;
    let fail_about = |needle: &str| {
        checks
            .iter()
            .any(|c| c.status == CheckStatus::Fail && c.detail.contains(needle))
    };
    assert!(fail_about("missing.sh"), "{checks:?}");
    assert!(fail_about("not executable"), "{checks:?}");
    assert!(
        checks
            .iter()
            .any(|c| c.name == "script health" && c.status == CheckStatus::Fail),
        "{checks:?}"
    );
    assert!(Path::new(&env.path("backend.sh")).exists());
}

#[tokio::test]
async fn reconfigure_templates_and_capacity_are_unsupported() {
    let env = Env::new();
    let p = env.provider("exit 0", |_| {});
    let caps = p.capabilities().await.unwrap();
    assert!(!caps.reconfigure && !caps.list_templates && !caps.capacity && caps.reboot);
    let change = berth_core::Resize {
        cores: Some(2),
        ..Default::default()
    };
    assert_eq!(
        p.reconfigure(&id("c1"), &change).await.unwrap_err().code(),
        ErrorCode::Unsupported
    );
    assert_eq!(p.list_templates().await.unwrap_err().code(), ErrorCode::Unsupported);
    assert_eq!(p.capacity().await.unwrap_err().code(), ErrorCode::Unsupported);
}

/// The seed's form (no `status`): a provision cut off by its timeout may have made a machine,
/// so the next create asks `terminate` for it first; when that fails, nothing is provisioned
/// again (a second machine is worse than a failed order) and the error says what to do.
#[tokio::test]
async fn a_cut_off_provision_whose_terminate_fails_is_not_provisioned_again() {
    let env = Env::new();
    let calls = env.path("calls");
    let write = |name: &str, body: String| {
        let p = env.path(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let provision = write(
        "provision.sh",
        format!("echo provision >> {}; sleep 30", calls.display()),
    );
    let terminate = write(
        "terminate.sh",
        format!(
            r#"echo terminate >> {}; echo '{{"success": false, "error": "host unreachable"}}'; exit 1"#,
            calls.display()
        ),
    );
    let p = env.provider("exit 1", |c| {
        c.command = None;
        c.provision = Some(provision);
        c.terminate = Some(terminate);
        c.timeout_seconds = 1;
    });
    let first = p.create(&spec("c1"), &NoProgress).await.unwrap_err();
    assert_eq!(first.code(), ErrorCode::Timeout, "{first}");
    let again = p.create(&spec("c1"), &NoProgress).await.unwrap_err();
    let text = again.to_string();
    assert_eq!(again.code(), ErrorCode::Conflict, "{text}");
    assert!(
        text.contains("terminate") && text.contains("host unreachable"),
        "{text}"
    );
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["provision", "terminate"],
        "no second provision"
    );
}
