//! `[provisioner.backends.NAME]`: several backends in one file.

use super::super::*;
use super::parse;

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
    // The manual provider makes its state directory next to the file: a private one here.
    let dir = tempfile::tempdir().unwrap();
    let cfg = parse_config(&dir.path().join("berth.toml"), TWO, &|_| None).unwrap();
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
    // (what is changed, into what, the key named, the line pointed at, what the message says)
    let cases = [
        (
            "node = \"pve1\"\n",
            "",
            "provisioner.backends.zeta.proxmox.node",
            "[provisioner.backends.zeta.proxmox]",
            "missing required key 'node'",
        ),
        (
            "cpu_threshold = 50",
            "cpu_threshold = 0",
            "provisioner.backends.alpha.capacity.cpu_threshold",
            "cpu_threshold = 0",
            "from 1 to 100",
        ),
        (
            "concurrency = 2",
            "concurrency = 0",
            "provisioner.backends.zeta.concurrency",
            "concurrency = 0",
            "from 1 to 1024",
        ),
        (
            "qps = 3.0",
            "qps = -3.0",
            "provisioner.backends.zeta.rate_limit.qps",
            "qps = -3.0",
            "greater than 0",
        ),
        (
            "type = \"manual\"\n",
            "",
            "provisioner.backends.alpha.type",
            "[provisioner.backends.alpha]",
            "missing required key 'type'",
        ),
        (
            "backends.zeta]",
            "backends.Zeta]",
            "provisioner.backends.Zeta",
            "[provisioner.backends.Zeta]",
            "backend name \"Zeta\"",
        ),
    ];
    for (from, to, key, at, says) in cases {
        let text = TWO.replacen(from, to, 1);
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{err}");
        let line = text.lines().position(|l| l.trim() == at).unwrap() + 1;
        assert_eq!(err.line, Some(line), "{err}");
        assert!(err.message.contains(says), "{err}");
    }
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

#[test]
fn a_remote_backend_is_read_and_its_bad_keys_named() {
    let cfg = parse(
        "[provisioner]\ntype = \"remote\"\n\n[provisioner.remote]\nendpoint = \"unix:/run/berth/pve.sock\"\ncall_timeout_secs = 20\n",
    )
    .unwrap();
    let b = &cfg.backends[0];
    assert_eq!(b.kind(), BackendKind::Remote);
    let BackendSettings::Remote(rc) = &b.settings else {
        panic!("{:?}", b.settings)
    };
    assert_eq!(
        (rc.endpoint.as_str(), rc.call_timeout_secs),
        ("unix:/run/berth/pve.sock", 20)
    );
    for (text, key, says) in [
        (
            "[provisioner]\ntype = \"remote\"\n",
            "provisioner.type",
            "[provisioner.remote]",
        ),
        (
            "[provisioner]\ntype = \"remote\"\n[provisioner.remote]\nendpoint = \"http://198.51.100.7:8421\"\n",
            "provisioner.remote.endpoint",
            "only for loopback",
        ),
        (
            "[provisioner]\ntype = \"remote\"\n[provisioner.remote]\nendpoint = \"https://pve1:8421\"\n",
            "provisioner.remote.ca_file",
            "CA",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
        assert!(err.message.contains(says), "{text}: {err}");
    }
}

#[test]
fn a_drift_check_names_its_file_backend_and_interval() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site.toml"), "version = 1\n").unwrap();
    let path = dir.path().join("berth.toml");
    let pve = "[provisioner.backends.pve]\ntype = \"proxmox\"\n[provisioner.backends.pve.proxmox]\napi_url = \"https://pve.example.com:8006\"\napi_token_id = \"berth@pve!agent\"\napi_token_secret = \"6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34\"\nnode = \"pve1\"\ntemplate_vmid = 9000\nstorage = \"local-lvm\"\n";
    let manual = "[provisioner.backends.lab]\ntype = \"manual\"\n";
    let cfg = parse_config(&path, &format!("{pve}{manual}[drift]\nsite = \"site.toml\"\n"), &|_| {
        None
    })
    .unwrap();
    let d = cfg.drift.expect("[drift]");
    assert_eq!(d.site, dir.path().join("site.toml"), "relative to the file");
    assert_eq!(
        (d.backend.as_str(), d.interval.as_secs()),
        ("pve", 3600),
        "the only proxmox backend; hourly"
    );
    assert_eq!(d.ledger, None, "no audit file named: against the file itself");
    let with_audit = format!("{pve}[drift]\nsite = \"site.toml\"\naudit = \"berth-decl-audit.jsonl\"\n");
    let d = parse_config(&path, &with_audit, &|_| None).unwrap().drift.unwrap();
    assert_eq!(
        d.ledger,
        Some(dir.path().join("berth-decl-audit.ledger.json")),
        "the ledger beside the audit file, relative to the configuration"
    );
    for (drift, key, says) in [
        ("site = \"nope.toml\"", "drift.site", "not a readable file"),
        (
            "site = \"site.toml\"\ninterval_seconds = 10",
            "drift.interval_seconds",
            "60 to 86400",
        ),
        ("site = \"site.toml\"\nbackend = \"lab\"", "drift.backend", "is manual"),
        (
            "site = \"site.toml\"\nbackend = \"pve9\"",
            "drift.backend",
            "no backend named",
        ),
        ("site = \"site.toml\"\ncolor = 1", "drift", "color"),
        (
            "site = \"site.toml\"\naudit = \"no/such/dir/audit.jsonl\"",
            "drift.audit",
            "in a directory that exists",
        ),
    ] {
        let err = parse_config(&path, &format!("{pve}{manual}[drift]\n{drift}\n"), &|_| None).unwrap_err();
        assert!(err.to_string().contains(says), "{drift}: {err}");
        if key != "drift" {
            assert_eq!(err.key.as_deref(), Some(key), "{drift}: {err}");
        }
    }
    let err = parse_config(&path, &format!("{manual}[drift]\nsite = \"site.toml\"\n"), &|_| None).unwrap_err();
    assert!(err.to_string().contains("0 proxmox backends"), "{err}");
}

