//! `server.toml`: where to listen, which database, how long leases and heartbeats last, the
//! admission thresholds, and where the first operator token is written. Every error names the
//! file, the place and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Default `127.0.0.1:8420`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub database: Database,
    #[serde(default)]
    pub agents: AgentPolicy,
    #[serde(default)]
    pub admission: Admission,
    #[serde(default)]
    pub api: ApiPolicy,
    #[serde(default)]
    pub ui: UiPolicy,
    #[serde(default)]
    pub tls: TlsPolicy,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub quotas: QuotaDefaults,
}

/// What every account may hold unless an operator gave it other numbers
/// (`PUT /accounts/{id}/quota`). A customer's instances count against the customer; instances
/// a provider places on its own agents, against the provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaDefaults {
    /// Instances not terminated.
    pub instances: i64,
    /// Instances recorded but not provisioned (`"provision": false` orders).
    pub pending_instances: i64,
    /// Offerings not withdrawn, per provider.
    pub offerings: i64,
    /// API tokens live (neither revoked nor expired), per account (and for operators together).
    pub tokens: i64,
}

impl Default for QuotaDefaults {
    fn default() -> Self {
        QuotaDefaults {
            instances: 100,
            pending_instances: 20,
            offerings: 100,
            tokens: 20,
        }
    }
}

/// What one client may hold or send: connections and how long they may dawdle, request rates,
/// and how much each account may own. Every bound refuses with a problem document naming it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections at most (also held under the process's file limit). At the cap, a new
    /// connection closes the longest-idle one that has no request in flight, so idle sockets
    /// never lock others out.
    pub max_connections: usize,
    /// A request head (and the next one on a kept-alive connection) must arrive within this.
    pub header_timeout_seconds: u64,
    /// A request body must arrive whole within this of its head.
    pub body_timeout_seconds: u64,
    /// A response other than an event stream must be sent within this.
    pub response_timeout_seconds: u64,
    /// An event stream (`/operations/{id}/events`) ends after this; clients resume with
    /// `Last-Event-ID`.
    pub stream_max_seconds: u64,
    /// Requests per second from one client address (behind `api.trusted_proxies`: the address
    /// they forwarded for), and how many may come at once.
    pub address_rate: u32,
    pub address_burst: u32,
    /// Requests per second with one credential (API token, session, agent key), and how many
    /// may come at once.
    pub credential_rate: u32,
    pub credential_burst: u32,
    /// Addresses and credentials tracked at most (each table).
    pub rate_limit_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            response_timeout_seconds: 120,
            stream_max_seconds: 900,
            address_rate: 200,
            address_burst: 1000,
            credential_rate: 50,
            credential_burst: 500,
            rate_limit_keys: 100_000,
        }
    }
}

/// HTTPS for the API and the dashboard.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsPolicy {
    /// The certificate chain (PEM, leaf first). Reloaded with the key on SIGHUP.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (behind a proxy that terminates
    /// TLS). Without it, such an address needs `cert_file` and `key_file`.
    pub allow_plaintext: bool,
}

/// The dashboard's browser sessions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiPolicy {
    /// How long a sign-in lasts.
    pub session_ttl_seconds: u64,
    /// Mark the session cookie `Secure` (always, behind TLS). Requests that arrive with
    /// `X-Forwarded-Proto: https` get it regardless.
    pub secure_cookie: bool,
}

impl Default for UiPolicy {
    fn default() -> Self {
        UiPolicy {
            session_ttl_seconds: 12 * 3600,
            secure_cookie: false,
        }
    }
}

