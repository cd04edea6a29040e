//! The ledger of the declarative mode on disk: next to the audit file (`<audit>.ledger.json`),
//! per site file what Berth last applied from it. Written after an apply succeeds, replaced
//! atomically; read by `berth plan`/`apply` (`--prune`, and the note about objects taken out of
//! the file) and by `berth drift` (the three-way comparison).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use berth_decl::ledger::{Drift, Ledger};
use berth_decl::plan::Plan;

use crate::cli::OutputFormat;

fn path(audit: &Path) -> PathBuf {
    audit.with_extension("ledger.json")
}

/// The key of a site file: its absolute path, so `site.toml` and `./site.toml` are one.
fn key(site: &Path) -> String {
    std::path::absolute(site)
        .unwrap_or_else(|_| site.to_owned())
        .display()
        .to_string()
}

fn read_all(audit: &Path) -> anyhow::Result<BTreeMap<String, Ledger>> {
    let p = path(audit);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is not a ledger", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// What Berth last applied from `site`, if anything.
pub(crate) fn load(audit: &Path, site: &Path) -> anyhow::Result<Option<Ledger>> {
    Ok(read_all(audit)?.remove(&key(site)))
}

/// Records a successful apply of `plan` from `site` (limited to `targets`), if the file is
/// still the one it was planned from.
pub(crate) fn record(audit: &Path, site: &Path, plan: &Plan, targets: &[String]) -> anyhow::Result<()> {
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
    all.entry(key(site))
        .or_default()
        .record(&desired, plan, targets, &plan.file_hash, crate::decl_cmd::now_ms());
    let p = path(audit);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}

/// `berth drift` with a ledger: the cluster against the last apply, and the file against it.
pub(crate) fn print_drift(d: &Drift, site: &Path, out: OutputFormat) -> anyhow::Result<()> {
    if out == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    let show = |v: &Option<String>| v.as_deref().map_or("(unset)".to_owned(), |s| format!("{s:?}"));
    if d.outside.is_empty() && d.gone.is_empty() {
        println!(
            "No drift: the cluster is as the last apply of {} left it.",
            site.display()
        );
    } else {
        println!("Changed outside Berth since the last apply:");
        for f in &d.outside {
            println!("  ~ {}  {}: {} → {}", f.addr, f.field, show(&f.applied), show(&f.now));
        }
        for a in &d.gone {
            println!("  - {a}  gone from the cluster");
        }
    }
    if !d.edited.is_empty() || !d.removed.is_empty() {
        println!("Edited in the file since the last apply (not applied yet; not drift):");
        for f in &d.edited {
            println!("  ~ {}  {}: {} → {}", f.addr, f.field, show(&f.applied), show(&f.now));
        }
        for a in &d.removed {
            println!("  - {a}  taken out of the file (kept; `berth apply --prune` deletes it)");
        }
    }
    Ok(())
}
