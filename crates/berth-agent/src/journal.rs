//! The local journal: one file per operation this agent holds, rewritten atomically after every
//! step, so that after a kill -9 the agent knows what it was doing. It records the lease
//! (operation, generation), the work (kind, payload), the stages completed, the post-provision
//! commands started and their results, a failure whose cleanup is under way, and the outcome once
//! decided, which is reported until the control plane has it.
//!
//! While an operation runs, its entry has one writer: [`Tracked`]. Every change takes a numbered
//! snapshot under the entry's lock, and a snapshot older than the one already on disk is never
//! written, so concurrent savers (the work, the reporter) cannot put back an older state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use berth_api::wire::{CommandRun, Completion};
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The entry format this agent writes. 1: before the version field (read as such).
pub const VERSION: u32 = 2;

fn legacy_version() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default = "legacy_version")]
    pub version: u32,
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
    /// How many post-provision commands were started; journaled before each starts, so a
    /// command started but not in `commands` was interrupted (it is never started again).
    #[serde(default)]
    pub commands_started: usize,
    /// Post-provision commands finished, in order, with their exit status.
    #[serde(default)]
    pub commands: Vec<CommandRun>,
    /// A provision that failed for good: the failure to report once what it made is deleted.
    #[serde(default)]
    pub compensating: Option<Completion>,
    /// Why the work cannot resume from its history (its earlier entry was damaged or written by
    /// a newer agent): a provision then fails and cleans up rather than start over.
    #[serde(default)]
    pub history_lost: Option<String>,
    /// The control plane's request body limit, from the claim (completions must fit under it).
    #[serde(default)]
    pub body_limit_bytes: Option<u64>,
    /// Decided but not yet acknowledged by the control plane.
    #[serde(default)]
    pub outcome: Option<Completion>,
    /// The warm pool machine this provision is taking (journaled before the take starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_take: Option<crate::pools::PoolTake>,
}

impl Entry {
    pub fn new(
        operation_id: &str,
        instance_id: &str,
        kind: &str,
        generation: i64,
        payload: serde_json::Value,
    ) -> Entry {
        Entry {
            version: VERSION,
            operation_id: operation_id.into(),
            instance_id: instance_id.into(),
            kind: kind.into(),
            generation,
            payload,
            backend: String::new(),
            stages: Vec::new(),
            commands_started: 0,
            commands: Vec::new(),
            compensating: None,
            history_lost: None,
            body_limit_bytes: None,
            outcome: None,
            pool_take: None,
        }
    }

    pub fn done(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

/// What the journal holds for one operation.
#[derive(Debug)]
pub enum Loaded {
    Missing,
    Found(Box<Entry>),
    /// There was an entry, but it cannot be used (damaged, or a newer format): set aside as
    /// `*.damaged`, with the reason.
    Unreadable(String),
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
        self.dir.join(format!("{}.json", fsutil::safe_file_name(operation_id)))
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

    /// Every usable entry, oldest file first. One that cannot be used is set aside as
    /// `*.damaged` and reported, not dropped; its operation fails safely when claimed again.
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
        Ok(files
            .into_iter()
            .filter_map(|(_, path)| match read_entry(&path) {
                Loaded::Found(e) => Some(*e),
                _ => None,
            })
            .collect())
    }

    /// The entry of one operation. An entry set aside earlier (`*.damaged`) still counts as
    /// unreadable: the operation's history is lost either way.
    pub fn load(&self, operation_id: &str) -> Loaded {
        let path = self.path(operation_id);
        if path.exists() {
            return read_entry(&path);
        }
        let damaged = path.with_extension("damaged");
        if damaged.exists() {
            return Loaded::Unreadable(format!("its journal entry was set aside as {}", damaged.display()));
        }
        Loaded::Missing
    }
}

/// Parses one entry file; one that cannot be used is renamed `*.damaged` and reported.
fn read_entry(path: &Path) -> Loaded {
    let parsed = std::fs::read(path)
        .map_err(anyhow::Error::from)
        .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(anyhow::Error::from))
        .and_then(|e| {
            anyhow::ensure!(
                e.version <= VERSION,
                "written in format {} by a newer agent (this one reads up to {VERSION})",
                e.version
            );
            Ok(e)
        });
    match parsed {
        Ok(e) => Loaded::Found(Box::new(e)),
        Err(err) => {
            let damaged = path.with_extension("damaged");
            tracing::error!(file = %path.display(), error = %err, "unusable journal entry set aside as {}", damaged.display());
            std::fs::rename(path, &damaged).ok();
            Loaded::Unreadable(format!(
                "its journal entry could not be used ({err}); set aside as {}",
                damaged.display()
            ))
        }
    }
}

