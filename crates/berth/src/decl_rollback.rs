//! `berth checkpoints` and `berth rollback APPLY_ID`: the applies that kept snapshots or backups
//! before risky changes (kept as JSON lines next to the audit file), and putting them back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_decl::apply::Applied;
use berth_decl::checkpoint::{rollback as roll_back, rollback_steps};
use serde::{Deserialize, Serialize};

use crate::cli::{OutputFormat, SiteArgs};
use crate::decl_audit;
use crate::decl_cmd::{ask, now_ms};
use crate::pve_cmd::pve_client;

/// An apply as kept for `berth checkpoints`, `berth rollback` and `berth apply --resume` (an
/// apply resumed adds a record under the same id).
#[derive(Serialize, Deserialize)]
pub(crate) struct ApplyRecord {
    pub backend: String,
    pub at: i64,
    pub applied: Applied,
    /// The site file it came from, that file's hash, and the objects its plan touched.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub file_hash: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// What the plan was to do to each object (`updated`, `replaced`, …).
    #[serde(default)]
    pub actions: std::collections::BTreeMap<String, String>,
    /// The cluster the plan was made against.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Why it stopped, when it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// `berth rollback` put its checkpoints back: it is not to be resumed.
    #[serde(default)]
    pub rolled_back: bool,
    /// The ledger's entries, from before the apply, of the guests it backed up and deleted: a
    /// rollback that restores one puts its entry back.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ledger_before: std::collections::BTreeMap<String, berth_decl::ledger::Applied>,
}

impl ApplyRecord {
    /// Every record of apply `id`, oldest first: its checkpoints together, each once.
    pub(crate) fn checkpoints_of(records: &[ApplyRecord], id: &str) -> Vec<berth_decl::checkpoint::Checkpoint> {
        let mut all: Vec<berth_decl::checkpoint::Checkpoint> = Vec::new();
        for cp in records
            .iter()
            .filter(|r| r.applied.apply_id == id)
            .flat_map(|r| &r.applied.checkpoints)
        {
            if !all.contains(cp) {
                all.push(cp.clone());
            }
        }
        all
    }
}

/// Where an apply came from, for its record.
pub(crate) struct Origin<'a> {
    pub site: &'a str,
    pub plan: &'a berth_decl::Plan,
}

/// Where the apply records live: next to the audit file.
fn records_path(audit: &Path) -> PathBuf {
    audit.with_extension("applies.jsonl")
}

pub(crate) fn records(audit: &Path) -> anyhow::Result<Vec<ApplyRecord>> {
    let path = records_path(audit);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).with_context(|| format!("{} holds a line that is not an apply", path.display()))
        })
        .collect()
}

/// Keeps an apply's record.
pub(crate) fn keep(
    audit: &Path,
    backend: &str,
    applied: Applied,
    origin: &Origin<'_>,
    error: Option<String>,
) -> anyhow::Result<()> {
    // Read before this apply is recorded in the ledger (a deleted guest leaves it then).
    let (ledger, _) = crate::decl_ledger::load(audit, Path::new(origin.site), backend);
    let ledger_before = applied
        .checkpoints
        .iter()
        .filter(|cp| matches!(cp, berth_decl::checkpoint::Checkpoint::Backup { .. }))
        .filter_map(|cp| {
            let entry = ledger.as_ref()?.objects.get(cp.addr())?;
            Some((cp.addr().to_owned(), entry.clone()))
        })
        .collect();
    let record = ApplyRecord {
        backend: backend.to_owned(),
        at: now_ms(),
        applied,
        // Absolute: a resume or rollback may run from elsewhere.
        site: Some(berth_decl::ledger_file::absolute(Path::new(origin.site))),
        file_hash: Some(origin.plan.file_hash.clone()),
        addresses: origin.plan.changes.iter().map(|c| c.addr.clone()).collect(),
        actions: origin
            .plan
            .changes
            .iter()
            .map(|c| (c.addr.clone(), crate::decl_cmd::action_word(&c.action).to_owned()))
            .collect(),
        cluster: origin.plan.cluster.clone(),
        error,
        rolled_back: false,
        ledger_before,
    };
    append(audit, &record)
}

fn append(audit: &Path, record: &ApplyRecord) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = records_path(audit);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(&record)?)?;
    f.sync_data()?;
    Ok(())
}

