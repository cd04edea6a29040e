//! Tests of the request validator against the real `apidata.json` (skipped when the file is absent).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use berth_pve_emulator::schema::{Schema, ValidationError};

const NOT_DEFINED: &str = "property is not defined in schema and the schema does not allow additional properties";
const MISSING: &str = "property is missing and it is not optional";

fn schema() -> Option<&'static Schema> {
    static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let path = std::env::var_os("BERTH_PVE_SCHEMA")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/pve/apidata.json"))
                });
            if !path.exists() {
                eprintln!(
                    "skipping: {} is absent (set BERTH_PVE_SCHEMA to run these tests)",
                    path.display()
                );
                return None;
            }
            Some(Schema::load(&path).unwrap_or_else(|e| panic!("loading the schema: {e}")))
        })
        .as_ref()
}

fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Validates and returns the parameter errors (panics on path/method errors).
fn errors(s: &Schema, method: &str, path: &str, params: &[(&str, &str)]) -> BTreeMap<String, String> {
    match s.validate(method, path, &pairs(params)) {
        Ok(()) => BTreeMap::new(),
        Err(ValidationError::Params(e)) => e,
        Err(other) => panic!("{method} {path}: expected parameter errors, got {other:?}"),
    }
}

fn one(key: &str, msg: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(key.to_string(), msg.to_string())])
}

/// (method, path, parameters) of one API call.
type Call = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

const CLONE: &str = "/nodes/pve1/qemu/100/clone";
const CONFIG: &str = "/nodes/pve1/qemu/100/config";

#[test]
fn schema_is_shareable_between_request_handlers() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug>() {}
    assert_send_sync::<Schema>();
    assert_send_sync::<ValidationError>();
}

#[test]
fn schema_loads_every_endpoint() {
    let Some(s) = schema() else { return };
    assert_eq!(s.endpoint_count(), 649, "facts §0: 649 method endpoints");
}

#[test]
fn schema_valid_clone_passes() {
    let Some(s) = schema() else { return };
    let params = [
        ("newid", "101"),
        ("full", "1"),
        ("name", "web-1.example"),
        ("target", "pve2"),
        ("storage", "local-lvm"),
        ("pool", "prod"),
        ("format", "qcow2"),
        ("description", "made by berth"),
    ];
    assert_eq!(s.validate("POST", CLONE, &pairs(&params)), Ok(()));
}

#[test]
fn schema_clone_without_newid_is_missing() {
    let Some(s) = schema() else { return };
    assert_eq!(errors(s, "POST", CLONE, &[("full", "1")]), one("newid", MISSING));
}

#[test]
fn schema_clone_newid_99_fails_the_vmid_format_before_the_minimum() {
    // check_prop runs the format check before minimum/maximum, so PVE reports the format.
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", CLONE, &[("newid", "99")]);
    assert_eq!(
        e,
        one("newid", "invalid format - value does not look like a valid VM ID\n")
    );
}

#[test]
fn schema_minimum_and_maximum_messages() {
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", CLONE, &[("newid", "101"), ("bwlimit", "-1")]);
    assert_eq!(e, one("bwlimit", "value must have a minimum value of 0"));
    let lxc = "/nodes/pve1/lxc/200/config";
    assert_eq!(
        errors(s, "PUT", lxc, &[("cores", "9000")]),
        one("cores", "value must have a maximum value of 8192")
    );
}

#[test]
fn schema_boolean_accepts_only_one_and_zero() {
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", CLONE, &[("newid", "101"), ("full", "true")]);
    assert_eq!(e, one("full", "type check ('boolean') failed - got 'true'"));
    assert_eq!(
        s.validate("POST", CLONE, &pairs(&[("newid", "101"), ("full", "0")])),
        Ok(())
    );
}

#[test]
fn schema_integer_type_check() {
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", CLONE, &[("newid", "abc")]);
    assert_eq!(e, one("newid", "type check ('integer') failed - got 'abc'"));
}

#[test]
fn schema_unknown_parameter_is_rejected() {
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", CLONE, &[("newid", "101"), ("hostname", "x")]);
    assert_eq!(e, one("hostname", NOT_DEFINED));
}

#[test]
fn schema_dns_name_rejects_underscores() {
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", CLONE, &[("newid", "101"), ("name", "my_vm")]);
    assert_eq!(
        e,
        one("name", "invalid format - value does not look like a valid DNS name\n")
    );
}

#[test]
fn schema_enum_message_lists_the_values() {
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", CLONE, &[("newid", "101"), ("format", "vdi")]);
    assert_eq!(
        e,
        one(
            "format",
            "value 'vdi' does not have a value in the enumeration 'raw, qcow2, vmdk'"
        )
    );
}

