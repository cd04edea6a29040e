//! Errors of the PVE client: what failed (with method, path, status and PVE's own text), the
//! classifiers the retry and provider logic rely on, and the mapping to `ProviderError`.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use berth_core::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The server answered with an error status. `message` is PVE's reason phrase (or the body
    /// `message` when the phrase was the standard one); `errors` is the per-parameter map.
    #[error("{method} {path}: HTTP {status} {message}{}", fmt_errors(errors))]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
        errors: BTreeMap<String, String>,
    },
    /// The TLS handshake failed verification (fingerprint mismatch, unknown CA, …).
    #[error("{method} {path}: {message}")]
    Tls {
        method: &'static str,
        path: String,
        message: String,
    },
    /// No HTTP answer: connection refused, reset, timed out.
    #[error("{method} {path}: cannot reach the Proxmox API: {message}")]
    Transport {
        method: &'static str,
        path: String,
        message: String,
    },
    /// A 2xx answer whose body is not what the endpoint returns.
    #[error("{method} {path}: unexpected response: {message}")]
    Decode {
        method: &'static str,
        path: String,
        message: String,
    },
    /// A task ended with an error exit status.
    #[error("task {upid} failed: {exitstatus}{}", fmt_tail(log_tail))]
    TaskFailed {
        upid: String,
        exitstatus: String,
        log_tail: Vec<String>,
    },
    /// Waiting for something took longer than allowed.
    #[error("timed out after {}s waiting for {what}", after.as_secs())]
    Timeout { what: String, after: Duration },
    /// A string the server returned as a UPID does not parse as one.
    #[error("invalid task id (UPID) {upid:?}")]
    InvalidUpid { upid: String },
    /// The HTTP client could not be built (bad TLS material).
    #[error("cannot set up the Proxmox API client: {message}")]
    Setup { message: String },
}

/// `Configuration file 'nodes/<node>/qemu-server/<vmid>.conf' does not exist` (and the `lxc` form).
static GUEST_CONFIG_MISSING: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"(?i)\bConfiguration file '[^']*' does not exist").expect("valid regex"));

/// `VM 100 is not running` (`assert_agent_available`) / `VM 100 not running` (reset).
static GUEST_NOT_RUNNING: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"\b(?:VM|CT) \d+ (?:is )?not running").expect("valid regex"));

/// `VM is locked (clone)` / `CT is locked (disk)`.
static LOCKED_BY: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"(?:VM|CT) is locked \(([^)]+)\)").expect("valid regex"));

fn fmt_errors(errors: &BTreeMap<String, String>) -> String {
    errors.iter().map(|(k, v)| format!("; {k}: {v}")).collect()
}

fn fmt_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (task log: {})", tail.join(" | "))
    }
}

impl PveError {
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Every piece of PVE text this error carries (message, parameter errors, task exit status),
    /// for the text-based classifiers below.
    fn texts(&self) -> Vec<&str> {
        match self {
            PveError::Api { message, errors, .. } => std::iter::once(message.as_str())
                .chain(errors.values().map(String::as_str))
                .collect(),
            PveError::TaskFailed { exitstatus, .. } => vec![exitstatus.as_str()],
            _ => Vec::new(),
        }
    }

    fn mentions(&self, needle: &str) -> bool {
        let needle = needle.to_ascii_lowercase();
        self.texts().iter().any(|t| t.to_ascii_lowercase().contains(&needle))
    }