/// `berth checkpoints`: the applies that kept snapshots or backups, oldest first.
pub fn checkpoints(site: &SiteArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let all: Vec<ApplyRecord> = records(&site.audit)?
        .into_iter()
        .filter(|r| !r.applied.checkpoints.is_empty())
        .collect();
    match out {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        OutputFormat::Human if all.is_empty() => println!("no checkpoints"),
        OutputFormat::Human => {
            for r in &all {
                println!(
                    "apply {} at {} (backend {})",
                    r.applied.apply_id,
                    berth_core::utc(r.at),
                    r.backend
                );
                for step in rollback_steps(&r.applied.checkpoints) {
                    println!("  {step}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth rollback APPLY_ID`: shows what it would do, asks, and puts the VMs back.
pub async fn rollback(site: &SiteArgs, apply_id: &str, yes: bool) -> anyhow::Result<ExitCode> {
    // An apply resumed has a record per attempt: their checkpoints together, each once.
    let all = records(&site.audit)?;
    let checkpoints = ApplyRecord::checkpoints_of(&all, apply_id);
    let all_before: std::collections::BTreeMap<String, berth_decl::ledger::Applied> = all
        .iter()
        .filter(|r| r.applied.apply_id == apply_id)
        .flat_map(|r| r.ledger_before.clone())
        .collect();
    let rec = all
        .into_iter()
        .find(|r| r.applied.apply_id == apply_id)
        .with_context(|| format!("no apply {apply_id} in {}", records_path(&site.audit).display()))?;
    let steps = rollback_steps(&checkpoints);
    if steps.is_empty() {
        println!("apply {apply_id} kept no checkpoints: nothing to roll back");
        return Ok(ExitCode::SUCCESS);
    }
    let age = (now_ms() - rec.at) / 60_000;
    println!("Rollback of apply {apply_id} (checkpoints taken {age} minutes ago):");
    for s in &steps {
        println!("  {s}");
    }
    ask("Roll back?", yes)?;
    let backend = site.backend.as_deref().unwrap_or(&rec.backend);
    let (client, _, _) = pve_client(&site.config.config, Some(backend), "berth rollback")?;
    let subject = format!("apply:{apply_id}");
    // As long as an apply waits for a backup: a restore reads it all back.
    let (lines, failed) = match roll_back(&client, &checkpoints, std::time::Duration::from_secs(1800)).await {
        Ok(lines) => (lines, 0),
        // What could be put back was; the rest failed, each said.
        Err(berth_decl::apply::ApplyError::RollbackIncomplete { failed, lines }) => (lines, failed),
        Err(e) => {
            let detail = serde_json::json!({ "error": e.to_string() });
            decl_audit::append(&site.audit, "decl.rollback.failed", &subject, detail)?;
            return Err(e.into());
        }
    };
    for l in &lines {
        println!("{l}");
    }
    // The ledger: the guests put back are as the cluster has them now (not drift).
    if let Some(site_file) = &rec.site {
        match berth_decl::observe::observe(&client).await {
            Ok(observed) => {
                let addrs: Vec<String> = checkpoints.iter().map(|c| c.addr().to_owned()).collect();
                // Restored guests are Berth's again, as they were before the apply.
                let restored = all_before
                    .iter()
                    .filter(|(a, _)| lines.iter().any(|l| l.starts_with(&format!("{a}: restored from "))))
                    .map(|(a, e)| (a.clone(), e.clone()))
                    .collect();
                let back = crate::decl_ledger::RolledBack {
                    addrs: &addrs,
                    restored,
                    observed: &observed,
                };
                crate::decl_ledger::rolled_back(&site.audit, Path::new(site_file), backend, back);
            }
            Err(e) => eprintln!("warning: the ledger was not updated after the rollback: reading the cluster: {e}"),
        }
    }
    if failed > 0 {
        let detail = serde_json::json!({ "steps": lines, "failed": failed });
        decl_audit::append(&site.audit, "decl.rollback.failed", &subject, detail)?;
        bail!(
            "{failed} checkpoint(s) of apply {apply_id} could not be put back (above); the others were. `berth rollback {apply_id}` again tries them all once more"
        );
    }
    // Rolled back: `--resume` must not apply it again.
    append(
        &site.audit,
        &ApplyRecord {
            at: now_ms(),
            applied: Applied {
                apply_id: apply_id.to_owned(),
                ..Applied::default()
            },
            rolled_back: true,
            ..rec
        },
    )?;
    decl_audit::append(
        &site.audit,
        "decl.rollback",
        &subject,
        serde_json::json!({ "steps": lines }),
    )?;
    Ok(ExitCode::SUCCESS)
}