#[test]
fn schema_sshkeys_must_be_urlencoded() {
    let Some(s) = schema() else { return };
    let raw = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB user@host";
    let e = errors(s, "PUT", CONFIG, &[("sshkeys", raw)]);
    assert_eq!(
        e,
        one(
            "sshkeys",
            &format!("invalid format - invalid urlencoded string: {raw}\n")
        )
    );
    let encoded = "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIB%20user%40host%0Assh-rsa%20AAAAB3%20other";
    assert_eq!(
        s.validate("PUT", CONFIG, &pairs(&[("sshkeys", encoded), ("ciuser", "debian")])),
        Ok(())
    );
}

#[test]
fn schema_memory_property_string() {
    let Some(s) = schema() else { return };
    for ok in ["2048", "current=2048"] {
        assert_eq!(
            s.validate("PUT", CONFIG, &pairs(&[("memory", ok)])),
            Ok(()),
            "memory={ok}"
        );
    }
    let e = errors(s, "PUT", CONFIG, &[("memory", "current=8")]);
    assert_eq!(
        e,
        one(
            "memory",
            "invalid format - format error\nmemory.current: value must have a minimum value of 16\n"
        )
    );
    let e = errors(s, "PUT", CONFIG, &[("memory", "2048,current=4096")]);
    assert_eq!(
        e,
        one(
            "memory",
            "invalid format - duplicate key in comma-separated list property: current\n"
        )
    );
}

#[test]
fn schema_ipconfig_gateway_must_be_ipv4() {
    let Some(s) = schema() else { return };
    let e = errors(s, "PUT", CONFIG, &[("ipconfig0", "ip=10.0.0.5/24,gw=nope")]);
    let msg = "invalid format - format error\nipconfig0.gw: invalid format - value does not look like a valid IPv4 address\n\n";
    assert_eq!(e, one("ipconfig0", msg));
    let good = [
        ("ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1"),
        ("ipconfig31", "ip6=auto"),
        ("nameserver", "1.1.1.1 9.9.9.9"),
    ];
    assert_eq!(s.validate("PUT", CONFIG, &pairs(&good)), Ok(()));
}

#[test]
fn schema_ipconfig_gateway_requires_an_address() {
    let Some(s) = schema() else { return };
    let e = errors(s, "PUT", CONFIG, &[("ipconfig0", "gw=10.0.0.1")]);
    let msg = "invalid format - format error\nipconfig0.ip: missing property - 'ipconfig0.gw' requires this property\n";
    assert_eq!(e, one("ipconfig0", msg));
    let e = errors(s, "PUT", CONFIG, &[("ipconfig0", "ip=10.0.0.5/24,dns=1.1.1.1")]);
    assert_eq!(
        e,
        one(
            "ipconfig0",
            "invalid format - invalid key in comma-separated list property: dns\n"
        )
    );
}

#[test]
fn schema_qemu_net_property_string() {
    let Some(s) = schema() else { return };
    for ok in [
        "virtio,bridge=vmbr0",
        "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=10",
        "model=e1000,firewall=yes",
    ] {
        assert_eq!(s.validate("PUT", CONFIG, &pairs(&[("net0", ok)])), Ok(()), "net0={ok}");
    }
    let e = errors(s, "PUT", CONFIG, &[("net0", "bridge=vmbr0")]);
    assert_eq!(
        e,
        one(
            "net0",
            &format!("invalid format - format error\nnet0.model: {MISSING}\n")
        )
    );
    let e = errors(s, "PUT", CONFIG, &[("net0", "virtio=01:00:00:00:00:01")]);
    let msg = "invalid format - format error\nnet0.macaddr: invalid format - value does not look like a valid unicast MAC address\n\n";
    assert_eq!(e, one("net0", msg));
    let e = errors(s, "PUT", CONFIG, &[("net0", "virtio,bridge=vmbr0,tag=5000")]);
    assert_eq!(
        e,
        one(
            "net0",
            "invalid format - format error\nnet0.tag: value must have a maximum value of 4094\n"
        )
    );
    let e = errors(s, "PUT", CONFIG, &[("net0", "virtio,bridge")]);
    assert_eq!(
        e,
        one(
            "net0",
            "invalid format - duplicate key in comma-separated list property: model\n"
        )
    );
}

#[test]
fn schema_indexed_parameters_respect_their_ranges() {
    let Some(s) = schema() else { return };
    let ok = [
        ("net31", "virtio,bridge=vmbr0"),
        ("scsi30", "local-lvm:32"),
        ("unused255", "local-lvm:vm-100-disk-1"),
    ];
    assert_eq!(s.validate("PUT", CONFIG, &pairs(&ok)), Ok(()));
    for bad in ["net32", "scsi31", "net05", "ipconfig32"] {
        assert_eq!(
            errors(s, "PUT", CONFIG, &[(bad, "ip=dhcp")]),
            one(bad, NOT_DEFINED),
            "{bad}"
        );
    }
}

