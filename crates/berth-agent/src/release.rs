//! Releasing a quarantined machine: an operator takes it over (`berth agent release ID`), and
//! the agent leaves it alone from its next reconcile pass on: not stopped again, not deleted,
//! not reported. Only a marker file is written beside the agent's state, so it is safe while
//! the agent runs; the marker goes when the machine does.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::reconcile::{Orphan, Quarantine};

/// What a release recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Released {
    /// When it was released (ms since the epoch).
    pub at: i64,
    pub backend: String,
    pub vm_id: String,
}

pub(crate) fn released_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("released")
}

fn released_path(state_dir: &Path, instance_id: &str) -> PathBuf {
    released_dir(state_dir).join(format!("{}.json", fsutil::safe_file_name(instance_id)))
}

/// The machines the agent holds in quarantine, as its last reconcile pass left them.
pub fn quarantined(state_dir: &Path) -> Quarantine {
    std::fs::read(state_dir.join("quarantine.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Every released machine still on record: instance id and what was recorded.
pub fn released(state_dir: &Path) -> Vec<(String, Released)> {
    let Ok(dir) = std::fs::read_dir(released_dir(state_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Released)> = dir
        .filter_map(|e| {
            let path = e.ok()?.path();
            let id = path.file_stem()?.to_str()?.to_owned();
            Some((id, serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Releases the quarantined machine of `instance_id`. Refused for a machine the agent does
/// not hold in quarantine (nothing else is the agent's to give up).
pub fn release(state_dir: &Path, instance_id: &str) -> anyhow::Result<Orphan> {
    let q = quarantined(state_dir);
    let Some(o) = q.orphans.get(instance_id) else {
        let held: Vec<&str> = q.orphans.keys().map(String::as_str).collect();
        bail!(
            "instance {instance_id} is not in this agent's quarantine (quarantined: {}); `berth agent status` lists them",
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        );
    };
    let r = Released {
        at: crate::lease::now_ms(),
        backend: o.backend.clone(),
        vm_id: o.vm_id.clone(),
    };
    fsutil::ensure_private_dir(&released_dir(state_dir))?;
    fsutil::write_atomic(
        &released_path(state_dir, instance_id),
        &serde_json::to_vec_pretty(&r)?,
        0o600,
    )
    .with_context(|| format!("recording the release in {}", released_dir(state_dir).display()))?;
    Ok(o.clone())
}

/// Drops the markers of `released` machines no backend lists any more.
pub(crate) fn forget_gone(
    state_dir: &Path,
    released: &std::collections::HashSet<String>,
    present: &std::collections::HashSet<String>,
) {
    for id in released {
        if !present.contains(id) {
            let _ = fsutil::remove_durable(&released_path(state_dir, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_quarantined_machine_is_released_and_the_marker_goes_with_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let e = release(state, "i1").unwrap_err().to_string();
        assert!(e.contains("not in this agent's quarantine (quarantined: none)"), "{e}");
        let mut q = Quarantine::default();
        q.orphans.insert(
            "i1".into(),
            Orphan {
                since: 1,
                backend: "pve".into(),
                vm_id: "4201".into(),
            },
        );
        std::fs::write(state.join("quarantine.json"), serde_json::to_vec(&q).unwrap()).unwrap();
        assert_eq!(release(state, "i1").unwrap().vm_id, "4201");
        let held =
            |s: &Path| -> std::collections::HashSet<String> { released(s).into_iter().map(|(id, _)| id).collect() };
        assert_eq!(released(state)[0].1.backend, "pve");
        forget_gone(state, &held(state), &["i1".to_owned()].into());
        assert!(held(state).contains("i1"), "still there: kept");
        forget_gone(state, &held(state), &Default::default());
        assert!(held(state).is_empty(), "gone with its machine");
    }
}
