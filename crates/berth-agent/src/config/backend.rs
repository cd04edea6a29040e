//! `[provisioner]`: one backend (the seed's shape: `type` and that type's table), or several,
//! each under its own name (`[provisioner.backends.NAME]` with `type`, its table, and optionally
//! its own rate limit, circuit breaker, concurrency and capacity). Errors name the key where it
//! is in the file: `provisioner.proxmox.node`, or `provisioner.backends.pve2.proxmox.node`.

use std::fmt;
use std::path::Path;

use berth_core::Secret;
#[cfg(feature = "libvirt")]
use berth_libvirt::LibvirtConfig;
use berth_manual::ManualConfig;
use berth_multipass::MultipassConfig;
use berth_provider_grpc::RemoteConfig;
use berth_proxmox::ProxmoxConfig;
use berth_script::ScriptConfig;
use serde::Deserialize;

use super::agent::{CapacitySection, check_capacity};
use super::locate::{ConfigFileError, Locator, is_secret_key};
use crate::guard::{BreakerConfig, RateLimit};

/// Environment variable that may hold the Proxmox API token secret.
pub const PROXMOX_SECRET_ENV: &str = "BERTH_PROXMOX_TOKEN_SECRET";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Proxmox,
    Script,
    Manual,
    Multipass,
    Libvirt,
    Remote,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Proxmox => "proxmox",
            BackendKind::Script => "script",
            BackendKind::Manual => "manual",
            BackendKind::Multipass => "multipass",
            BackendKind::Libvirt => "libvirt",
            BackendKind::Remote => "remote",
        }
    }
}

/// A backend's own table, validated (Proxmox with its token secret resolved, relative paths
/// resolved where the backend resolves them at validation).
#[derive(Debug, Clone)]
pub enum BackendSettings {
    Proxmox(ProxmoxConfig),
    Script(ScriptConfig),
    Multipass(MultipassConfig),
    Manual(ManualConfig),
    #[cfg(feature = "libvirt")]
    Libvirt(LibvirtConfig),
    /// A provider served over gRPC (`berth provider serve`, or one built on the SDK).
    Remote(RemoteConfig),
}

/// One configured backend.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Unique in the file: the backend's kind for the single-backend form, else the table's name.
    pub name: String,
    pub settings: BackendSettings,
    /// Client-side limit on calls to the backend's endpoint.
    pub rate_limit: RateLimit,
    pub circuit_breaker: BreakerConfig,
    /// Operations at once on this backend; `None`: `agent.concurrency`.
    pub concurrency: Option<usize>,
    /// This backend's host (totals, overcommit, thresholds); `None`: the agent's `[capacity]`.
    pub capacity: Option<CapacitySection>,
    /// Where its keys are in the file (`provisioner` or `provisioner.backends.NAME`).
    pub key_prefix: String,
}

impl BackendConfig {
    pub fn kind(&self) -> BackendKind {
        match &self.settings {
            BackendSettings::Proxmox(_) => BackendKind::Proxmox,
            BackendSettings::Script(_) => BackendKind::Script,
            BackendSettings::Multipass(_) => BackendKind::Multipass,
            BackendSettings::Manual(_) => BackendKind::Manual,
            #[cfg(feature = "libvirt")]
            BackendSettings::Libvirt(_) => BackendKind::Libvirt,
            BackendSettings::Remote(_) => BackendKind::Remote,
        }
    }
}

/// `[provisioner]`, and each `[provisioner.backends.NAME]` (which may not nest `backends`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    #[serde(rename = "type")]
    kind: Option<BackendKind>,
    rate_limit: Option<RateLimit>,
    circuit_breaker: Option<BreakerConfig>,
    concurrency: Option<usize>,
    capacity: Option<CapacitySection>,
    proxmox: Option<ProxmoxConfig>,
    script: Option<ScriptConfig>,
    multipass: Option<MultipassConfig>,
    manual: Option<ManualConfig>,
    remote: Option<RemoteConfig>,
    #[cfg(feature = "libvirt")]
    libvirt: Option<LibvirtConfig>,
    /// Without the libvirt feature the table is still recognised, so the error is about the
    /// build, not about an unknown key.
    #[cfg(not(feature = "libvirt"))]
    #[allow(dead_code)]
    libvirt: Option<toml::Value>,
    #[serde(default, deserialize_with = "in_file_order")]
    backends: Option<Vec<(String, RawBackend)>>,
}