#[test]
fn schema_config_requires_and_lists() {
    let Some(s) = schema() else { return };
    let e = errors(s, "PUT", CONFIG, &[("force", "1")]);
    assert_eq!(e, one("delete", "missing property - 'force' requires this property"));
    assert_eq!(
        s.validate(
            "PUT",
            CONFIG,
            &pairs(&[("delete", "ipconfig1,net1;tags"), ("force", "1")])
        ),
        Ok(())
    );
    let e = errors(s, "PUT", CONFIG, &[("delete", "net1,9bad")]);
    assert_eq!(e, one("delete", "invalid format - invalid configuration ID '9bad'\n"));
    assert_eq!(
        s.validate(
            "PUT",
            CONFIG,
            &pairs(&[("tags", "berth;owner-42"), ("boot", "order=scsi0;net0")])
        ),
        Ok(())
    );
    let e = errors(s, "PUT", CONFIG, &[("boot", "order=scsi0;floppy0")]);
    assert_eq!(
        e,
        one(
            "boot",
            "invalid format - format error\nboot.order: invalid format - invalid boot device 'floppy0'\n\n"
        )
    );
}

#[test]
fn schema_nextid_with_vmid() {
    let Some(s) = schema() else { return };
    assert_eq!(s.validate("GET", "/cluster/nextid", &[]), Ok(()));
    assert_eq!(
        s.validate("GET", "/cluster/nextid", &pairs(&[("vmid", "4242")])),
        Ok(())
    );
    let e = errors(s, "GET", "/cluster/nextid", &[("vmid", "1e3")]);
    assert_eq!(e, one("vmid", "type check ('integer') failed - got '1e3'"));
    assert_eq!(
        s.validate("GET", "/cluster/nextid", &pairs(&[("_dc", "1700000000")])),
        Ok(())
    );
}

#[test]
fn schema_delete_qemu_with_purge() {
    let Some(s) = schema() else { return };
    let path = "/nodes/pve1/qemu/100";
    assert_eq!(
        s.validate(
            "DELETE",
            path,
            &pairs(&[("purge", "1"), ("destroy-unreferenced-disks", "1")])
        ),
        Ok(())
    );
    let e = errors(s, "DELETE", path, &[("purge", "yes")]);
    assert_eq!(e, one("purge", "type check ('boolean') failed - got 'yes'"));
}

