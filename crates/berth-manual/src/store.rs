//! The durable request records: one JSON file per instance id in `state_dir` (directory 0700,
//! files 0600), written atomically (temp file, fsync, rename, fsync of the directory) and
//! changed only under an exclusive lock on `state_dir/.lock`, so the agent and an operator's CLI
//! never lose each other's updates.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_core::{InstanceId, Secret, VmSpec};
use serde::{Deserialize, Serialize};

/// Format version written into every record.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("manual state directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("manual request record {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("manual request record {} is not valid: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("manual store task did not finish: {0}")]
    Task(String),
}

impl From<StoreError> for berth_core::ProviderError {
    /// Disk trouble may heal (full disk, NFS hiccup): `Unavailable`; a broken record does not.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { .. } | StoreError::Task(_) => berth_core::ProviderError::internal(e.to_string()),
            StoreError::Dir { .. } | StoreError::Io { .. } => berth_core::ProviderError::unavailable(e.to_string()),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for an operator.
    Pending,
    /// An operator submitted the machine's details.
    Completed,
    /// An operator (or the deadline) said it cannot be done.
    Failed,
    /// An operator withdrew the request.
    Cancelled,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Completed => "completed",
            RequestStatus::Failed => "failed",
            RequestStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the operator submitted (the password is kept apart, see [`Record::root_password`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub ssh_port: Option<u16>,
    /// Unix seconds.
    pub completed_at: u64,
}

/// One request. `Debug` is safe: the password is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub instance_id: InstanceId,
    pub spec: VmSpec,
    pub status: RequestStatus,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last change.
    pub updated_at: u64,
    /// The operators were told (the webhook accepted the notification).
    #[serde(default)]
    pub notified: bool,
    #[serde(default)]
    pub details: Option<Details>,
    /// Why it failed or was cancelled.
    #[serde(default)]
    pub reason: Option<String>,
    /// The operator-supplied root password, until a create has returned it. Never serialized
    /// with the record: only [`Locked::save`] writes it, through [`OnDisk`].
    #[serde(skip)]
    pub root_password: Option<Secret>,
}

/// The file format: the record plus the password field only the store writes and reads.
#[derive(Serialize)]
struct OnDisk<'a> {
    #[serde(flatten)]
    record: &'a Record,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_password: Option<&'a str>,
}

#[derive(Deserialize)]
struct FromDisk {
    #[serde(flatten)]
    record: Record,
    #[serde(default)]
    root_password: Option<Secret>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The records directory. Reads need no lock (files are replaced atomically); changes go
/// through [`Store::locked`].
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The store while holding the directory's exclusive lock.
pub struct Locked<'a> {
    store: &'a Store,
    _lock: File,
}

impl Store {
    /// Creates the directory (0700) when missing and tightens its mode when it exists, then
    /// (under the lock) removes temp files a crash mid-write left behind: they may hold a root
    /// password.
    pub fn open(dir: PathBuf) -> Result<Store, StoreError> {
        let err = |source| StoreError::Dir {
            dir: dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(err)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        let store = Store { dir };
        store.locked(|l| l.remove_stale_temp_files())?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &InstanceId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn load(&self, id: &InstanceId) -> Result<Option<Record>, StoreError> {
        read(&self.path(id))
    }

    /// Every readable record, sorted by creation time. A record that cannot be read is skipped
    /// with a warning (one bad file must not hide the others or stop the agent).
    pub fn all(&self) -> Result<Vec<Record>, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Dir {
            dir: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Dir {
                dir: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match read(&entry.path()) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable manual request record"),
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.instance_id).cmp(&(b.created_at, &b.instance_id)));
        Ok(out)
    }

    /// Runs `f` holding the exclusive lock (blocking until it is free).
    pub fn locked<T, E: From<StoreError>>(&self, f: impl FnOnce(&Locked<'_>) -> Result<T, E>) -> Result<T, E> {
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock().map_err(|source| StoreError::Io { path, source })?;
        let guard = Locked {
            store: self,
            _lock: file,
        };
        f(&guard)
    }

    /// Checks the directory is writable by writing and removing a probe file.
    pub fn probe(&self) -> Result<(), StoreError> {
        let path = self.dir.join(format!(".probe-{}", uuid::Uuid::new_v4()));
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(b"probe").and_then(|_| f.sync_all()).map_err(io)?;
        drop(f);
        std::fs::remove_file(&path).map_err(io)
    }
}

impl Locked<'_> {
    pub fn load(&self, id: &InstanceId) -> Result<Option<Record>, StoreError> {
        self.store.load(id)
    }

    /// Replaces (or creates) the record atomically.
    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        let on_disk = OnDisk {
            record,
            root_password: record.root_password.as_ref().map(Secret::expose),
        };
        let mut bytes = serde_json::to_vec_pretty(&on_disk).map_err(|e| StoreError::Corrupt {
            path: self.store.path(&record.instance_id),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&self.store.dir, &self.store.path(&record.instance_id), &bytes)
    }

    /// Removes every temp file [`write_atomic`] may have left (`.<id>.json.tmp-<uuid>`): with the
    /// lock held no write is in progress, so each one is a leftover. A file that cannot be
    /// removed is logged and left.
    fn remove_stale_temp_files(&self) -> Result<(), StoreError> {
        let dir = &self.store.dir;
        let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Dir {
            dir: dir.clone(),
            source,
        })?;
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Dir {
                dir: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(is_temp_name) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed = true;
                    tracing::info!(file = %entry.path().display(), "removed a temp file left by an interrupted write");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not remove a stale temp file")
                }
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Removes the record; `None` when there was none.
    pub fn remove(&self, id: &InstanceId) -> Result<Option<Record>, StoreError> {
        let Some(record) = self.load(id)? else {
            return Ok(None);
        };
        let path = self.store.path(id);
        std::fs::remove_file(&path).map_err(|source| StoreError::Io { path, source })?;
        sync_dir(&self.store.dir)?;
        Ok(Some(record))
    }
}

fn read(path: &Path) -> Result<Option<Record>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let disk: FromDisk = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut record = disk.record;
    if record.version != RECORD_VERSION {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            message: format!(
                "version {} is not supported (expected {RECORD_VERSION})",
                record.version
            ),
        });
    }
    if path.file_stem().and_then(|s| s.to_str()) != Some(record.instance_id.as_str()) {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            message: format!("it holds instance {}, not the one its name says", record.instance_id),
        });
    }
    record.root_password = disk.root_password;
    Ok(Some(record))
}

