//! Config loading: good files, and each kind of bad input naming file, line and key.

use std::path::Path;

use super::*;

const GOOD: &str = r#"# Berth on a Proxmox cluster
[provisioner]
type = "proxmox"

[provisioner.proxmox]
api_url = "https://pve.example.com:8006"
api_token_id = "berth@pve!agent"
api_token_secret = "6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34"
node = "pve1"
template_vmid = 9000
storage = "local-lvm"
pool = "berth"
tls_fingerprint = "sha256:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigFileError> {
    parse_config(Path::new("berth.toml"), text, &no_env)
}

fn kind(cfg: &Config) -> BackendKind {
    assert_eq!(cfg.backends.len(), 1);
    cfg.backends[0].kind()
}

fn proxmox(cfg: Config) -> berth_proxmox::ProxmoxConfig {
    match cfg.backends.into_iter().next().map(|b| b.settings) {
        Some(BackendSettings::Proxmox(p)) => p,
        other => panic!("expected a proxmox backend, got {other:?}"),
    }
}

#[test]
fn good_file_loads() {
    let cfg = parse(GOOD).unwrap();
    assert_eq!(kind(&cfg), BackendKind::Proxmox);
    let px = proxmox(cfg);
    assert_eq!(px.node, "pve1");
    assert_eq!(px.template_vmid, 9000);
    assert!(px.verify_ssl, "TLS verification is on by default");
}

#[test]
fn malformed_toml_names_the_line() {
    let err = parse("[provisioner\ntype = \"proxmox\"\n").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");
    assert!(err.to_string().starts_with("berth.toml:1:"), "{err}");
}

#[test]
fn missing_key_names_key_and_table_line() {
    let text = GOOD.replace("node = \"pve1\"\n", "");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.proxmox.node"), "{err}");
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.message.contains("missing required key 'node'"), "{err}");
}

#[test]
fn non_numeric_vmid_names_the_key_and_line() {
    let text = GOOD.replace("template_vmid = 9000", "template_vmid = \"abc\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.proxmox.template_vmid"), "{err}");
    assert_eq!(err.line, Some(10), "{err}");
    assert!(
        err.message.contains("whole number") || err.message.contains("integer"),
        "{err}"
    );
}

#[test]
fn unknown_key_is_rejected_with_alternatives() {
    let text = GOOD.replace("pool = \"berth\"", "poool = \"berth\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.proxmox.poool"), "{err}");
    assert!(err.message.contains("unknown key 'poool'"), "{err}");
    assert!(err.message.contains("pool"), "{err}");
}

#[test]
fn validation_errors_point_at_the_key() {
    let text = GOOD.replace("api_url = \"https://pve.example.com:8006\"", "api_url = \"not a url\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.proxmox.api_url"), "{err}");
    assert_eq!(err.line, Some(6), "{err}");
}

#[test]
fn secret_values_never_appear_in_errors() {
    let text = GOOD.replace(
        "api_token_secret = \"6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34\"",
        "api_token_secret = 987654321987",
    );
    let err = parse(&text).unwrap_err();
    assert!(!err.to_string().contains("987654321987"), "{err}");
    assert_eq!(err.key.as_deref(), Some("provisioner.proxmox.api_token_secret"));
}

#[test]
fn secret_from_env_and_file() {
    let text = GOOD.replace("api_token_secret = \"6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34\"\n", "");
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains(PROXMOX_SECRET_ENV), "{err}");

    let env = |k: &str| (k == PROXMOX_SECRET_ENV).then(|| "from-env-1234".to_owned());
    let cfg = parse_config(Path::new("berth.toml"), &text, &env).unwrap();
    assert_eq!(proxmox(cfg).api_token_secret.unwrap().expose(), "from-env-1234");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "from-file-5678\n").unwrap();
    let with_file = format!("{text}api_token_secret_file = \"token\"\n");
    let cfg = parse_config(&dir.path().join("berth.toml"), &with_file, &no_env).unwrap();
    assert_eq!(proxmox(cfg).api_token_secret.unwrap().expose(), "from-file-5678");
}

#[test]
fn placeholder_secret_is_refused() {
    let text = GOOD.replace(
        "6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34",
        "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
    );
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("placeholder"), "{err}");
    assert!(!err.to_string().contains("xxxxxxxx-xxxx"), "{err}");
}

#[test]
fn unavailable_backend_is_a_clear_error() {
    let err = parse("[provisioner]\ntype = \"libvirt\"\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.type"));
    assert_eq!(err.line, Some(2));
    #[cfg(feature = "libvirt")]
    assert!(err.message.contains("[provisioner.libvirt]"), "{err}");
    let err = parse("[provisioner]\ntype = \"script\"\n").unwrap_err();
    assert!(err.message.contains("[provisioner.script]"), "{err}");
    let err = parse("[provisioner]\ntype = \"vmware\"\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("proxmox"), "{err}");
}