/// The entry of an operation under way, and its only writer.
pub struct Tracked {
    journal: Journal,
    state: Mutex<(Entry, u64)>,
    /// The number of the snapshot last written.
    written: Mutex<u64>,
}

impl Tracked {
    pub fn new(journal: Journal, entry: Entry) -> Arc<Tracked> {
        Arc::new(Tracked {
            journal,
            state: Mutex::new((entry, 0)),
            written: Mutex::new(0),
        })
    }

    pub fn get(&self) -> Entry {
        self.state.lock().expect("entry lock").0.clone()
    }

    /// Changes the entry in memory and returns the numbered snapshot to write.
    fn change(&self, f: impl FnOnce(&mut Entry)) -> (Entry, u64) {
        let mut s = self.state.lock().expect("entry lock");
        f(&mut s.0);
        s.1 += 1;
        (s.0.clone(), s.1)
    }

    /// Writes a snapshot unless a newer one is on disk already (blocking: fsync).
    fn write(&self, (entry, seq): &(Entry, u64)) -> anyhow::Result<()> {
        let mut written = self.written.lock().expect("writer lock");
        if *seq <= *written {
            return Ok(());
        }
        self.journal.save(entry)?;
        *written = *seq;
        Ok(())
    }

    /// Changes the entry and makes the change durable before returning.
    pub async fn record(self: &Arc<Self>, f: impl FnOnce(&mut Entry)) -> anyhow::Result<()> {
        let snapshot = self.change(f);
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.write(&snapshot))
            .await
            .map_err(|e| anyhow::anyhow!("journal writer failed: {e}"))?
    }

    pub fn remove(&self) -> anyhow::Result<()> {
        let id = self.state.lock().expect("entry lock").0.operation_id.clone();
        let mut written = self.written.lock().expect("writer lock");
        // Nothing older may come back after the removal.
        *written = u64::MAX;
        self.journal.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        let mut e = Entry::new(id, "i-1", "provision", 3, serde_json::json!({"name": "web1"}));
        e.backend = "proxmox".into();
        e
    }

    fn found(l: Loaded) -> Entry {
        match l {
            Loaded::Found(e) => *e,
            other => panic!("expected an entry, got {other:?}"),
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
        assert_eq!(found(j.load("op-1")).stages, vec!["clone_template".to_owned()]);
        assert!(matches!(j.load("op-3"), Loaded::Missing));
        j.remove("op-1").unwrap();
        assert_eq!(j.load_all().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_its_operation_knows_its_history_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.save(&entry("op-1")).unwrap();
        std::fs::write(dir.path().join("op-x.json"), b"{not json").unwrap();
        let all = j.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert!(dir.path().join("op-x.damaged").exists());
        // Claimed again later: not a fresh start.
        let Loaded::Unreadable(why) = j.load("op-x") else {
            panic!("a damaged entry must not read as missing")
        };
        assert!(why.contains("op-x.damaged"), "{why}");
    }

    #[test]
    fn an_entry_from_a_newer_agent_is_not_taken_for_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut e = entry("op-1");
        e.version = VERSION + 1;
        j.save(&e).unwrap();
        let Loaded::Unreadable(why) = j.load("op-1") else {
            panic!("a newer format must not be read as this one")
        };
        assert!(why.contains("newer agent"), "{why}");
    }

    #[test]
    fn an_entry_without_a_version_reads_as_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join("op-1.json"),
            br#"{"operation_id":"op-1","instance_id":"i","kind":"stop","generation":1,"payload":{},"backend":"b"}"#,
        )
        .unwrap();
        assert_eq!(found(j.load("op-1")).version, 1);
    }

    #[test]
    fn hostile_ids_stay_inside_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        j.save(&entry("../../etc/x")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("j")).unwrap().count(), 1);
    }

    /// Two savers whose writes land out of order (the reporter's snapshot taken before the
    /// work's, written after it): the newer state stays on disk.
    #[test]
    fn an_older_snapshot_never_overwrites_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let t = Tracked::new(j.clone(), entry("op-1"));
        let older = t.change(|e| e.stages.push("clone_template".into()));
        let newer = t.change(|e| {
            e.outcome = Some(Completion::Failed(berth_api::wire::OpError {
                code: "timeout".into(),
                message: "m".into(),
            }))
        });
        t.write(&newer).unwrap();
        t.write(&older).unwrap();
        let on_disk = found(j.load("op-1"));
        assert!(
            on_disk.outcome.is_some(),
            "the recorded outcome was dropped: {on_disk:?}"
        );
        assert!(on_disk.done("clone_template"));
    }
}