/// The temp-file name [`write_atomic`] uses for `name`.
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp-{}", uuid::Uuid::new_v4())
}

/// True for a name [`temp_name`] makes for a record file: `.<id>.json.tmp-<uuid>`.
fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp-"))
        .is_some_and(|(record, id)| {
            record.len() > ".json".len() && record.ends_with(".json") && uuid::Uuid::try_parse(id).is_ok()
        })
}

/// Temp file (0600, same directory) → write → fsync → rename over `path` → fsync the directory.
/// The temp file is removed if any step fails.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("record");
    let tmp = dir.join(temp_name(name));
    let result = (|| {
        let mut f = OpenOptions::new().create_new(true).write(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::Io {
            path: path.to_owned(),
            source,
        });
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Dir {
            dir: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        let spec = VmSpec {
            instance_id: InstanceId::parse(id).unwrap(),
            name: id.into(),
            kind: Default::default(),
            cores: 1,
            memory_mib: 512,
            disk_gib: 5,
            template: None,
            ssh_keys: vec![],
            user: None,
            network: Default::default(),
        };
        Record {
            version: RECORD_VERSION,
            instance_id: spec.instance_id.clone(),
            spec,
            status: RequestStatus::Pending,
            created_at: 1,
            updated_at: 1,
            notified: false,
            details: None,
            reason: None,
            root_password: Some(Secret::new("pw-secret-9")),
        }
    }

    #[test]
    fn roundtrip_keeps_password_modes_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("state")).unwrap();
        let r = record("a1");
        store.locked(|l| l.save(&r)).unwrap();
        store.locked(|l| l.save(&r)).unwrap();
        let back = store.load(&r.instance_id).unwrap().unwrap();
        assert_eq!(back, r);
        assert!(!format!("{back:?}").contains("pw-secret-9"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.dir().join("a1.json")), 0o600);
        let names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n == "a1.json" || n == ".lock"), "{names:?}");
        assert_eq!(store.all().unwrap().len(), 1);
        assert_eq!(store.locked(|l| l.remove(&r.instance_id)).unwrap(), Some(r.clone()));
        assert_eq!(store.locked(|l| l.remove(&r.instance_id)).unwrap(), None);
    }

    #[test]
    fn open_removes_temp_files_left_by_a_crash_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().to_path_buf()).unwrap();
        store.locked(|l| l.save(&record("a1"))).unwrap();
        let stale = tmp.path().join(temp_name("a1.json"));
        std::fs::write(&stale, b"{\"root_password\": \"pw-secret-9\"").unwrap();
        // Names that only look similar are not the store's temp files.
        let keep = [".a1.json.tmp-not-a-uuid", "a1.json.tmp-x", ".probe-x", "notes.txt"];
        for k in keep {
            std::fs::write(tmp.path().join(k), b"x").unwrap();
        }
        assert!(is_temp_name(stale.file_name().unwrap().to_str().unwrap()));

        let store = Store::open(tmp.path().to_path_buf()).unwrap();
        assert!(!stale.exists(), "the stale temp file survived open");
        for k in keep {
            assert!(tmp.path().join(k).exists(), "{k} was removed");
        }
        assert!(store.load(&InstanceId::parse("a1").unwrap()).unwrap().is_some());
    }

    #[test]
    fn a_corrupt_record_is_named_and_skipped_by_all() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().to_path_buf()).unwrap();
        store.locked(|l| l.save(&record("good"))).unwrap();
        std::fs::write(tmp.path().join("bad.json"), b"{\"version\": 1, \"instance_").unwrap();
        let err = store.load(&InstanceId::parse("bad").unwrap()).unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
        let all = store.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].instance_id.as_str(), "good");
    }
}