#[test]
fn script_backend_config_resolves_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("backend.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let text =
        "[provisioner]\ntype = \"script\"\n\n[provisioner.script]\ncommand = \"backend.sh\"\ntimeout_seconds = 60\n";
    let cfg = parse_config(&dir.path().join("berth.toml"), text, &no_env).unwrap();
    assert_eq!(kind(&cfg), BackendKind::Script);
    assert_eq!(cfg.base_dir(), dir.path());
    crate::build_provider(&cfg, &cfg.backends[0]).expect("a script provider is built");

    let bad = text.replace("timeout_seconds = 60", "timeout_seconds = \"soon\"");
    let err = parse_config(&dir.path().join("berth.toml"), &bad, &no_env).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.script.timeout_seconds"), "{err}");
    assert_eq!(err.line, Some(6), "{err}");
}

#[test]
fn multipass_backend_needs_no_table_and_names_bad_keys() {
    let cfg = parse("[provisioner]\ntype = \"multipass\"\n").unwrap();
    assert_eq!(kind(&cfg), BackendKind::Multipass);
    let BackendSettings::Multipass(mp) = &cfg.backends[0].settings else {
        unreachable!()
    };
    assert_eq!(mp.image, "24.04");
    let err = parse("[provisioner]\ntype = \"multipass\"\n\n[provisioner.multipass]\nimage = 24\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.multipass.image"), "{err}");
    assert_eq!(err.line, Some(5), "{err}");
}

#[test]
fn keys_inside_inline_tables_point_at_their_line_and_env_values_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("backend.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = dir.path().join("berth.toml");
    let bad_name = "[provisioner]\ntype = \"script\"\n\n[provisioner.script]\ncommand = \"backend.sh\"\nenv = { \"A-B\" = \"x\" }\n";
    let err = parse_config(&path, bad_name, &no_env).unwrap_err();
    assert_eq!(err.line, Some(6), "{err}");
    let bad_type = "[provisioner]\ntype = \"script\"\n\n[provisioner.script]\ncommand = \"backend.sh\"\nenv = { API_TOKEN = 918273645 }\n";
    let err = parse_config(&path, bad_type, &no_env).unwrap_err();
    assert!(!err.to_string().contains("918273645"), "{err}");
}

#[test]
fn secret_errors_name_where_the_secret_came_from() {
    let text = GOOD.replace("api_token_secret = \"6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34\"\n", "");
    let env = |k: &str| (k == PROXMOX_SECRET_ENV).then(|| "changeme".to_owned());
    let err = parse_config(Path::new("berth.toml"), &text, &env).unwrap_err();
    assert!(
        err.message.contains(PROXMOX_SECRET_ENV) && err.message.contains("placeholder"),
        "{err}"
    );
    assert_eq!(err.line, None, "the variable is not in the file: {err}");
}

#[test]
fn relative_ca_file_is_resolved_next_to_the_config_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let with_ca = GOOD.replace("pool = \"berth\"", "pool = \"berth\"\nca_file = \"ca.pem\"");
    let cfg = parse_config(&dir.path().join("berth.toml"), &with_ca, &no_env).unwrap();
    assert_eq!(proxmox(cfg).ca_file.unwrap(), dir.path().join("ca.pem"));
    let missing = GOOD.replace("pool = \"berth\"", "pool = \"berth\"\nca_file = \"nope.pem\"");
    let err = parse_config(&dir.path().join("berth.toml"), &missing, &no_env).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.proxmox.ca_file"), "{err}");
    assert_eq!(err.line, Some(13), "{err}");
}

#[cfg(feature = "libvirt")]
#[test]
fn libvirt_backend_config_resolves_against_the_file_and_names_bad_keys() {
    let text = "[provisioner]\ntype = \"libvirt\"\n\n[provisioner.libvirt]\nimages_dir = \"images\"\ninstances_dir = \"/srv/vms\"\nnetwork = \"bridge:br0\"\n";
    let c = parse_config(Path::new("/etc/berth/berth.toml"), text, &|_| None).unwrap();
    let BackendSettings::Libvirt(lc) = c.backends[0].settings.clone() else {
        unreachable!()
    };
    assert_eq!(lc.images_dir.as_deref(), Some(Path::new("/etc/berth/images")));
    assert_eq!(lc.instances_dir, Path::new("/srv/vms"));
    let bad = "[provisioner]\ntype = \"libvirt\"\n\n[provisioner.libvirt]\nimages_dir = \"i\"\nnetwork = \"tap:0\"\n";
    let err = parse_config(Path::new("/etc/berth/berth.toml"), bad, &|_| None).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.libvirt.network"), "{err}");
    assert_eq!(err.line, Some(6), "{err}");
    let typo = "[provisioner]\ntype = \"libvirt\"\n\n[provisioner.libvirt]\nimage_dir = \"i\"\n";
    let err = parse_config(Path::new("/etc/berth/berth.toml"), typo, &|_| None).unwrap_err();
    assert!(err.to_string().contains("image_dir"), "{err}");
}

