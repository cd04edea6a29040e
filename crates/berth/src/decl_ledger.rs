//! The ledger of the declarative mode on disk: next to the audit file (`<audit>.ledger.json`),
//! per site file and backend what Berth last applied from it. Written after an apply succeeds
//! (a temporary file, synced, renamed over it; one apply at a time per audit file, as for the
//! audit file itself); read by `berth plan`/`apply` (`--prune`, and the note about objects taken
//! out of the file) and by `berth drift` (the three-way comparison).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use berth_decl::ledger::{Drift, Ledger};
use berth_decl::plan::Plan;

use crate::cli::OutputFormat;

fn path(audit: &Path) -> PathBuf {
    audit.with_extension("ledger.json")
}

/// A site file's absolute path, so `site.toml` and `./site.toml` are one.
pub(crate) fn absolute(site: &Path) -> String {
    std::path::absolute(site)
        .unwrap_or_else(|_| site.to_owned())
        .display()
        .to_string()
}

/// The key of a site file applied through `backend`: one file applied to two clusters has two
/// ledgers.
fn key(site: &Path, backend: &str) -> String {
    format!("{}@{backend}", absolute(site))
}

fn read_all(audit: &Path) -> anyhow::Result<BTreeMap<String, Ledger>> {
    let p = path(audit);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is not a ledger", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// What Berth last applied from `site` through `backend`, if anything, and the addresses the
/// ledgers of other files on that backend hold (never pruned for this one). A ledger that cannot
/// be read is as none, said so (pruning then refuses).
pub(crate) fn load(audit: &Path, site: &Path, backend: &str) -> (Option<Ledger>, BTreeSet<String>) {
    let mut all = match read_all(audit) {
        Ok(all) => all,
        Err(e) => {
            eprintln!("warning: {e:#}; going on without it");
            return (None, BTreeSet::new());
        }
    };
    let mine = all.remove(&key(site, backend));
    let suffix = format!("@{backend}");
    let held = all
        .into_iter()
        .filter(|(k, _)| k.ends_with(&suffix))
        .flat_map(|(_, l)| l.objects.into_keys())
        .collect();
    (mine, held)
}

/// Records a successful apply of `plan` from `site` through `backend` (limited to `targets`), if
/// the file is still the one it was planned from. A ledger that cannot be written is a warning:
/// the apply itself is done.
pub(crate) fn record(audit: &Path, site: &Path, backend: &str, plan: &Plan, targets: &[String]) {
    if let Err(e) = write(audit, site, backend, plan, targets) {
        eprintln!("warning: the ledger was not updated: {e:#} (drift and --prune miss this apply)");
    }
}

fn write(audit: &Path, site: &Path, backend: &str, plan: &Plan, targets: &[String]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(site).with_context(|| format!("reading {}", site.display()))?;
    if berth_decl::site::file_hash(&text) != plan.file_hash {
        eprintln!(
            "note: {} changed since it was planned; the ledger keeps the last apply of it as it was",
            site.display()
        );
        return Ok(());
    }
    let desired = berth_decl::parse(&site.display().to_string(), &text)
        .map_err(|e| anyhow::anyhow!("{} no longer reads: {}", site.display(), e[0]))?;
    let mut all = read_all(audit)?;
    all.entry(key(site, backend)).or_default().record(
        &desired,
        plan,
        targets,
        &plan.file_hash,
        crate::decl_cmd::now_ms(),
    );
    let p = path(audit);
    let tmp = p.with_extension(format!("json.{}.tmp", std::process::id()));
    let written = (|| {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&all)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    })();
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written.with_context(|| format!("writing {}", p.display()))
}

/// `berth drift` with a ledger: the cluster against the last apply, and the file against it.
pub(crate) fn print_drift(d: &Drift, site: &Path, out: OutputFormat) -> anyhow::Result<()> {
    if out == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    if d.outside.is_empty() && d.gone.is_empty() {
        println!(
            "No drift: the cluster is as the last apply of {} left it.",
            site.display()
        );
    } else {
        println!("Changed outside Berth since the last apply:");
        print_fields(&d.outside);
        for a in &d.gone {
            println!("  - {a}  gone from the cluster");
        }
    }
    if !d.edited.is_empty() || !d.removed.is_empty() {
        println!("Edited in the file since the last apply (not applied yet; not drift):");
        print_fields(&d.edited);
        for a in &d.removed {
            println!("  - {a}  taken out of the file (kept; `berth apply --prune` deletes it)");
        }
    }
    Ok(())
}

fn print_fields(fields: &[berth_decl::ledger::FieldDrift]) {
    let show = |v: &Option<String>| v.as_deref().map_or("(unset)".to_owned(), |s| format!("{s:?}"));
    for f in fields {
        println!("  ~ {}  {}: {} → {}", f.addr, f.field, show(&f.applied), show(&f.now));
    }
}
