//! The agent's own tables in `berth.toml` (the shape of the provisioning-agent seed, extended):
//! `[api]` (where the control plane is, the signing key), `[agent]` (name, state directory,
//! metrics), `[polling]`, `[capacity]` (totals, overcommit, thresholds), `[post_provision]` and
//! `[reconcile]`. Absent tables take their defaults; only `[api]` is needed to run the agent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The control plane's base URL, e.g. `https://berth.example.com`.
    pub endpoint: String,
    /// The agent's Ed25519 private key (hex of the 32-byte seed, mode 0600); `berth agent enroll`
    /// creates it when absent. Default: `agent.key` in the state directory.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A CA certificate bundle (PEM) that signed the control plane's certificate, besides the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The control plane certificate's SHA-256 (`sha256:AB:CD:…`; several, comma-separated, for
    /// a rollover): trusted without a CA. `berth server` prints it.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// The name the agent enrolls under (default: the host name).
    pub name: Option<String>,
    /// Where the enrollment record and the journal live (relative to this file).
    pub state_dir: PathBuf,
    /// Prometheus metrics on this local address (`/metrics`), by default `127.0.0.1:9464`;
    /// `"off"` serves none.
    #[serde(deserialize_with = "address_or_off")]
    pub metrics_listen: MetricsListen,
    /// Operations under way at once on this host, over all backends; each backend's own
    /// `concurrency` (default: this) bounds it further.
    pub concurrency: usize,
    /// Seconds a `stop` waits for a graceful shutdown before powering off.
    pub stop_timeout_seconds: u64,
    /// Attempts for an operation whose backend error is retryable (timeouts, unavailable).
    pub attempts: u32,
    /// On SIGTERM, how long running work may go on before it is checkpointed and released.
    pub shutdown_grace_seconds: u64,
}

/// Where the agent's metrics are served unless the file says otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// `agent.metrics_listen`: left out, an address the file names, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsListen {
    /// Not in the file: `127.0.0.1:9464`, and an address already taken only costs the metrics.
    #[default]
    Default,
    /// Named in the file: an address that cannot be used stops the agent from starting.
    At(SocketAddr),
    Off,
}

impl MetricsListen {
    pub fn address(self) -> Option<SocketAddr> {
        match self {
            MetricsListen::Default => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))),
            MetricsListen::At(a) => Some(a),
            MetricsListen::Off => None,
        }
    }
}

/// `"off"`, or a socket address.
fn address_or_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MetricsListen, D::Error> {
    let s = String::deserialize(d)?;
    if s == "off" {
        return Ok(MetricsListen::Off);
    }
    s.parse().map(MetricsListen::At).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected an address like 127.0.0.1:9464, or \"off\" (got {s:?})"
        ))
    })
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            name: None,
            state_dir: PathBuf::from("berth-agent-state"),
            metrics_listen: MetricsListen::Default,
            concurrency: 4,
            stop_timeout_seconds: 60,
            attempts: 3,
            shutdown_grace_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollingSection {
    /// How long one claim long-poll waits for work (the seed's polling interval). Work is picked
    /// up the moment it is queued, whatever this is.
    pub interval_seconds: u64,
    pub heartbeat_interval_seconds: u64,
    /// How often each backend's own checks (`validate`) run for the heartbeat's health.
    pub health_check_interval_seconds: u64,
    pub reconcile_interval_seconds: u64,
}

impl Default for PollingSection {
    fn default() -> Self {
        PollingSection {
            interval_seconds: 30,
            heartbeat_interval_seconds: 15,
            health_check_interval_seconds: 300,
            reconcile_interval_seconds: 60,
        }
    }
}

/// What the host offers. Totals not given are read from the backend (`capacity()`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacitySection {
    pub cores: Option<u64>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    pub cpu_overcommit: f64,
    pub memory_overcommit: f64,
    /// Percent of the (overcommitted) totals the agent lets allocations reach; beyond it the
    /// host reports no room and refuses new machines.
    pub cpu_threshold: u8,
    pub memory_threshold: u8,
    pub storage_threshold: u8,
}