const AGENT: &str = r#"
[api]
endpoint = "https://berth.example.com/"

[agent]
state_dir = "/var/lib/berth"
concurrency = 8
metrics_listen = "127.0.0.1:9464"

[polling]
interval_seconds = 20

[capacity]
cores = 32
cpu_overcommit = 4.0
"#;

#[test]
fn agent_tables_load_with_defaults_and_resolved_paths() {
    let cfg = parse(&format!("{GOOD}{AGENT}")).unwrap();
    let a = cfg.agent.expect("the [api] table makes an agent config");
    assert_eq!(a.endpoint, "https://berth.example.com");
    assert_eq!(a.key_file, Path::new("/var/lib/berth/agent.key"));
    assert_eq!(a.agent.concurrency, 8);
    assert_eq!(a.polling.interval_seconds, 20);
    assert_eq!(a.polling.heartbeat_interval_seconds, 15);
    assert_eq!(a.capacity.cpu_threshold, 90, "the seed's thresholds by default");
    assert_eq!(a.capacity.memory_threshold, 85);
    assert!(!a.reconcile.delete_orphans, "orphans are never deleted unless asked");
    assert_eq!(cfg.backends[0].rate_limit.qps, 10.0);
    assert!(parse(GOOD).unwrap().agent.is_none(), "no [api]: a backend-only file");
}

#[test]
fn agent_table_errors_name_key_and_line() {
    let cases = [
        (
            "concurrency = 8",
            "concurrency = 0",
            "agent.concurrency",
            "from 1 to 1024",
        ),
        (
            "cpu_overcommit = 4.0",
            "cpu_overcommit = 0.0",
            "capacity.cpu_overcommit",
            "factor",
        ),
        (
            "endpoint = \"https://berth.example.com/\"",
            "endpoint = \"ftp://x\"",
            "api.endpoint",
            "http",
        ),
        (
            "interval_seconds = 20",
            "interval_seconds = 0",
            "polling.interval_seconds",
            "from 1",
        ),
    ];
    for (from, to, key, says) in cases {
        let text = format!("{GOOD}{}", AGENT.replace(from, to));
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{err}");
        let line = text.lines().position(|l| l.trim() == to).unwrap() + 1;
        assert_eq!(err.line, Some(line), "{err}");
        assert!(err.message.contains(says), "{err}");
    }
    // How the control plane's certificate is checked: a bad pin or CA file names its key.
    let endpoint = "endpoint = \"https://berth.example.com/\"";
    for (extra, key, says) in [
        ("tls_fingerprint = \"AB:CD\"", "api.tls_fingerprint", "32 bytes"),
        ("ca_file = \"no-such-ca.pem\"", "api.ca_file", "no-such-ca.pem"),
    ] {
        let text = format!("{GOOD}{}", AGENT.replace(endpoint, &format!("{endpoint}\n{extra}")));
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{err}");
        assert!(err.message.contains(says), "{err}");
    }
    let err = parse(&format!("{GOOD}{AGENT}[reconcile]\nbogus = 1\n")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("reconcile.bogus"), "{err}");
    let err = parse(&format!("{GOOD}\n[provisioner.rate_limit]\nqps = -1\n")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.rate_limit.qps"), "{err}");
}

#[path = "tests_backends.rs"]
mod backends;

#[test]
fn metrics_are_served_unless_turned_off() {
    let api = "[api]\nendpoint = \"https://berth.example.com\"\n";
    let on = parse(&format!("{GOOD}{api}")).unwrap().agent.unwrap();
    assert_eq!(
        on.agent.metrics_listen.address(),
        Some("127.0.0.1:9464".parse().unwrap())
    );
    let off = parse(&format!("{GOOD}{api}[agent]\nmetrics_listen = \"off\"\n"))
        .unwrap()
        .agent
        .unwrap();
    assert_eq!(off.agent.metrics_listen.address(), None);
    let named = parse(&format!("{GOOD}{api}[agent]\nmetrics_listen = \"127.0.0.1:9999\"\n"))
        .unwrap()
        .agent
        .unwrap();
    assert_eq!(
        named.agent.metrics_listen,
        crate::config::MetricsListen::At("127.0.0.1:9999".parse().unwrap()),
        "an address the file names is meant: taken, the agent does not start"
    );
    let err = parse(&format!("{GOOD}{api}[agent]\nmetrics_listen = \"nine\"\n")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("agent.metrics_listen"), "{err}");
    assert!(err.to_string().contains("\"off\""), "{err}");
}
