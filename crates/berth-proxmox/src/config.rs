//! `[provisioner.proxmox]` of berth.toml: the settings, their defaults, and `validate()`, which
//! names the offending key and says what was expected.

use std::net::IpAddr;
use std::path::PathBuf;

use berth_core::Secret;
use serde::Deserialize;

use berth_tls::parse_fingerprints;

pub use berth_core::ConfigError;

/// The Proxmox backend's configuration. Every field without a default is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxConfig {
    /// `https://pve.example.com:8006` (Berth appends `/api2/json`).
    pub api_url: String,
    /// `USER@REALM!TOKENID`.
    pub api_token_id: String,
    #[serde(default)]
    pub api_token_secret: Option<Secret>,
    #[serde(default)]
    pub api_token_secret_file: Option<PathBuf>,
    /// The node Berth places guests on.
    pub node: String,
    /// Default VM template (used when a spec names none).
    pub template_vmid: u32,
    /// Target storage for full clones and container root disks.
    pub storage: String,
    #[serde(default)]
    pub pool: Option<String>,
    /// TLS certificate verification; `false` is never the default and logs a warning.
    #[serde(default = "default_true")]
    pub verify_ssl: bool,
    /// PEM CA bundle to trust in addition to the system roots (e.g. `/etc/pve/pve-root-ca.pem`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server's leaf certificate (`sha256:AB:CD:…`); a comma-separated list is
    /// accepted so a certificate renewal can be rolled.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    #[serde(default = "default_true")]
    pub full_clone: bool,
    /// Default container template volume (`local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`).
    #[serde(default)]
    pub ct_template: Option<String>,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_ci_user")]
    pub ci_user: String,
    /// Space- or comma-separated DNS servers given to guests when the spec names none.
    #[serde(default)]
    pub nameserver: Option<String>,
    #[serde(default = "default_vmid_min")]
    pub vmid_min: u32,
    #[serde(default = "default_vmid_max")]
    pub vmid_max: u32,
    #[serde(default = "default_clone_timeout")]
    pub clone_timeout_secs: u64,
    #[serde(default = "default_task_timeout")]
    pub task_timeout_secs: u64,
    /// How long a guest may take to report an address, counted from its start request (a new
    /// guest is asked while it starts).
    #[serde(default = "default_network_timeout")]
    pub network_timeout_secs: u64,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_bridge() -> String {
    "vmbr0".into()
}
fn default_ci_user() -> String {
    "berth".into()
}
fn default_vmid_min() -> u32 {
    10_000
}
fn default_vmid_max() -> u32 {
    99_999
}
fn default_clone_timeout() -> u64 {
    1800
}
fn default_task_timeout() -> u64 {
    300
}
fn default_network_timeout() -> u64 {
    600
}
fn default_poll_interval() -> u64 {
    1000
}

impl ProxmoxConfig {
    /// A configuration with every default filled in; the five required values are given.
    pub fn new(api_url: &str, api_token_id: &str, node: &str, template_vmid: u32, storage: &str) -> Self {
        ProxmoxConfig {
            api_url: api_url.to_owned(),
            api_token_id: api_token_id.to_owned(),
            api_token_secret: None,
            api_token_secret_file: None,
            node: node.to_owned(),
            template_vmid,
            storage: storage.to_owned(),
            pool: None,
            verify_ssl: true,
            ca_file: None,
            tls_fingerprint: None,
            full_clone: true,
            ct_template: None,
            bridge: default_bridge(),
            ci_user: default_ci_user(),
            nameserver: None,
            vmid_min: default_vmid_min(),
            vmid_max: default_vmid_max(),
            clone_timeout_secs: default_clone_timeout(),
            task_timeout_secs: default_task_timeout(),
            network_timeout_secs: default_network_timeout(),
            poll_interval_ms: default_poll_interval(),
        }
    }

