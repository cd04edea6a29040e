//! `[provisioner.backends.NAME]`: several backends in one file.

use super::super::*;

const TWO: &str = r#"[provisioner.backends.zeta]
type = "proxmox"
concurrency = 2

[provisioner.backends.zeta.proxmox]
api_url = "https://pve.example.com:8006"
api_token_id = "berth@pve!agent"
api_token_secret = "6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34"
node = "pve1"
template_vmid = 9000
storage = "local-lvm"

[provisioner.backends.zeta.rate_limit]
qps = 3.0

[provisioner.backends.alpha]
type = "manual"

[provisioner.backends.alpha.capacity]
cores = 8
cpu_threshold = 50
"#;

fn parse(text: &str) -> Result<Config, ConfigFileError> {
    let dir = std::env::temp_dir();
    parse_config(&dir.join("berth.toml"), text, &|_| None)
}

#[test]
fn backends_load_in_file_order_with_their_own_settings() {
    let cfg = parse(TWO).unwrap();
    let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["zeta", "alpha"],
        "file order, not name order: the first is the default"
    );
    let (zeta, alpha) = (&cfg.backends[0], &cfg.backends[1]);
    assert_eq!(zeta.kind(), BackendKind::Proxmox);
    assert_eq!(zeta.concurrency, Some(2));
    assert_eq!(zeta.rate_limit.qps, 3.0);
    assert_eq!(zeta.key_prefix, "provisioner.backends.zeta");
    assert_eq!(alpha.kind(), BackendKind::Manual);
    assert_eq!(alpha.concurrency, None, "the agent's concurrency applies");
    let cap = alpha.capacity.as_ref().expect("its own capacity");
    assert_eq!((cap.cores, cap.cpu_threshold, cap.memory_threshold), (Some(8), 50, 85));
    assert!(zeta.capacity.is_none());
    assert_eq!(cfg.describe_backends(), "zeta (proxmox), alpha (manual)");
}

#[test]
fn one_backend_is_chosen_by_name_or_by_being_the_only_one() {
    let cfg = parse(TWO).unwrap();
    assert_eq!(cfg.backend(Some("alpha")).unwrap().name, "alpha");
    let err = cfg.backend(None).unwrap_err();
    assert!(
        err.message.contains("2 backends (zeta, alpha)") && err.message.contains("--backend"),
        "{err}"
    );
    let err = cfg.backend(Some("beta")).unwrap_err();
    assert!(err.message.contains("no backend named \"beta\""), "{err}");
    // The operator's commands find the only manual backend without being told.
    crate::manual_provider(&cfg, None).expect("the one manual backend");
    let err = crate::manual_provider(&cfg, Some("zeta")).unwrap_err();
    assert!(err.message.contains("manual backend"), "{err}");
}

#[test]
fn an_error_in_a_named_backend_names_its_key_and_line() {
    let line_of = |text: &str, l: &str| text.lines().position(|x| x.trim() == l).unwrap() + 1;
    let text = TWO.replace("node = \"pve1\"\n", "");
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.key.as_deref(),
        Some("provisioner.backends.zeta.proxmox.node"),
        "{err}"
    );
    assert_eq!(
        err.line,
        Some(line_of(&text, "[provisioner.backends.zeta.proxmox]")),
        "{err}"
    );
    assert!(err.message.contains("missing required key 'node'"), "{err}");

    let text = TWO.replace("cpu_threshold = 50", "cpu_threshold = 0");
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.key.as_deref(),
        Some("provisioner.backends.alpha.capacity.cpu_threshold"),
        "{err}"
    );
    assert_eq!(err.line, Some(line_of(&text, "cpu_threshold = 0")), "{err}");

    let text = TWO.replace("concurrency = 2", "concurrency = 0");
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.key.as_deref(),
        Some("provisioner.backends.zeta.concurrency"),
        "{err}"
    );
    assert_eq!(err.line, Some(line_of(&text, "concurrency = 0")), "{err}");

    let text = TWO.replace("qps = 3.0", "qps = -3.0");
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.key.as_deref(),
        Some("provisioner.backends.zeta.rate_limit.qps"),
        "{err}"
    );

    let text = TWO.replace("type = \"manual\"\n", "");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.backends.alpha.type"), "{err}");
    assert!(err.message.contains("missing required key 'type'"), "{err}");

    let err = parse(&TWO.replace("backends.zeta", "backends.Zeta")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.backends.Zeta"), "{err}");
    assert_eq!(err.line, Some(1), "{err}");
    assert!(err.message.contains("backend name \"Zeta\""), "{err}");
}

#[test]
fn the_two_shapes_do_not_mix() {
    let text = format!("[provisioner]\ntype = \"manual\"\n\n{TWO}");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.type"), "{err}");
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("each backend carries its own settings"), "{err}");

    let err = parse("[provisioner.backends]\n").unwrap_err();
    assert!(err.message.contains("at least one"), "{err}");

    let nested = format!("{TWO}\n[provisioner.backends.alpha.backends.x]\ntype = \"manual\"\n");
    let err = parse(&nested).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.backends.alpha.backends"), "{err}");

    let err = parse("[provisioner]\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("provisioner.type"), "{err}");
}

#[test]
fn the_single_shape_is_one_backend_named_after_its_kind() {
    let cfg = parse("[provisioner]\ntype = \"manual\"\n").unwrap();
    assert_eq!(cfg.backends.len(), 1);
    assert_eq!(cfg.backends[0].name, "manual");
    assert_eq!(cfg.backends[0].key_prefix, "provisioner");
    assert!(cfg.backend(None).is_ok());
}