    /// PVE's "this guest does not exist": HTTP 500 with `Configuration file '…' does not exist`
    /// or `unable to find configuration file for VM …`. Nothing else (no other 5xx, and no other
    /// object that "does not exist", such as a storage or pool) means the guest is absent.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(500)
            && self.texts().iter().any(|t| {
                GUEST_CONFIG_MISSING.is_match(t)
                    || t.to_ascii_lowercase()
                        .contains("unable to find configuration file for vm")
            })
    }

    /// HTTP 500 naming something that does not exist (a guest, storage, pool, volume, snapshot):
    /// an answer, so sending the same read again cannot help.
    pub fn is_missing_object(&self) -> bool {
        self.status() == Some(500) && (self.mentions("does not exist") || self.mentions("No such file"))
    }

    /// `VM 2004 already exists`, `config file already exists`, `CT 100 already exists on node`.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, PveError::Api { .. }) && self.mentions("already exists")
    }

    /// A lock could not be taken in time (`can't lock file … - got timeout`, `cfs-lock … got lock
    /// request timeout`), synchronously or inside a task. Nothing was changed; retry later.
    pub fn is_lock_timeout(&self) -> bool {
        self.mentions("got timeout") || self.mentions("got lock request timeout")
    }

    /// `got no worker upid - start worker failed`: the fork failed, nothing was started.
    pub fn is_no_worker(&self) -> bool {
        self.mentions("got no worker upid")
    }

    /// 595/596/599: pveproxy could not forward the request to the node (connect, TLS, redirects).
    pub fn is_proxy_failure(&self) -> bool {
        matches!(self.status(), Some(595 | 596 | 599))
    }

    pub fn is_transport(&self) -> bool {
        matches!(self, PveError::Transport { .. })
    }

    /// `VM is locked (clone)` / `CT is locked (disk)`: the lock name.
    pub fn locked_by(&self) -> Option<String> {
        self.texts()
            .iter()
            .find_map(|t| LOCKED_BY.captures(t).map(|c| c[1].to_owned()))
    }

    /// `400 no such task` while a new task's log file does not exist yet.
    pub fn is_no_such_task(&self) -> bool {
        self.status() == Some(400) && self.mentions("no such task")
    }

    /// The guest agent cannot answer yet: `QEMU guest agent is not running`, a QMP `got timeout`,
    /// `VM N is not running`, or a 400. (`No QEMU guest agent configured` is not "yet".)
    pub fn is_agent_not_ready(&self) -> bool {
        match self.status() {
            Some(400) => true,
            Some(500) => {
                !self.is_agent_not_configured()
                    && (self.mentions("agent is not running")
                        || self.mentions("got timeout")
                        || self.mentions("not running"))
            }
            _ => false,
        }
    }

    /// The guest agent did not answer PVE's `guest-ping`, so the request never reached it:
    /// `QEMU guest agent is not running`, or `… command 'guest-ping' failed - got timeout`.
    /// Narrower than `is_agent_not_ready`: safe to resend even a request that starts something.
    pub fn is_agent_down(&self) -> bool {
        self.status() == Some(500)
            && (self.mentions("guest agent is not running")
                || (self.mentions("'guest-ping'") && self.mentions("got timeout")))
    }

    /// `Agent error: …`: the guest agent answered, with an error (`Invalid parameter 'pid'`,
    /// `Failed to execute child process …`). Sending the same request again gets the same answer.
    pub fn is_agent_error(&self) -> bool {
        self.status() == Some(500) && self.mentions("Agent error:")
    }

    /// `VM 100 is not running`: the guest is stopped (not its agent).
    pub fn is_guest_not_running(&self) -> bool {
        self.status() == Some(500) && self.texts().iter().any(|t| GUEST_NOT_RUNNING.is_match(t))
    }

    pub fn is_agent_not_configured(&self) -> bool {
        self.status() == Some(500) && self.mentions("No QEMU guest agent configured")
    }

    /// Whether the same request may succeed if sent again. Writes are retried only when PVE
    /// says nothing happened (lock timeout, no worker); reads also on 5xx, proxy and transport
    /// failures. "Does not exist" is an answer, not a failure.
    pub fn is_transient(&self, read: bool) -> bool {
        if self.is_lock_timeout() || self.is_no_worker() {
            return true;
        }
        if !read {
            return false;
        }
        match self {
            PveError::Api { status, .. } => *status >= 500 && !self.is_missing_object() && *status != 501,
            PveError::Transport { .. } => true,
            _ => false,
        }
    }

    fn method(&self) -> Option<&'static str> {
        match self {
            PveError::Api { method, .. } | PveError::Transport { method, .. } => Some(method),
            _ => None,
        }
    }
}

/// Berth field names for PVE parameters, so an InvalidSpec names what the caller gave.
fn spec_field(param: &str) -> &str {
    match param {
        "memory" => "memory_mib",
        "cores" => "cores",
        "name" | "hostname" => "name",
        "sshkeys" | "ssh-public-keys" => "ssh_keys",
        "ciuser" => "user",
        "ipconfig0" | "net0" => "network",
        "nameserver" => "nameservers",
        "ostemplate" => "template",
        "size" | "rootfs" => "disk_gib",
        other => other,
    }
}