    /// Checks every value that can be checked without contacting the server.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_api_url(&self.api_url)?;
        validate_token_id(&self.api_token_id)?;
        if let Some(s) = &self.api_token_secret
            && s.expose().trim().is_empty()
        {
            return Err(ConfigError::new("api_token_secret", "must not be empty"));
        }
        check_regex("node", &self.node, NODE_RE, "a Proxmox node name like \"pve1\"")?;
        if !(100..=999_999_999).contains(&self.template_vmid) {
            return Err(ConfigError::new(
                "template_vmid",
                format!("must be a VMID between 100 and 999999999 (got {})", self.template_vmid),
            ));
        }
        check_regex("storage", &self.storage, STORAGE_RE, "a storage ID like \"local-lvm\"")?;
        if let Some(pool) = &self.pool {
            check_regex(
                "pool",
                pool,
                POOL_RE,
                "a pool ID like \"berth\" (letters, digits, '.', '-', '_', '/')",
            )?;
        }
        if let Some(fp) = &self.tls_fingerprint {
            parse_fingerprints(fp).map_err(|m| ConfigError::new("tls_fingerprint", m))?;
        }
        if let Some(ca) = &self.ca_file
            && ca.as_os_str().is_empty()
        {
            return Err(ConfigError::new("ca_file", "must be a path to a PEM file"));
        }
        if let Some(t) = &self.ct_template {
            validate_ct_template(t).map_err(|m| ConfigError::new("ct_template", m))?;
        }
        check_regex("bridge", &self.bridge, BRIDGE_RE, "a bridge name like \"vmbr0\"")?;
        check_regex("ci_user", &self.ci_user, USER_RE, "a Unix user name like \"berth\"")?;
        if let Some(ns) = &self.nameserver {
            parse_nameservers(ns).map_err(|m| ConfigError::new("nameserver", m))?;
        }
        self.validate_numbers()
    }

    fn validate_numbers(&self) -> Result<(), ConfigError> {
        if self.vmid_min < 100 {
            return Err(ConfigError::new(
                "vmid_min",
                format!("must be at least 100 (got {})", self.vmid_min),
            ));
        }
        if self.vmid_max > 999_999_999 {
            return Err(ConfigError::new(
                "vmid_max",
                format!("must be at most 999999999 (got {})", self.vmid_max),
            ));
        }
        if self.vmid_min > self.vmid_max {
            return Err(ConfigError::new(
                "vmid_max",
                format!("must not be below vmid_min ({} > {})", self.vmid_min, self.vmid_max),
            ));
        }
        for (key, v) in [
            ("clone_timeout_secs", self.clone_timeout_secs),
            ("task_timeout_secs", self.task_timeout_secs),
            ("network_timeout_secs", self.network_timeout_secs),
            ("poll_interval_ms", self.poll_interval_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

const NODE_RE: &str = r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$";
const STORAGE_RE: &str = r"^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$";
const POOL_RE: &str = r"^[A-Za-z0-9.\-_]+(/[A-Za-z0-9.\-_]+)*$";
const BRIDGE_RE: &str = r"^[a-zA-Z][a-zA-Z0-9_.\-]{0,14}$";
const USER_RE: &str = r"^[a-z_][a-z0-9_\-]{0,31}$";
const TOKEN_RE: &str = r"^[^\s:/@!]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+$";

fn check_regex(key: &str, value: &str, re: &str, expected: &str) -> Result<(), ConfigError> {
    let ok = regex::Regex::new(re).map(|r| r.is_match(value)).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("expected {expected} (got {value:?})")))
    }
}

