//! The ledger on disk: one JSON file next to the audit file (`<audit>.ledger.json`) holding, per
//! site file and backend (`/abs/site.toml@backend`), what Berth last applied from it. `berth
//! apply` writes it (a temporary file, synced, renamed over it); `berth plan`/`drift` and the
//! agent's scheduled check read it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::ledger::Ledger;

/// Every site file's ledger in one ledger file, by [`key`].
pub type Ledgers = BTreeMap<String, Ledger>;

/// The ledger file of an audit file.
pub fn path(audit: &Path) -> PathBuf {
    audit.with_extension("ledger.json")
}

/// A site file's path, absolute, its directory's links and `..` resolved (when it exists), so
/// every way of naming one file (`site.toml`, `./site.toml`, `../etc/site.toml`) is one. The file
/// name itself is kept even when it is a link: a `site.toml` linked to each deploy's release is
/// one site, not one per release.
pub fn absolute(site: &Path) -> String {
    let resolved = match (site.parent(), site.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::canonicalize(dir).map(|d| d.join(name))
        }
        _ => std::fs::canonicalize(site),
    };
    resolved
        .or_else(|_| std::path::absolute(site))
        .unwrap_or_else(|_| site.to_owned())
        .display()
        .to_string()
}

/// The key of a site file applied through `backend`: one file applied to two clusters has two
/// ledgers.
pub fn key(site: &Path, backend: &str) -> String {
    format!("{}@{backend}", absolute(site))
}

/// The key an earlier release wrote for the same file (absolute, links and `..` kept): read as
/// this file's, replaced on the next write.
fn earlier_key(site: &Path, backend: &str) -> Option<String> {
    let plain = format!("{}@{backend}", std::path::absolute(site).ok()?.display());
    (plain != key(site, backend)).then_some(plain)
}

/// Every ledger the file holds; none when there is no file yet.
pub fn read_all(file: &Path) -> Result<Ledgers, String> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a ledger: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledgers::new()),
        Err(e) => Err(format!("reading {}: {e}", file.display())),
    }
}

/// What Berth last applied from `site` through `backend` (none: nothing yet), and the addresses
/// the ledgers of other site files on that backend hold.
pub fn load(file: &Path, site: &Path, backend: &str) -> Result<(Option<Ledger>, BTreeSet<String>), String> {
    let mut all = read_all(file)?;
    let earlier = earlier_key(site, backend).and_then(|k| all.remove(&k));
    let mine = all.remove(&key(site, backend)).or(earlier);
    let suffix = format!("@{backend}");
    let held = all
        .into_iter()
        .filter(|(k, _)| k.ends_with(&suffix))
        .flat_map(|(_, l)| l.objects.into_keys())
        .collect();
    Ok((mine, held))
}

/// `site`'s ledger through `backend` in `all`, to be changed (one an earlier release keyed
/// otherwise is moved to this key).
pub fn entry<'a>(all: &'a mut Ledgers, site: &Path, backend: &str) -> &'a mut Ledger {
    existing(all, site, backend);
    all.entry(key(site, backend)).or_default()
}

/// As [`entry`], only when `all` holds a ledger of `site` through `backend`.
pub fn existing<'a>(all: &'a mut Ledgers, site: &Path, backend: &str) -> Option<&'a mut Ledger> {
    let key = key(site, backend);
    if let Some(earlier) = earlier_key(site, backend).and_then(|k| all.remove(&k)) {
        all.entry(key.clone()).or_insert(earlier);
    }
    all.get_mut(&key)
}

/// Replaces the ledger file with `all`: a temporary file beside it, synced, renamed over it (a
/// crash leaves the old file or the new one, never half of one).
pub fn write_all(file: &Path, all: &Ledgers) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("json.{}.tmp", std::process::id()));
    let written = (|| {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(all)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_file_round_trips_and_keys_by_absolute_site_and_backend() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(&dir.path().join("audit.jsonl"));
        assert!(file.ends_with("audit.ledger.json"));
        assert_eq!(read_all(&file).unwrap(), Ledgers::new(), "no file yet: no ledgers");
        let site = dir.path().join("site.toml");
        std::fs::write(&site, "version = 1\n").unwrap();
        let one = Ledger {
            file_hash: "h".into(),
            ..Ledger::default()
        };
        let mut all = Ledgers::new();
        all.insert(key(&site, "pve"), one.clone());
        let mut other = Ledger::default();
        other.objects.insert(
            "pool.b".into(),
            crate::ledger::Applied {
                kind: crate::Kind::Pool,
                fields: BTreeMap::new(),
            },
        );
        all.insert(key(&dir.path().join("other.toml"), "pve"), other.clone());
        all.insert(key(&dir.path().join("third.toml"), "lab"), other);
        write_all(&file, &all).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let dotted = dir.path().join("sub").join("..").join("site.toml");
        let (mine, held) = load(&file, &dotted, "pve").unwrap();
        assert_eq!(mine, Some(one.clone()));
        assert_eq!(held, BTreeSet::from(["pool.b".to_owned()]), "only this backend's");
        assert_eq!(load(&file, &site, "lab").unwrap().0, None);

        // A key an earlier release wrote (`..` kept) is this file's: read, and moved on write.
        let mut earlier = Ledgers::new();
        let plain = format!("{}@pve", std::path::absolute(&dotted).unwrap().display());
        earlier.insert(plain.clone(), one.clone());
        write_all(&file, &earlier).unwrap();
        assert_eq!(
            load(&file, &site, "pve").unwrap(),
            (None, BTreeSet::new()),
            "keyed by another path"
        );
        let (mine, held) = load(&file, &dotted, "pve").unwrap();
        assert_eq!((mine, held), (Some(one.clone()), BTreeSet::new()), "not another file's");
        entry(&mut earlier, &dotted, "pve").file_hash = "h2".into();
        assert_eq!(earlier.keys().collect::<Vec<_>>(), [&key(&site, "pve")]);
        assert!(existing(&mut earlier, &dir.path().join("other.toml"), "pve").is_none());
        assert!(existing(&mut earlier, &site, "pve").is_some());

        // A site file that is a link (to each deploy's release) keeps its own name.
        let release = dir.path().join("release-2.toml");
        std::fs::write(&release, "version = 1\n").unwrap();
        let link = dir.path().join("linked.toml");
        std::os::unix::fs::symlink(&release, &link).unwrap();
        assert!(key(&link, "pve").contains("linked.toml@"), "{}", key(&link, "pve"));
        std::fs::write(&file, "{").unwrap();
        assert!(read_all(&file).unwrap_err().contains("is not a ledger"));
    }
}
