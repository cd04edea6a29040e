//! The ledger of the declarative mode on disk: next to the audit file (`<audit>.ledger.json`),
//! per site file and backend what Berth last applied from it. Written after an apply succeeds
//! (a temporary file, synced, renamed over it; one apply at a time per audit file, as for the
//! audit file itself); read by `berth plan`/`apply` (`--prune`, and the note about objects taken
//! out of the file) and by `berth drift` (the three-way comparison).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;
use berth_decl::ledger::{Drift, Ledger};
use berth_decl::ledger_file;
use berth_decl::plan::Plan;

use crate::cli::OutputFormat;

/// What Berth last applied from `site` through `backend`, if anything, and the addresses the
/// ledgers of other files on that backend hold (never pruned for this one). A ledger that cannot
/// be read is as none, said so (pruning then refuses).
pub(crate) fn load(audit: &Path, site: &Path, backend: &str) -> (Option<Ledger>, BTreeSet<String>) {
    ledger_file::load(&ledger_file::path(audit), site, backend).unwrap_or_else(|e| {
        eprintln!("warning: {e}; going on without it");
        (None, BTreeSet::new())
    })
}

/// What an apply ran: the plan, the `--target`s it was limited to, and the cluster it was
/// planned against (none for a saved plan).
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub plan: &'a Plan,
    pub targets: &'a [String],
    pub observed: Option<&'a berth_decl::Observed>,
}

/// Records a successful apply (`job`) from `site` through `backend`, if the file is still the
/// one it was planned from. A ledger that cannot be written is a warning: the apply itself is
/// done.
pub(crate) fn record(audit: &Path, site: &Path, backend: &str, job: Job<'_>) {
    if let Err(e) = write(audit, site, backend, job) {
        eprintln!("warning: the ledger was not updated: {e:#} (drift and --prune miss this apply)");
    }
}

fn write(
    audit: &Path,
    site: &Path,
    backend: &str,
    Job {
        plan,
        targets,
        observed,
    }: Job<'_>,
) -> anyhow::Result<()> {
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
    let p = ledger_file::path(audit);
    let mut all = ledger_file::read_all(&p).map_err(anyhow::Error::msg)?;
    ledger_file::entry(&mut all, site, backend).record(
        &desired,
        plan,
        targets,
        observed,
        &plan.file_hash,
        crate::decl_cmd::now_ms(),
    );
    ledger_file::write_all(&p, &all).with_context(|| format!("writing {}", p.display()))
}

/// What a rollback put back: the guests (`addrs`), those of them restored from a backup with
/// their ledger entries from before the apply, and the cluster after it.
pub(crate) struct RolledBack<'a> {
    pub addrs: &'a [String],
    pub restored: std::collections::BTreeMap<String, berth_decl::ledger::Applied>,
    pub observed: &'a berth_decl::Observed,
}

/// After `berth rollback` of an apply of `site` through `backend`: the guests it put back are in
/// the ledger as the cluster has them now (a restored one back in it). A ledger that cannot be
/// updated is a warning (what was rolled back then shows as drift until the file is applied
/// again).
pub(crate) fn rolled_back(audit: &Path, site: &Path, backend: &str, back: RolledBack<'_>) {
    let p = ledger_file::path(audit);
    let updated = ledger_file::read_all(&p)
        .map_err(anyhow::Error::msg)
        .and_then(|mut all| {
            let Some(ledger) = ledger_file::existing(&mut all, site, backend) else {
                eprintln!(
                    "note: nothing applied from {} through {backend} is in {}: no ledger to update",
                    site.display(),
                    p.display()
                );
                return Ok(());
            };
            ledger.objects.extend(back.restored);
            ledger.rolled_back(back.addrs, back.observed);
            ledger_file::write_all(&p, &all).with_context(|| format!("writing {}", p.display()))
        });
    if let Err(e) = updated {
        eprintln!("warning: the ledger was not updated after the rollback: {e:#}");
    }
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
    for f in fields {
        println!("  ~ {}  {}", f.addr, f.change());
    }
}
