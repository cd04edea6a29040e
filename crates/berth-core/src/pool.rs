//! Warm pools: machines made ahead of orders, so an order only personalises one and hands it
//! over. A pool machine carries Berth's ownership marker under its own id (`pool-…`, the local
//! scope, so no agent's reconcile takes it for a lost instance) and a pool mark naming its pool
//! and the key of the definition it was made to. Taking one moves the marker from the pool
//! machine's id to the instance's in one step: that is the commit point.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProviderError;
use crate::ids::InstanceId;
use crate::instance::{ExecOutput, PowerState};

/// What a pool machine is kept as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// Cloned, sized and configured, never booted: cloud-init runs on the first boot, with the
    /// customer's data put in when it is taken.
    #[default]
    Stopped,
    /// Booted; the customer's SSH keys and host name are put in through the guest agent.
    Running,
}

impl PoolMode {
    /// The power state a machine of such a pool is kept in (and must be in to be taken).
    pub fn power_state(self) -> PowerState {
        match self {
            PoolMode::Stopped => PowerState::Stopped,
            PoolMode::Running => PowerState::Running,
        }
    }
}

/// An error of a take past its commit point: the machine is the instance's, so "not found" is no
/// longer "nothing was changed" and must not send the order to a create.
pub fn after_commit(e: ProviderError, pool: &str) -> ProviderError {
    match e {
        ProviderError::NotFound { what } => {
            ProviderError::unavailable(format!("{what} (after it was taken from pool {pool})"))
        }
        e => e,
    }
}

/// The personalisation of `label` ran through its guest agent as `out` says: an error unless the
/// script succeeded.
pub fn personalised(label: &str, out: &ExecOutput) -> Result<(), ProviderError> {
    if out.success() {
        return Ok(());
    }
    Err(ProviderError::internal(format!(
        "personalising {label}: the script exited {}: {}",
        out.exit_status,
        out.stderr.trim().chars().take(400).collect::<String>()
    )))
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PoolMode::Stopped => "stopped",
            PoolMode::Running => "running",
        })
    }
}

/// The pool a machine belongs to, as its marker says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolMark {
    /// The pool's name: lowercase letters, digits and `-`, at most 32 characters.
    pub pool: String,
    /// The key of the pool definition (template, size, mode) the machine was made to: a machine
    /// with another key is drained, never handed out.
    pub key: String,
}

impl PoolMark {
    pub const MAX_NAME: usize = 32;

    /// Checks the name and key can be carried by every backend's marker.
    pub fn new(pool: &str, key: &str) -> Result<PoolMark, ProviderError> {
        let ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !ok(pool, Self::MAX_NAME) {
            return Err(ProviderError::invalid(
                "pool",
                format!(
                    "must be lowercase letters, digits and '-', at most {} characters (got {pool:?})",
                    Self::MAX_NAME
                ),
            ));
        }
        if !ok(key, 16) {
            return Err(ProviderError::invalid(
                "pool key",
                format!("must be lowercase letters and digits, at most 16 characters (got {key:?})"),
            ));
        }
        Ok(PoolMark {
            pool: pool.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The mark as one token (`<pool>.<key>`), as the markers carry it.
    pub fn token(&self) -> String {
        format!("{}.{}", self.pool, self.key)
    }

    /// Reads a token; `None` when it is not one.
    pub fn from_token(s: &str) -> Option<PoolMark> {
        let (pool, key) = s.split_once('.')?;
        PoolMark::new(pool, key).ok()
    }
}

impl fmt::Display for PoolMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool {} (definition {})", self.pool, self.key)
    }
}

/// A fresh id for a pool machine: `pool-` and 16 hex digits (the local scope).
pub fn pool_machine_id() -> InstanceId {
    InstanceId::parse(&format!("pool-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])).expect("a valid id")
}

/// The shell script a running pool machine is personalised with through the guest agent: the
/// host name (kept over reboots: cloud-init is told to preserve it), and `keys` as the user's
/// `authorized_keys`. Idempotent. `BERTH_ROOT` (unset in a guest) prefixes every path written,
/// for emulated guests, and skips what would change the machine the script runs on.
pub fn personalise_script(name: &str, user: &str, keys: &[String]) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut keys_out = String::new();
    for k in keys {
        keys_out.push(' ');
        keys_out.push_str(&q(k));
    }
    format!(
        r#"set -eu
r="${{BERTH_ROOT:-}}"; n={name}; u={user}
h=$(if [ -n "$r" ]; then grep "^$u:" "$r/etc/passwd"; else getent passwd "$u"; fi 2>/dev/null | cut -d: -f6) || true
[ -n "$h" ] || h="/home/$u"
mkdir -p "$r$h/.ssh"
printf '%s\n'{keys_out} > "$r$h/.ssh/authorized_keys.berth"
chmod 700 "$r$h/.ssh"; chmod 600 "$r$h/.ssh/authorized_keys.berth"
mv "$r$h/.ssh/authorized_keys.berth" "$r$h/.ssh/authorized_keys"
[ -n "$r" ] || chown -R "$u:" "$h/.ssh" 2>/dev/null || chown -R "$u" "$h/.ssh"
mkdir -p "$r/etc/cloud/cloud.cfg.d"
printf 'preserve_hostname: true\nmanage_etc_hosts: false\n' > "$r/etc/cloud/cloud.cfg.d/99-berth-pool.cfg"
printf '%s\n' "$n" > "$r/etc/hostname"
if grep -q '^127\.0\.1\.1[[:space:]]' "$r/etc/hosts" 2>/dev/null; then
  sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1 $n/" "$r/etc/hosts"
elif [ -f "$r/etc/hosts" ]; then printf '127.0.1.1 %s\n' "$n" >> "$r/etc/hosts"; fi
[ -n "$r" ] || hostname "$n"
"#,
        name = q(name),
        user = q(user),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back_and_refuse_what_a_marker_cannot_carry() {
        let m = PoolMark::new("web-small", "1a2b3c4d").unwrap();
        assert_eq!(m.token(), "web-small.1a2b3c4d");
        assert_eq!(PoolMark::from_token(&m.token()), Some(m));
        assert!(PoolMark::from_token("nodot").is_none());
        let e = PoolMark::new("Web", "1").unwrap_err().to_string();
        assert!(e.contains("pool") && e.contains("\"Web\""), "{e}");
        assert!(PoolMark::new("web", "").is_err());
        assert!(pool_machine_id().as_str().starts_with("pool-"));
        assert_eq!(
            crate::ids::InstanceId::parse(pool_machine_id().as_str())
                .unwrap()
                .scope(),
            crate::Scope::Local
        );
    }

    #[test]
    fn the_personalisation_writes_under_an_emulated_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 pool-x\n").unwrap();
        let script = personalise_script("web1", "nobody-berth-test", &["ssh-ed25519 AAAA it's me".into()]);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env("BERTH_ROOT", root.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let keys = std::fs::read_to_string(root.path().join("home/nobody-berth-test/.ssh/authorized_keys")).unwrap();
        assert_eq!(keys, "ssh-ed25519 AAAA it's me\n");
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/hostname")).unwrap(),
            "web1\n"
        );
        assert!(
            std::fs::read_to_string(root.path().join("etc/hosts"))
                .unwrap()
                .contains("127.0.1.1 web1")
        );
    }
}