/// The named backends in the order the file gives them (the first is the default for work
/// that names no template).
fn in_file_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<(String, RawBackend)>>, D::Error> {
    struct Ordered;
    impl<'de> serde::de::Visitor<'de> for Ordered {
        type Value = Vec<(String, RawBackend)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of backends, one table per name")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = m.next_entry::<String, RawBackend>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ordered).map(Some)
}

/// Where relative paths resolve, how secrets are found, and how errors are placed.
pub(crate) struct Ctx<'a> {
    pub path: &'a Path,
    pub base: &'a Path,
    pub loc: &'a Locator<'a>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Every backend `[provisioner]` configures, validated, in file order.
pub(crate) fn settle_backends(raw: RawBackend, cx: &Ctx<'_>) -> Result<Vec<BackendConfig>, ConfigFileError> {
    let Some(named) = raw.backends else {
        let name = raw.kind.map(BackendKind::as_str).unwrap_or("").to_owned();
        return Ok(vec![settle_one(name, "provisioner".into(), raw, cx)?]);
    };
    let stray = [
        ("type", raw.kind.is_some()),
        ("rate_limit", raw.rate_limit.is_some()),
        ("circuit_breaker", raw.circuit_breaker.is_some()),
        ("concurrency", raw.concurrency.is_some()),
        ("capacity", raw.capacity.is_some()),
        ("proxmox", raw.proxmox.is_some()),
        ("script", raw.script.is_some()),
        ("multipass", raw.multipass.is_some()),
        ("manual", raw.manual.is_some()),
        ("libvirt", raw.libvirt.is_some()),
        ("remote", raw.remote.is_some()),
    ];
    if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
        return Err(cx.loc.at_key(
            &format!("provisioner.{key}"),
            "with [provisioner.backends.NAME] tables, each backend carries its own settings; move this key into one of them",
        ));
    }
    if named.is_empty() {
        return Err(cx.loc.at_key(
            "provisioner.backends",
            "expected at least one [provisioner.backends.NAME] table",
        ));
    }
    let mut out: Vec<BackendConfig> = Vec::with_capacity(named.len());
    for (name, b) in named {
        let prefix = format!("provisioner.backends.{name}");
        if !valid_name(&name) {
            return Err(cx.loc.at_key(
                &prefix,
                &format!("backend name {name:?}: expected 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"),
            ));
        }
        if b.backends.is_some() {
            return Err(cx.loc.at_key(
                &format!("{prefix}.backends"),
                "backends do not nest; name each backend directly under [provisioner.backends]",
            ));
        }
        out.push(settle_one(name, prefix, b, cx)?);
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn settle_one(name: String, prefix: String, p: RawBackend, cx: &Ctx<'_>) -> Result<BackendConfig, ConfigFileError> {
    let loc = cx.loc;
    let kind = p.kind.ok_or_else(|| {
        loc.at_key(
            &format!("{prefix}.type"),
            "missing required key 'type'; expected \"proxmox\", \"script\", \"multipass\", \"manual\", \"libvirt\" or \"remote\"",
        )
    })?;
    let rate_limit = p.rate_limit.unwrap_or_default();
    let circuit_breaker = p.circuit_breaker.unwrap_or_default();
    check(rate_limit.validate(), &prefix, "rate_limit", |e| e, loc)?;
    check(circuit_breaker.validate(), &prefix, "circuit_breaker", |e| e, loc)?;
    if let Some(n) = p.concurrency
        && !(1..=1024).contains(&n)
    {
        return Err(loc.at_key(
            &format!("{prefix}.concurrency"),
            &format!("expected a number from 1 to 1024 (got {n})"),
        ));
    }
    if let Some(c) = &p.capacity {
        check_capacity(&format!("{prefix}.capacity"), c).map_err(|(key, message)| loc.at_key(&key, &message))?;
    }
    let settings = match kind {
        BackendKind::Proxmox => {
            let mut px = table(
                p.proxmox,
                &prefix,
                "proxmox",
                "api_url, api_token_id, node, template_vmid, storage",
                loc,
            )?;
            resolve_proxmox_secret(&mut px, &prefix, cx)?;
            check(px.validate(), &prefix, "proxmox", |e| (e.key, e.message), loc)?;
            BackendSettings::Proxmox(px)
        }
        BackendKind::Script => {
            let sc = table(
                p.script,
                &prefix,
                "script",
                "command, or provision/terminate/start/stop/status/list",
                loc,
            )?;
            check(sc.validate(cx.base), &prefix, "script", |e| (e.key, e.message), loc)?;
            BackendSettings::Script(sc)
        }
        BackendKind::Manual => {
            let mc = p.manual.unwrap_or_default();
            check(mc.validate(cx.base), &prefix, "manual", |e| (e.key, e.message), loc)?;
            BackendSettings::Manual(mc)
        }
        BackendKind::Multipass => {
            let mc = p.multipass.unwrap_or_default();
            check(mc.validate(cx.base), &prefix, "multipass", |e| (e.key, e.message), loc)?;
            BackendSettings::Multipass(mc)
        }
        BackendKind::Remote => {
            let rc = table(p.remote, &prefix, "remote", "endpoint, and ca_file or token_file", loc)?;
            check(rc.validate(cx.base), &prefix, "remote", |e| (e.key, e.message), loc)?;
            BackendSettings::Remote(rc)
        }
        #[cfg(feature = "libvirt")]
        BackendKind::Libvirt => {
            let mut lc = table(p.libvirt, &prefix, "libvirt", "images_dir or template_pool", loc)?;
            check(lc.validate(cx.base), &prefix, "libvirt", |e| (e.key, e.message), loc)?;
            BackendSettings::Libvirt(lc)
        }
        #[cfg(not(feature = "libvirt"))]
        BackendKind::Libvirt => {
            return Err(loc.at_key(
                &format!("{prefix}.type"),
                "backend \"libvirt\" is not in this build (built without the `libvirt` feature: run it with `berth agent`, or build berth-agent with `--features libvirt`); expected \"proxmox\", \"script\", \"multipass\", \"manual\" or \"remote\"",
            ));
        }
    };
    Ok(BackendConfig {
        name,
        settings,
        rate_limit,
        circuit_breaker,
        concurrency: p.concurrency,
        capacity: p.capacity,
        key_prefix: prefix,
    })
}

/// The backend's own table, or an error pointing at `type` that says what the table needs.
fn table<T>(t: Option<T>, prefix: &str, name: &str, needs: &str, loc: &Locator) -> Result<T, ConfigFileError> {
    t.ok_or_else(|| {
        loc.at_key(
            &format!("{prefix}.type"),
            &format!("type = \"{name}\" needs a [{prefix}.{name}] table ({needs})"),
        )
    })
}

/// A backend's own validation error, placed at its key in the file (secret values not shown).
fn check<E>(
    r: Result<(), E>,
    prefix: &str,
    table: &str,
    parts: impl FnOnce(E) -> (String, String),
    loc: &Locator,
) -> Result<(), ConfigFileError> {
    r.map_err(|e| {
        let (key, message) = parts(e);
        let msg = if is_secret_key(&key) {
            "invalid value (not shown: it is a secret)".to_owned()
        } else {
            message
        };
        loc.at_key(&format!("{prefix}.{table}.{key}"), &msg)
    })
}

fn resolve_proxmox_secret(px: &mut ProxmoxConfig, prefix: &str, cx: &Ctx<'_>) -> Result<(), ConfigFileError> {
    let key = format!("{prefix}.proxmox.api_token_secret");
    let file_key = format!("{prefix}.proxmox.api_token_secret_file");
    // Where the secret came from: its errors point there (a key in the file, or the variable).
    let mut source = key.clone();
    let secret = match (&px.api_token_secret, &px.api_token_secret_file) {
        (Some(_), Some(_)) => {
            return Err(cx.loc.at_key(
                &file_key,
                "give either api_token_secret or api_token_secret_file, not both",
            ));
        }
        (Some(s), None) => s.clone(),
        (None, Some(file)) => {
            let file = if file.is_relative() {
                cx.base.join(file)
            } else {
                file.clone()
            };
            let text = std::fs::read_to_string(&file).map_err(|e| {
                cx.loc.at_key(
                    &file_key,
                    &format!("cannot read the token secret file {}: {e}", file.display()),
                )
            })?;
            crate::fsutil::warn_if_readable_by_others(&file, "secret file");
            source = file_key;
            Secret::new(text.trim_end_matches(['\n', '\r']))
        }
        (None, None) => match (cx.env)(PROXMOX_SECRET_ENV) {
            Some(v) => {
                source = format!("environment variable {PROXMOX_SECRET_ENV}");
                Secret::new(v)
            }
            None => {
                return Err(cx.loc.at_key(
                    &format!("{prefix}.proxmox"),
                    &format!("missing the API token secret: set api_token_secret, api_token_secret_file, or the {PROXMOX_SECRET_ENV} environment variable"),
                ));
            }
        },
    };
    let problem = if secret.is_empty() {
        Some("the API token secret is empty")
    } else if looks_like_placeholder(secret.expose()) {
        Some(
            "the API token secret is still a placeholder; create a token with `pveum user token add` and use its secret",
        )
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(if source.starts_with("provisioner.") {
            cx.loc.at_key(&source, problem)
        } else {
            ConfigFileError {
                path: cx.path.to_owned(),
                line: None,
                column: None,
                key: None,
                message: format!("{source}: {problem}"),
            }
        });
    }
    resolve_ca_file(px, prefix, cx)?;
    px.api_token_secret = Some(secret);
    Ok(())
}

/// A relative `ca_file` is relative to the configuration file, like every other path in it; it
/// must be readable now, so the error can name its line.
fn resolve_ca_file(px: &mut ProxmoxConfig, prefix: &str, cx: &Ctx<'_>) -> Result<(), ConfigFileError> {
    let Some(ca) = &px.ca_file else {
        return Ok(());
    };
    let ca = if ca.is_relative() { cx.base.join(ca) } else { ca.clone() };
    std::fs::metadata(&ca).map_err(|e| {
        cx.loc.at_key(
            &format!("{prefix}.proxmox.ca_file"),
            &format!("cannot read the CA file {}: {e}", ca.display()),
        )
    })?;
    px.ca_file = Some(ca);
    Ok(())
}

fn looks_like_placeholder(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.contains("xxxx")
        || lower.starts_with('<')
        || ["changeme", "secret", "token", "todo"].contains(&lower.as_str())
}