impl From<PveError> for ProviderError {
    fn from(e: PveError) -> Self {
        let text = e.to_string();
        let read = e.method() == Some("GET");
        if e.is_not_found() {
            return ProviderError::not_found(text);
        }
        if e.is_transient(read) || e.is_proxy_failure() || e.locked_by().is_some() {
            return ProviderError::unavailable(text);
        }
        match &e {
            PveError::Api { status: 401, .. } => ProviderError::unauthorized(format!(
                "{text}; check api_token_id and the token secret (and that the token is not expired)"
            )),
            PveError::Api { status: 403, .. } => ProviderError::unauthorized(format!(
                "{text}; the API token lacks this privilege (tokens with privilege separation need their own ACLs)"
            )),
            PveError::Api {
                status: 400, errors, ..
            } if !errors.is_empty() => {
                let (param, msg) = errors
                    .iter()
                    .next()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .unwrap_or_default();
                ProviderError::invalid(
                    spec_field(param),
                    format!("Proxmox rejected parameter '{param}': {msg} ({text})"),
                )
            }
            PveError::Api { status: 400, .. } => ProviderError::invalid("request", text),
            PveError::Api { .. } if e.is_already_exists() => ProviderError::conflict(text),
            PveError::Api { status: 501, .. } => ProviderError::unsupported(text),
            PveError::Api { .. } => ProviderError::internal(text),
            PveError::Tls { message, .. } => {
                ProviderError::unauthorized(format!("cannot trust the Proxmox server: {message}"))
            }
            PveError::Transport { .. } => ProviderError::unavailable(text),
            PveError::Timeout { what, after } => ProviderError::Timeout {
                what: what.clone(),
                after: *after,
            },
            PveError::TaskFailed { .. } | PveError::Decode { .. } | PveError::InvalidUpid { .. } => {
                ProviderError::internal(text)
            }
            PveError::Setup { .. } => ProviderError::internal(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::ErrorCode;

    fn api(method: &'static str, status: u16, message: &str) -> PveError {
        PveError::Api {
            method,
            path: "/x".into(),
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn not_found_only_for_the_explicit_texts() {
        let code = |e: PveError| ProviderError::from(e).code();
        assert!(
            api(
                "GET",
                500,
                "Configuration file 'nodes/pve/qemu-server/117.conf' does not exist"
            )
            .is_not_found()
        );
        assert!(!api("GET", 500, "Internal Server Error").is_not_found());
        assert!(!api("GET", 502, "Bad Gateway").is_not_found());
        assert!(!api("GET", 404, "does not exist").is_not_found());
        assert!(
            api(
                "GET",
                500,
                "unable to find configuration file for VM 8000 on node 'pve02'"
            )
            .is_not_found()
        );
        assert!(
            api(
                "GET",
                500,
                "Configuration file 'nodes/pve1/lxc/200.conf' does not exist"
            )
            .is_not_found()
        );
        for other in [
            "storage 'xyz' does not exist",
            "pool 'berth' does not exist",
            "snapshot 'x' does not exist",
            "unable to open file '/etc/pve/x' - No such file or directory",
        ] {
            assert!(!api("POST", 500, other).is_not_found(), "{other}");
            assert_ne!(code(api("POST", 500, other)), ErrorCode::NotFound, "{other}");
            assert_ne!(code(api("DELETE", 500, other)), ErrorCode::NotFound, "{other}");
        }
        assert_eq!(
            code(api("GET", 500, "storage 'xyz' does not exist")),
            ErrorCode::Internal
        );
        assert_eq!(code(api("GET", 500, "unexpected")), ErrorCode::Unavailable);
        assert_eq!(
            code(api("DELETE", 500, "VM 100 is running - destroy failed")),
            ErrorCode::Internal
        );
        assert_eq!(
            code(api("GET", 500, "Configuration file 'x' does not exist")),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn classes() {
        let lock = api(
            "PUT",
            500,
            "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout",
        );
        assert!(lock.is_lock_timeout() && lock.is_transient(false));
        assert!(api("POST", 500, "got no worker upid - start worker failed").is_transient(false));
        assert!(!api("POST", 500, "internal error").is_transient(false));
        assert!(api("GET", 595, "Connection refused").is_transient(true));
        assert_eq!(
            api("PUT", 500, "VM is locked (clone)").locked_by().as_deref(),
            Some("clone")
        );
        assert!(api("GET", 500, "QEMU guest agent is not running").is_agent_not_ready());
        assert!(!api("GET", 500, "No QEMU guest agent configured").is_agent_not_ready());
        assert!(api("GET", 500, "VM 100 qmp command 'guest-ping' failed - got timeout").is_agent_not_ready());
        assert!(!api("GET", 403, "Permission check failed").is_agent_not_ready());
        assert!(api("POST", 500, "QEMU guest agent is not running").is_agent_down());
        assert!(api("POST", 500, "VM 100 qmp command 'guest-ping' failed - got timeout").is_agent_down());
        // The command itself may have started: not "down".
        assert!(!api("POST", 500, "VM 100 qga command 'guest-exec' failed - got timeout").is_agent_down());
        assert!(!api("POST", 500, "VM 100 is not running").is_agent_down());
        assert!(!api("POST", 400, "Parameter verification failed.").is_agent_down());
        assert!(api("POST", 500, "VM 100 is not running").is_guest_not_running());
        assert!(api("GET", 500, "Agent error: Invalid parameter 'pid'").is_agent_error());
        assert!(!api("GET", 500, "QEMU guest agent is not running").is_agent_error());
        assert!(!api("POST", 500, "QEMU guest agent is not running").is_guest_not_running());
    }

    #[test]
    fn mapping_names_params_and_permissions() {
        let mut errors = BTreeMap::new();
        errors.insert("memory".to_owned(), "value must have a minimum value of 16".to_owned());
        let e = PveError::Api {
            method: "PUT",
            path: "/p".into(),
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
        };
        match ProviderError::from(e) {
            ProviderError::InvalidSpec { field, reason } => {
                assert_eq!(field, "memory_mib");
                assert!(reason.contains("minimum value of 16"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let e = ProviderError::from(api("POST", 403, "Permission check failed (/vms/100, VM.Allocate)"));
        assert_eq!(e.code(), ErrorCode::Unauthorized);
        assert!(e.to_string().contains("VM.Allocate"), "{e}");
        assert_eq!(
            ProviderError::from(api("GET", 401, "Authentication failed!")).code(),
            ErrorCode::Unauthorized
        );
    }
}