fn validate_api_url(s: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            "api_url",
            format!("{why}; expected the API base like \"https://pve.example.com:8006\" (got {s:?})"),
        )
    };
    let url = url::Url::parse(s).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(bad("must use https (Proxmox VE serves its API only over HTTPS)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.path().trim_end_matches('/').contains("/api2") {
        return Err(bad("must not include /api2/json (Berth appends it)"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(bad("must not carry credentials or a query string"));
    }
    Ok(())
}

fn validate_token_id(s: &str) -> Result<(), ConfigError> {
    check_regex(
        "api_token_id",
        s,
        TOKEN_RE,
        "an API token ID like \"berth@pve!agent\" (USER@REALM!TOKENID)",
    )
}

/// A container template volume ID: `STORAGE:vztmpl/FILE` (or any `STORAGE:PATH` volume).
pub(crate) fn validate_ct_template(s: &str) -> Result<(), String> {
    let ok = s.split_once(':').is_some_and(|(st, rest)| {
        regex::Regex::new(STORAGE_RE).is_ok_and(|r| r.is_match(st))
            && !rest.is_empty()
            && !rest.contains(char::is_whitespace)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a container template volume like \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\" (got {s:?})"
        ))
    }
}

/// Space- or comma-separated IP addresses.
pub(crate) fn parse_nameservers(s: &str) -> Result<Vec<IpAddr>, String> {
    let list: Vec<&str> = s.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    if list.is_empty() {
        return Err("expected one or more IP addresses separated by spaces (got an empty value)".into());
    }
    list.iter()
        .map(|p| {
            p.parse::<IpAddr>()
                .map_err(|_| format!("expected IP addresses separated by spaces (got {p:?})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ProxmoxConfig {
        let mut c = ProxmoxConfig::new(
            "https://pve.example.com:8006",
            "berth@pve!agent",
            "pve1",
            9000,
            "local-lvm",
        );
        c.api_token_secret = Some(Secret::new("s3cr3t"));
        c
    }

    #[test]
    fn defaults_are_safe() {
        let c = good();
        c.validate().unwrap();
        assert!(c.verify_ssl);
        assert!(c.full_clone);
        assert_eq!((c.vmid_min, c.vmid_max), (10_000, 99_999));
    }

    #[test]
    fn toml_with_unknown_key_is_refused() {
        let text = "api_url = \"https://h:8006\"\napi_token_id = \"a@pve!b\"\nnode = \"n\"\ntemplate_vmid = 100\nstorage = \"local\"\nverify = false\n";
        let err = serde_json::from_value::<ProxmoxConfig>(toml_like(text)).unwrap_err();
        assert!(err.to_string().contains("unknown field `verify`"), "{err}");
    }

    // A tiny `key = value` reader so the test does not need the toml crate.
    fn toml_like(text: &str) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for line in text.lines() {
            let (k, v) = line.split_once(" = ").unwrap();
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            m.insert(k.to_owned(), v);
        }
        serde_json::Value::Object(m)
    }

    #[test]
    fn each_bad_value_names_its_key() {
        type Mutation = Box<dyn Fn(&mut ProxmoxConfig)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|c| c.api_url = "not a url".into()), "api_url"),
            (Box::new(|c| c.api_url = "http://pve:8006".into()), "api_url"),
            (Box::new(|c| c.api_url = "https://pve:8006/api2/json".into()), "api_url"),
            (Box::new(|c| c.api_token_id = "root@pam".into()), "api_token_id"),
            (
                Box::new(|c| c.api_token_secret = Some(Secret::new(" "))),
                "api_token_secret",
            ),
            (Box::new(|c| c.node = "pve_1".into()), "node"),
            (Box::new(|c| c.template_vmid = 99), "template_vmid"),
            (Box::new(|c| c.storage = "x".into()), "storage"),
            (Box::new(|c| c.pool = Some("a b".into())), "pool"),
            (
                Box::new(|c| c.tls_fingerprint = Some("AB:CD".into())),
                "tls_fingerprint",
            ),
            (
                Box::new(|c| c.ct_template = Some("debian.tar.zst".into())),
                "ct_template",
            ),
            (Box::new(|c| c.bridge = "vmbr 0".into()), "bridge"),
            (Box::new(|c| c.ci_user = "Root".into()), "ci_user"),
            (Box::new(|c| c.nameserver = Some("1.1.1.1 dns".into())), "nameserver"),
            (Box::new(|c| c.vmid_min = 5), "vmid_min"),
            (Box::new(|c| c.vmid_max = 9_999), "vmid_max"),
            (Box::new(|c| c.poll_interval_ms = 0), "poll_interval_ms"),
        ];
        for (mutate, key) in cases {
            let mut c = good();
            mutate(&mut c);
            let err = c.validate().expect_err(key);
            assert_eq!(err.key, key, "{err}");
            assert!(
                err.message.contains("expected") || err.message.contains("must"),
                "{err}"
            );
        }
    }

    #[test]
    fn secret_never_in_debug() {
        assert!(!format!("{:?}", good()).contains("s3cr3t"));
    }

    #[test]
    fn nameservers_parse() {
        assert_eq!(parse_nameservers("1.1.1.1, 2606:4700::1111").unwrap().len(), 2);
        assert!(parse_nameservers("").is_err());
    }
}
