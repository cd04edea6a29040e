//! The local journal: one file per operation this agent holds, rewritten atomically after every
//! step, so that after a kill -9 the agent knows what it was doing. It records the lease
//! (operation, generation), the work (kind, payload), the stages completed, the post-provision
//! commands already run (commands need not be idempotent: they are never run twice), and the
//! outcome once decided, which is reported until the control plane has it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use berth_api::wire::{CommandRun, Completion};
use serde::{Deserialize, Serialize};

use crate::fsutil;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub operation_id: String,
    pub instance_id: String,
    pub kind: String,
    pub generation: i64,
    pub payload: serde_json::Value,
    /// The backend the work runs on.
    pub backend: String,
    /// Stages completed, in order.
    #[serde(default)]
    pub stages: Vec<String>,
    /// Post-provision commands run so far, in order.
    #[serde(default)]
    pub commands: Vec<CommandRun>,
    /// Decided but not yet acknowledged by the control plane.
    #[serde(default)]
    pub outcome: Option<Completion>,
}

impl Entry {
    pub fn done(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        fsutil::ensure_private_dir(dir).with_context(|| format!("cannot create the journal {}", dir.display()))?;
        Ok(Journal { dir: dir.to_owned() })
    }

    fn path(&self, operation_id: &str) -> PathBuf {
        // Operation ids come from the control plane; keep the file name safe whatever they hold.
        let safe: String = operation_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    pub fn save(&self, e: &Entry) -> anyhow::Result<()> {
        let path = self.path(&e.operation_id);
        let bytes = serde_json::to_vec_pretty(e)?;
        fsutil::write_atomic(&path, &bytes, 0o600).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn remove(&self, operation_id: &str) -> anyhow::Result<()> {
        let path = self.path(operation_id);
        fsutil::remove_durable(&path).with_context(|| format!("cannot remove {}", path.display()))
    }

    pub fn modified(&self, operation_id: &str) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.path(operation_id))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Every entry, oldest file first. A file that does not parse (it cannot be half-written,
    /// so it was damaged from outside) is renamed `*.damaged` and reported, not dropped.
    pub fn load_all(&self) -> anyhow::Result<Vec<Entry>> {
        let mut files = Vec::new();
        for item in std::fs::read_dir(&self.dir).with_context(|| format!("cannot read {}", self.dir.display()))? {
            let item = item?;
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json")
                || path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let modified = item.metadata().and_then(|m| m.modified()).ok();
            files.push((modified, path));
        }
        files.sort();
        Ok(files.into_iter().filter_map(|(_, path)| read_entry(&path)).collect())
    }

    /// The entry of one operation, if the journal has it (damaged: set aside, as in `load_all`).
    pub fn load(&self, operation_id: &str) -> Option<Entry> {
        let path = self.path(operation_id);
        path.exists().then(|| read_entry(&path)).flatten()
    }
}

/// Parses one entry file; a damaged one is renamed `*.damaged` and reported.
fn read_entry(path: &Path) -> Option<Entry> {
    let parsed = std::fs::read(path)
        .map_err(anyhow::Error::from)
        .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(anyhow::Error::from));
    match parsed {
        Ok(e) => Some(e),
        Err(err) => {
            let damaged = path.with_extension("damaged");
            tracing::error!(file = %path.display(), error = %err, "damaged journal entry set aside as {}", damaged.display());
            std::fs::rename(path, &damaged).ok();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            operation_id: id.into(),
            instance_id: "i-1".into(),
            kind: "provision".into(),
            generation: 3,
            payload: serde_json::json!({"name": "web1"}),
            backend: "proxmox".into(),
            stages: vec![],
            commands: vec![],
            outcome: None,
        }
    }

    #[test]
    fn save_load_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal")).unwrap();
        let mut e = entry("op-1");
        j.save(&e).unwrap();
        e.stages.push("clone_template".into());
        j.save(&e).unwrap();
        j.save(&entry("op-2")).unwrap();
        let all = j.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().any(|x| x.operation_id == "op-1" && x.done("clone_template")));
        assert_eq!(j.load("op-1").unwrap().stages, vec!["clone_template".to_owned()]);
        assert!(j.load("op-3").is_none());
        j.remove("op-1").unwrap();
        assert_eq!(j.load_all().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_file_is_set_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.save(&entry("op-1")).unwrap();
        std::fs::write(dir.path().join("op-x.json"), b"{not json").unwrap();
        let all = j.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert!(dir.path().join("op-x.damaged").exists());
    }

    #[test]
    fn hostile_ids_stay_inside_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        j.save(&entry("../../etc/x")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("j")).unwrap().count(), 1);
    }
}
