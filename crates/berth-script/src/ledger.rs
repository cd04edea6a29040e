//! What a script backend without a `status` action remembers of its own provisions, so that a
//! provision run again (after a crash, a timeout, a retry) never makes a second machine. The
//! record says `provisioning` (written durably before the `provision` script runs), then holds
//! the machine the script answered with. A record still at `provisioning` means a provision was
//! cut off and may have made a machine Berth never heard of: it is asked to `terminate` (by
//! contract id) before provisioning again. One file per instance, `<id>.json`, mode 0600, in a
//! 0700 directory; every write is a temporary file, fsync, rename, fsync of the directory.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use berth_core::{Instance, InstanceId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// `provision` was (or is about to be) run; its answer is not known.
    Provisioning,
    /// The script answered with this machine.
    Made,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub contract_id: InstanceId,
    pub phase: Phase,
    /// The machine as `provision` answered (without its password, which is never stored).
    #[serde(default)]
    pub instance: Option<Instance>,
}

pub(crate) struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    pub fn open(dir: &Path) -> std::io::Result<Ledger> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        Ok(Ledger { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &InstanceId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn get(&self, id: &InstanceId) -> std::io::Result<Option<Record>> {
        match std::fs::read(self.path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path(id).display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn put(&self, r: &Record) -> std::io::Result<()> {
        let path = self.path(&r.contract_id);
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Every record, in no particular order; a file that cannot be read is skipped with a warning.
    pub fn all(&self) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let path = e?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(e)) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable script backend record; skipped")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable script backend record; skipped")
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, id: &InstanceId) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => std::fs::File::open(&self.dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_privately_and_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("s")).unwrap();
        let id = InstanceId::parse("3f7c9a1e-0000-4000-8000-000000000001").unwrap();
        assert_eq!(l.get(&id).unwrap(), None);
        let r = Record {
            contract_id: id.clone(),
            phase: Phase::Provisioning,
            instance: None,
        };
        l.put(&r).unwrap();
        assert_eq!(l.get(&id).unwrap(), Some(r));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("s").join(format!("{id}.json")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(l.all().unwrap().len(), 1);
        l.remove(&id).unwrap();
        l.remove(&id).unwrap();
        assert!(l.all().unwrap().is_empty());
        assert_eq!(l.get(&id).unwrap(), None);
    }
}