#[test]
fn schema_lxc_create() {
    let Some(s) = schema() else { return };
    let params = [
        ("vmid", "200"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst"),
        (
            "ssh-public-keys",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB user@host\nssh-rsa AAAAB3 other",
        ),
        ("net0", "name=eth0,bridge=vmbr0,ip=10.0.0.6/24,gw=10.0.0.1,firewall=1"),
        ("rootfs", "local-lvm:8"),
        ("hostname", "ct-1"),
        ("memory", "1024"),
        ("unprivileged", "1"),
        ("features", "nesting=1,keyctl=1"),
        ("password", "hunter22"),
    ];
    assert_eq!(s.validate("POST", "/nodes/pve1/lxc", &pairs(&params)), Ok(()));
    let e = errors(s, "POST", "/nodes/pve1/lxc", &[("vmid", "200"), ("rootfs", "size=8G")]);
    let mut want = one("ostemplate", MISSING);
    want.insert(
        "rootfs".into(),
        format!("invalid format - format error\nrootfs.volume: {MISSING}\n"),
    );
    assert_eq!(e, want);
    let e = errors(
        s,
        "POST",
        "/nodes/pve1/lxc",
        &[
            ("vmid", "200"),
            ("ostemplate", "local:vztmpl/x.tar.zst"),
            ("net0", "bridge=vmbr0,ip=dhcp"),
        ],
    );
    assert_eq!(
        e,
        one(
            "net0",
            &format!("invalid format - format error\nnet0.name: {MISSING}\n")
        )
    );
    let e = errors(
        s,
        "POST",
        "/nodes/pve1/lxc",
        &[("vmid", "200"), ("ostemplate", "x"), ("password", "abc")],
    );
    assert_eq!(e, one("password", "value must be at least 5 characters long"));
}

#[test]
fn schema_path_parameters_are_validated_and_merged() {
    let Some(s) = schema() else { return };
    let e = errors(s, "POST", "/nodes/pve_1/qemu/100/clone", &[("newid", "101")]);
    assert_eq!(
        e,
        one("node", "invalid format - value does not look like a valid node name\n")
    );
    let e = errors(s, "POST", "/nodes/pve1/qemu/abc/clone", &[("newid", "101")]);
    assert_eq!(e, one("vmid", "type check ('integer') failed - got 'abc'"));
    let dup = "duplicate parameter (already defined in URI) with conflicting values!";
    assert_eq!(
        errors(s, "POST", CLONE, &[("newid", "101"), ("node", "pve2")]),
        one("node", dup)
    );
    assert_eq!(
        s.validate("POST", CLONE, &pairs(&[("newid", "101"), ("node", "pve1")])),
        Ok(())
    );
}

#[test]
fn schema_unknown_path_and_wrong_method() {
    let Some(s) = schema() else { return };
    assert_eq!(
        s.validate("GET", "/nodes/pve1/qemu/100/bogus", &[]),
        Err(ValidationError::UnknownPath)
    );
    assert_eq!(s.validate("GET", "/nope", &[]), Err(ValidationError::UnknownPath));
    assert_eq!(
        s.validate("DELETE", "/cluster/nextid", &[]),
        Err(ValidationError::MethodNotAllowed)
    );
    assert_eq!(s.validate("PATCH", CLONE, &[]), Err(ValidationError::MethodNotAllowed));
    let e = errors(s, "GET", "/version", &[("x", "1")]);
    assert_eq!(e, one("x", NOT_DEFINED));
}

#[test]
fn schema_task_status_path_is_percent_decoded() {
    let Some(s) = schema() else { return };
    let upid = "UPID%3Apve1%3A0000C530%3A00B3E1C4%3A65A1B2C3%3Aqmclone%3A100%3Aroot%40pam%21berth%3A";
    let path = format!("/nodes/pve1/tasks/{upid}/status");
    assert_eq!(s.validate("GET", &path, &[]), Ok(()));
    assert_eq!(
        s.validate(
            "GET",
            "/nodes/pve1/tasks/UPID:pve1:x/log",
            &pairs(&[("start", "0"), ("limit", "50")])
        ),
        Ok(())
    );
}

#[test]
fn schema_large_patterns_are_still_enforced() {
    // SDN vnet `alias` is `(?^i:[\(\)-_.\w\d\s]{0,256})`: too big for a quick compile at load time.
    let Some(s) = schema() else { return };
    let base = [("vnet", "vnet1"), ("zone", "zone1")];
    let with = |alias: &'static str| base.iter().copied().chain([("alias", alias)]).collect::<Vec<_>>();
    assert_eq!(
        s.validate("POST", "/cluster/sdn/vnets", &pairs(&with("uplink (rack 4)"))),
        Ok(())
    );
    let e = errors(s, "POST", "/cluster/sdn/vnets", &with("a|b"));
    assert_eq!(e, one("alias", "value does not match the regex pattern"));
}

#[test]
fn schema_other_berth_calls() {
    let Some(s) = schema() else { return };
    let ok: &[Call] = &[
        (
            "PUT",
            "/nodes/pve1/qemu/100/resize",
            &[("disk", "scsi0"), ("size", "+10G")],
        ),
        ("POST", "/nodes/pve1/qemu/100/status/start", &[]),
        (
            "POST",
            "/nodes/pve1/qemu/100/status/shutdown",
            &[("forceStop", "1"), ("timeout", "60")],
        ),
        (
            "POST",
            "/nodes/pve1/qemu/100/status/stop",
            &[("overrule-shutdown", "1")],
        ),
        ("GET", "/nodes/pve1/qemu/100/status/current", &[]),
        ("GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces", &[]),
        (
            "PUT",
            CONFIG,
            &[
                ("cicustom", "user=local:snippets/u.yaml"),
                ("ciupgrade", "0"),
                ("agent", "1"),
            ],
        ),
        ("POST", "/pools", &[("poolid", "berth/prod"), ("comment", "tenants")]),
        ("GET", "/cluster/resources", &[("type", "vm")]),
        ("GET", "/nodes/pve1/storage", &[("content", "images,rootdir")]),
        (
            "POST",
            "/nodes/pve1/lxc/200/clone",
            &[("newid", "201"), ("hostname", "ct-2"), ("bwlimit", "1.5")],
        ),
        ("DELETE", "/nodes/pve1/lxc/200", &[("force", "1"), ("purge", "1")]),
    ];
    for (method, path, params) in ok {
        assert_eq!(s.validate(method, path, &pairs(params)), Ok(()), "{method} {path}");
    }
    let e = errors(
        s,
        "PUT",
        "/nodes/pve1/qemu/100/resize",
        &[("disk", "scsi0"), ("size", "10GB")],
    );
    assert_eq!(e, one("size", "value does not match the regex pattern"));
    let e = errors(s, "POST", "/pools", &[("poolid", "a/b/c/d")]);
    assert_eq!(
        e,
        one(
            "poolid",
            "invalid format - pool name 'a/b/c/d' nested too deeply (max levels = 3)\n"
        )
    );
    let e = errors(s, "GET", "/nodes/pve1/storage", &[("content", "images,disks")]);
    assert_eq!(e, one("content", "invalid format - invalid content type 'disks'\n"));
}