/// Exactly one of `sqlite` (a file path) or `postgres` (a URL, or `postgres_url_env`: the
/// name of an environment variable holding it, so the password stays out of the file).
#[derive(Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Database {
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    #[serde(default)]
    pub postgres: Option<String>,
    #[serde(default)]
    pub postgres_url_env: Option<String>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("sqlite", &self.sqlite)
            .field("postgres", &self.postgres.as_ref().map(|_| "<redacted>"))
            .field("postgres_url_env", &self.postgres_url_env)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentPolicy {
    /// An agent whose last heartbeat is older counts as gone (discovery, admission).
    pub heartbeat_ttl_seconds: u64,
    /// How long a claim lasts unless renewed.
    pub lease_ttl_seconds: u64,
    /// Allowed difference between an agent's signature time and the server clock.
    pub max_clock_skew_seconds: u64,
    /// The longest a claim long-poll may wait.
    pub max_claim_wait_seconds: u64,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        AgentPolicy {
            heartbeat_ttl_seconds: 90,
            lease_ttl_seconds: 60,
            max_clock_skew_seconds: 300,
            max_claim_wait_seconds: 60,
        }
    }
}

/// Usage (percent of the reported totals) above which a host takes no new work, as in the
/// resource-advertisement seed: an offering is orderable only where it fits under these.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admission {
    pub cores_percent: u8,
    pub memory_percent: u8,
    pub disk_percent: u8,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            cores_percent: 90,
            memory_percent: 85,
            disk_percent: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiPolicy {
    pub body_limit_bytes: usize,
    /// Where the first operator token is written (mode 0600) when the database has none.
    pub operator_token_file: Option<PathBuf>,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the client in the logs.
    pub trusted_proxies: Vec<String>,
}

