//! `[drift]`: the agent checks a declarative site file against its Proxmox cluster on a schedule
//! and reports what differs in its heartbeat (`berth drift`, run for the operator).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::backend::{BackendConfig, BackendKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDrift {
    site: PathBuf,
    backend: Option<String>,
    interval_seconds: Option<u64>,
    audit: Option<PathBuf>,
}

/// The scheduled check, settled: the file (absolute), the proxmox backend, how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftSettings {
    pub site: PathBuf,
    pub backend: String,
    pub interval: Duration,
    /// The ledger of the applies (beside the audit file `berth apply` writes): the check is then
    /// against the last apply.
    pub ledger: Option<PathBuf>,
}

/// Once an hour unless the file says otherwise.
const DEFAULT_INTERVAL_SECONDS: u64 = 3600;

pub(crate) fn settle(
    raw: RawDrift,
    base: &Path,
    backends: &[BackendConfig],
) -> Result<DriftSettings, (String, String)> {
    let err = |key: &str, m: String| (format!("drift.{key}"), m);
    let interval = raw.interval_seconds.unwrap_or(DEFAULT_INTERVAL_SECONDS);
    // Each check reads the whole cluster: not more often than once a minute.
    if !(60..=86_400).contains(&interval) {
        return Err(err(
            "interval_seconds",
            format!("expected 60 to 86400 (got {interval})"),
        ));
    }
    // Absolute, as `berth apply` keys its ledger.
    let site = std::path::absolute(base.join(&raw.site)).map_err(|e| err("site", e.to_string()))?;
    if !site.is_file() {
        return Err(err("site", format!("{} is not a readable file", site.display())));
    }
    let ledger = match raw.audit {
        Some(audit) => {
            let audit = std::path::absolute(base.join(audit)).map_err(|e| err("audit", e.to_string()))?;
            if !audit.parent().is_some_and(Path::is_dir) {
                return Err(err(
                    "audit",
                    format!(
                        "{}: expected the audit file `berth apply --audit` writes, in a directory that exists",
                        audit.display()
                    ),
                ));
            }
            Some(berth_decl::ledger_file::path(&audit))
        }
        None => None,
    };
    let proxmox: Vec<&BackendConfig> = backends.iter().filter(|b| b.kind() == BackendKind::Proxmox).collect();
    let backend = match &raw.backend {
        Some(name) => {
            let b = backends
                .iter()
                .find(|b| &b.name == name)
                .ok_or_else(|| err("backend", format!("no backend named {name:?}")))?;
            if b.kind() != BackendKind::Proxmox {
                return Err(err(
                    "backend",
                    format!(
                        "backend {name:?} is {}: a site file describes a Proxmox VE cluster",
                        b.kind().as_str()
                    ),
                ));
            }
            b.name.clone()
        }
        None if proxmox.len() == 1 => proxmox[0].name.clone(),
        None => {
            return Err(err(
                "backend",
                format!(
                    "name the proxmox backend whose cluster the site describes ({} proxmox backends here)",
                    proxmox.len()
                ),
            ));
        }
    };
    Ok(DriftSettings {
        site,
        backend,
        interval: Duration::from_secs(interval),
        ledger,
    })
}