impl Default for CapacitySection {
    fn default() -> Self {
        CapacitySection {
            cores: None,
            memory_mib: None,
            disk_gib: None,
            cpu_overcommit: 1.0,
            memory_overcommit: 1.0,
            cpu_threshold: 90,
            memory_threshold: 85,
            storage_threshold: 90,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostProvisionSection {
    /// Per command.
    pub timeout_seconds: u64,
    /// Bytes of each command's output kept on the operation (the end of it).
    pub output_tail_bytes: usize,
    /// Keep a VM whose post-provision command failed (for a look), instead of deleting it.
    pub keep_failed: bool,
}

impl Default for PostProvisionSection {
    fn default() -> Self {
        PostProvisionSection {
            timeout_seconds: 600,
            output_tail_bytes: 4096,
            keep_failed: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSection {
    /// Delete a quarantined orphan once its grace period is over. Off by default: orphans are
    /// stopped and reported, and an operator decides.
    pub delete_orphans: bool,
    pub orphan_grace_seconds: u64,
}

impl Default for ReconcileSection {
    fn default() -> Self {
        ReconcileSection {
            delete_orphans: false,
            orphan_grace_seconds: 86_400,
        }
    }
}

/// Everything `berth agent` needs beyond the backend, with paths resolved.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub endpoint: String,
    pub key_file: PathBuf,
    /// How the control plane's certificate is checked.
    pub tls: berth_tls::TlsOptions,
    pub agent: AgentSection,
    pub polling: PollingSection,
    pub capacity: CapacitySection,
    pub post_provision: PostProvisionSection,
    pub reconcile: ReconcileSection,
}

impl AgentSettings {
    /// Every table at its default, for `endpoint`, keeping state in `state_dir`.
    pub fn with_defaults(endpoint: &str, state_dir: &Path) -> AgentSettings {
        AgentSettings {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            key_file: state_dir.join("agent.key"),
            tls: berth_tls::TlsOptions::default(),
            agent: AgentSection {
                state_dir: state_dir.to_owned(),
                ..AgentSection::default()
            },
            polling: PollingSection::default(),
            capacity: CapacitySection::default(),
            post_provision: PostProvisionSection::default(),
            reconcile: ReconcileSection::default(),
        }
    }

    pub fn claim_wait(&self) -> Duration {
        Duration::from_secs(self.polling.interval_seconds)
    }
    pub fn journal_dir(&self) -> PathBuf {
        self.agent.state_dir.join("journal")
    }
}

pub(crate) struct RawAgentTables {
    pub api: Option<ApiSection>,
    pub agent: Option<AgentSection>,
    pub polling: Option<PollingSection>,
    pub capacity: Option<CapacitySection>,
    pub post_provision: Option<PostProvisionSection>,
    pub reconcile: Option<ReconcileSection>,
}

fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), (String, String)> {
    if v < lo || v > hi {
        Err((key.to_owned(), format!("expected a number from {lo} to {hi} (got {v})")))
    } else {
        Ok(())
    }
}

/// Thresholds and overcommit factors in range; keys start with `prefix` (`capacity`, or a
/// backend's own `provisioner.backends.NAME.capacity`).
pub(crate) fn check_capacity(prefix: &str, c: &CapacitySection) -> Result<(), (String, String)> {
    range(&format!("{prefix}.cpu_threshold"), c.cpu_threshold as u64, 1, 100)?;
    range(&format!("{prefix}.memory_threshold"), c.memory_threshold as u64, 1, 100)?;
    range(
        &format!("{prefix}.storage_threshold"),
        c.storage_threshold as u64,
        1,
        100,
    )?;
    for (key, v) in [
        ("cpu_overcommit", c.cpu_overcommit),
        ("memory_overcommit", c.memory_overcommit),
    ] {
        if !(v.is_finite() && (0.1..=64.0).contains(&v)) {
            return Err((
                format!("{prefix}.{key}"),
                format!("expected a factor from 0.1 to 64 (got {v})"),
            ));
        }
    }
    Ok(())
}

/// Checks ranges and resolves relative paths against `base`. `Err((key, message))`.
pub(crate) fn settle(raw: RawAgentTables, base: &Path) -> Result<Option<AgentSettings>, (String, String)> {
    let agent = raw.agent.unwrap_or_default();
    let polling = raw.polling.unwrap_or_default();
    let capacity = raw.capacity.unwrap_or_default();
    let post_provision = raw.post_provision.unwrap_or_default();
    let reconcile = raw.reconcile.unwrap_or_default();
    range("agent.concurrency", agent.concurrency as u64, 1, 1024)?;
    range("agent.stop_timeout_seconds", agent.stop_timeout_seconds, 1, 3600)?;
    range("agent.attempts", agent.attempts as u64, 1, 20)?;
    range("agent.shutdown_grace_seconds", agent.shutdown_grace_seconds, 0, 3600)?;
    range("polling.interval_seconds", polling.interval_seconds, 1, 300)?;
    range(
        "polling.heartbeat_interval_seconds",
        polling.heartbeat_interval_seconds,
        1,
        3600,
    )?;
    range(
        "polling.health_check_interval_seconds",
        polling.health_check_interval_seconds,
        1,
        86_400,
    )?;
    range(
        "polling.reconcile_interval_seconds",
        polling.reconcile_interval_seconds,
        1,
        86_400,
    )?;
    check_capacity("capacity", &capacity)?;
    range(
        "post_provision.timeout_seconds",
        post_provision.timeout_seconds,
        1,
        86_400,
    )?;
    range(
        "post_provision.output_tail_bytes",
        post_provision.output_tail_bytes as u64,
        64,
        1 << 20,
    )?;
    range(
        "reconcile.orphan_grace_seconds",
        reconcile.orphan_grace_seconds,
        0,
        365 * 86_400,
    )?;
    if let Some(name) = &agent.name
        && (name.trim().is_empty() || name.len() > 128)
    {
        return Err(("agent.name".into(), "expected 1 to 128 characters".into()));
    }
    let Some(api) = raw.api else {
        return Ok(None);
    };
    let url = url::Url::parse(&api.endpoint)
        .map_err(|e| ("api.endpoint".to_owned(), format!("expected an http(s) URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err((
            "api.endpoint".into(),
            format!(
                "expected an http:// or https:// URL with a host (got {:?})",
                api.endpoint
            ),
        ));
    }
    let resolve = |p: &Path| if p.is_relative() { base.join(p) } else { p.to_owned() };
    let agent = AgentSection {
        state_dir: resolve(&agent.state_dir),
        ..agent
    };
    let key_file = match &api.key_file {
        Some(k) => resolve(k),
        None => agent.state_dir.join("agent.key"),
    };
    let ca = api.ca_file.as_deref().map(resolve);
    let tls = berth_tls::TlsOptions {
        ca_certs: berth_tls::TlsOptions::from_files(ca.as_deref(), None)
            .map_err(|e| ("api.ca_file".to_owned(), e))?
            .ca_certs,
        fingerprints: berth_tls::TlsOptions::from_files(None, api.tls_fingerprint.as_deref())
            .map_err(|e| ("api.tls_fingerprint".to_owned(), e))?
            .fingerprints,
        ..berth_tls::TlsOptions::default()
    };
    Ok(Some(AgentSettings {
        endpoint: api.endpoint.trim_end_matches('/').to_owned(),
        key_file,
        tls,
        agent,
        polling,
        capacity,
        post_provision,
        reconcile,
    }))
}