#[test]
fn warm_pools_name_their_backend_size_and_mode_and_each_bad_key_is_pointed_at() {
    let path = Path::new("berth.toml");
    let pve = "[provisioner.backends.pve]\ntype = \"proxmox\"\n[provisioner.backends.pve.proxmox]\napi_url = \"https://pve.example.com:8006\"\napi_token_id = \"berth@pve!agent\"\napi_token_secret = \"6f1c7d2e-9a41-4f3b-8e55-0c2d9b7a1e34\"\nnode = \"pve1\"\ntemplate_vmid = 9000\nstorage = \"local-lvm\"\n";
    let good = "[[pool]]\nname = \"small\"\ncores = 2\nmemory_mib = 2048\ndisk_gib = 20\nready = 3\n";
    let cfg = parse_config(path, &format!("{pve}{good}"), &|_| None).unwrap();
    let p = &cfg.pools[0];
    assert_eq!(
        (
            p.name.as_str(),
            p.backend.as_str(),
            p.ready,
            p.mode,
            p.drain_on_shutdown
        ),
        ("small", "pve", 3, berth_core::PoolMode::Stopped, false),
        "the only backend; stopped; kept over restarts"
    );
    let mut other = p.clone();
    other.template = Some("9001".into());
    assert_ne!(p.key(), other.key(), "a changed template is another definition");
    assert_eq!(p.key(), cfg.pools[0].clone().key(), "the key is stable");

    let second = "[[pool]]\nname = \"big\"\ncores = 0\nmemory_mib = 2048\ndisk_gib = 20\nready = 1\n";
    for (pools, key, line, says) in [
        (
            format!("{good}{second}"),
            "pool[1].cores",
            18,
            "expected 1 to 8192 (got 0)",
        ),
        (good.replace("small", "Small"), "pool[0].name", 11, "lowercase letters"),
        (
            format!("{good}{good}"),
            "pool[1].name",
            17,
            "two pools are called \"small\"",
        ),
        (
            good.replace("ready = 3", "ready = 101"),
            "pool[0].ready",
            15,
            "0 to 100",
        ),
        (
            format!("{good}backend = \"pve9\"\n"),
            "pool[0].backend",
            16,
            "no backend named \"pve9\"",
        ),
        (
            good.replace("memory_mib = 2048", "memory_mib = 8"),
            "pool[0].memory_mib",
            13,
            "at least 16",
        ),
    ] {
        let err = parse_config(path, &format!("{pve}{pools}"), &|_| None).unwrap_err();
        assert!(err.to_string().contains(says), "{key}: {err}");
        assert_eq!((err.key.as_deref(), err.line), (Some(key), Some(line)), "{err}");
    }
    let err = parse_config(path, &format!("{pve}{good}mode = \"warm\"\n"), &|_| None).unwrap_err();
    assert!(
        err.to_string().contains("stopped") && err.to_string().contains("running"),
        "{err}"
    );
    let err = parse_config(path, &format!("{pve}{good}size = 1\n"), &|_| None).unwrap_err();
    assert!(err.to_string().contains("size"), "{err}");
}