impl Default for ApiPolicy {
    fn default() -> Self {
        ApiPolicy {
            body_limit_bytes: 64 * 1024,
            operator_token_file: None,
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8420))
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        ServerConfig::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<ServerConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: file.to_owned(),
            message,
        };
        let cfg: ServerConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("{line}:{col}: ")
            });
            err(format!("{}{}", at.unwrap_or_default(), e.message()))
        })?;
        cfg.validate().map_err(|(key, why)| err(format!("{key}: {why}")))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let d = &self.database;
        let pg = d.postgres.is_some() || d.postgres_url_env.is_some();
        if d.sqlite.is_some() == pg || (d.postgres.is_some() && d.postgres_url_env.is_some()) {
            return Err((
                "database",
                "set exactly one of `sqlite` (a file path), `postgres` (a URL) or `postgres_url_env`".into(),
            ));
        }
        let a = &self.agents;
        for (key, v, lo, hi) in [
            ("agents.heartbeat_ttl_seconds", a.heartbeat_ttl_seconds, 5, 86_400),
            ("agents.lease_ttl_seconds", a.lease_ttl_seconds, 5, 3_600),
            ("agents.max_clock_skew_seconds", a.max_clock_skew_seconds, 5, 3_600),
            ("agents.max_claim_wait_seconds", a.max_claim_wait_seconds, 1, 300),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err((key, format!("must be between {lo} and {hi} (got {v})")));
            }
        }
        for (key, v) in [
            ("admission.cores_percent", self.admission.cores_percent),
            ("admission.memory_percent", self.admission.memory_percent),
            ("admission.disk_percent", self.admission.disk_percent),
        ] {
            if !(1..=100).contains(&v) {
                return Err((key, format!("must be a percentage from 1 to 100 (got {v})")));
            }
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            let missing = if t.cert_file.is_none() {
                "tls.cert_file"
            } else {
                "tls.key_file"
            };
            return Err((
                missing,
                "set both `cert_file` and `key_file` (PEM) to serve HTTPS".into(),
            ));
        }
        if t.cert_file.is_none() && !t.allow_plaintext && !self.listen.ip().is_loopback() {
            return Err((
                "listen",
                format!(
                    "{} is reachable from other hosts, and without TLS API tokens and sessions would cross the \
                     network in clear: set [tls] cert_file and key_file, or allow_plaintext = true behind a proxy \
                     that terminates TLS",
                    self.listen
                ),
            ));
        }
        if let Err(e) = crate::access::TrustedProxies::parse(&self.api.trusted_proxies) {
            return Err(("api.trusted_proxies", e));
        }
        let l = &self.limits;
        for (key, v, lo, hi) in [
            ("limits.max_connections", l.max_connections as u64, 16, 1_000_000),
            ("limits.header_timeout_seconds", l.header_timeout_seconds, 1, 300),
            ("limits.body_timeout_seconds", l.body_timeout_seconds, 1, 3_600),
            ("limits.response_timeout_seconds", l.response_timeout_seconds, 5, 3_600),
            ("limits.stream_max_seconds", l.stream_max_seconds, 1, 86_400),
            ("limits.address_rate", l.address_rate.into(), 1, 1_000_000),
            ("limits.address_burst", l.address_burst.into(), 1, 1_000_000),
            ("limits.credential_rate", l.credential_rate.into(), 1, 1_000_000),
            ("limits.credential_burst", l.credential_burst.into(), 1, 1_000_000),
            ("limits.rate_limit_keys", l.rate_limit_keys as u64, 100, 10_000_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err((key, format!("must be between {lo} and {hi} (got {v})")));
            }
        }
        let q = &self.quotas;
        for (key, v) in [
            ("quotas.instances", q.instances),
            ("quotas.pending_instances", q.pending_instances),
            ("quotas.offerings", q.offerings),
            ("quotas.tokens", q.tokens),
        ] {
            if !(0..=1_000_000).contains(&v) {
                return Err((key, format!("must be between 0 and 1000000 (got {v})")));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.api.body_limit_bytes) {
            return Err((
                "api.body_limit_bytes",
                format!("must be between 1 KiB and 16 MiB (got {})", self.api.body_limit_bytes),
            ));
        }
        Ok(())
    }

    /// The PostgreSQL URL, from the file or the environment variable it names.
    pub fn postgres_url(&self) -> Result<Option<String>, String> {
        if let Some(u) = &self.database.postgres {
            return Ok(Some(u.clone()));
        }
        match &self.database.postgres_url_env {
            Some(var) => std::env::var(var)
                .map(Some)
                .map_err(|_| format!("database.postgres_url_env: the environment variable {var} is not set")),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_full_configs_parse() {
        let c = ServerConfig::parse("[database]\nsqlite = \"/tmp/b.db\"\n", "s.toml").unwrap();
        assert_eq!(c.listen.port(), 8420);
        assert_eq!(c.agents.lease_ttl_seconds, 60);
        let c = ServerConfig::parse(
            "listen = \"0.0.0.0:9000\"\n[database]\npostgres = \"postgres://x\"\n[agents]\nlease_ttl_seconds = 30\n[admission]\ndisk_percent = 80\n[tls]\nallow_plaintext = true\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(
            (c.listen.port(), c.agents.lease_ttl_seconds, c.admission.disk_percent),
            (9000, 30, 80)
        );
        assert!(!format!("{c:?}").contains("postgres://x"));
    }

    #[test]
    fn errors_name_file_place_and_key() {
        let e = ServerConfig::parse("[database]\nsqlite = \"a\"\n[agents]\nlease_ttl = 3\n", "s.toml").unwrap_err();
        assert!(
            e.to_string().starts_with("s.toml: 4:1: unknown field `lease_ttl`"),
            "{e}"
        );
        let e = ServerConfig::parse("[database]\nsqlite = \"a\"\npostgres = \"b\"\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("database: set exactly one"), "{e}");
        let e = ServerConfig::parse(
            "[database]\nsqlite = \"a\"\n[agents]\nlease_ttl_seconds = 1\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("agents.lease_ttl_seconds: must be between 5"),
            "{e}"
        );
        let e =
            ServerConfig::parse("[database]\nsqlite = \"a\"\n[admission]\ncores_percent = 0\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("admission.cores_percent"), "{e}");
        let e = ServerConfig::parse("listen = \"nope\"\n[database]\nsqlite = \"a\"\n", "s.toml").unwrap_err();
        assert!(e.to_string().starts_with("s.toml: 1:10: "), "{e}");
    }
}
