//! Declarative mode: a Proxmox VE site described in a file (`site.toml`, or the seed's JSON
//! shape), planned against the live cluster (`plan`), applied exactly as planned and only if
//! nothing it touches changed since (`apply`), and written back out from a cluster
//! (`export`). It covers storage definitions, pools, node network interfaces, backup jobs, VMs,
//! containers, HA and the asserted cluster; [`check_site`] is the drift check the agent runs on a schedule.
//!
//! Layers: `site` (file → desired objects), `plan` (pure: desired × observed → changes),
//! `observe`/`apply` (the PVE client), `export` (observed → file).

pub mod apply;
pub mod checkpoint;
mod ct;
mod ct_apply;
mod doc;
pub mod export;
mod fields;
mod fields_table;
mod guests;
mod ha;
pub mod ledger;
pub mod ledger_file;
pub mod model;
mod net_apply;
pub mod observe;
pub mod plan;
pub mod render;
pub mod site;
mod vm;
mod vm_apply;

pub use model::{Desired, Kind, Object, Observed};
pub use plan::{Action, Change, Plan, PlanError, plan};
pub use site::{SiteError, parse};

/// What a scheduled drift check found.
#[derive(Debug)]
pub enum SiteCheck {
    /// Nothing was applied from the file yet (or no ledger is kept): the plan that would bring
    /// the cluster to the file (empty: no drift).
    File(Plan),
    /// The cluster against the last apply of the file (`applied_at`, ms since the epoch): what
    /// changed outside Berth since, apart from the file's edits not applied yet.
    SinceApply { drift: ledger::Drift, applied_at: i64 },
}

/// The site file at `path` against the cluster now, and against the last apply of it through
/// `backend` when `ledger` (a ledger file) holds one. Errors in words; the file's own with
/// file:line: key.
pub async fn check_site(
    client: &berth_proxmox::PveClient,
    path: &std::path::Path,
    ledger: Option<&std::path::Path>,
    backend: &str,
) -> Result<SiteCheck, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let desired = parse(&name, &text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        format!("{} problem(s) in the site file: {}", lines.len(), lines.join("; "))
    })?;
    let applied = match ledger {
        Some(file) => ledger_file::load(file, path, backend)?.0,
        None => None,
    };
    let observed = observe::observe(client)
        .await
        .map_err(|e| format!("reading the cluster: {e}"))?;
    if let Some(l) = applied {
        return Ok(SiteCheck::SinceApply {
            drift: l.drift(&desired, &observed),
            applied_at: l.applied_at,
        });
    }
    let plan = plan(&desired, &observed, &site::file_hash(&text)).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("{name}:{e}")).collect();
        format!("the site file names what does not exist: {}", lines.join("; "))
    })?;
    Ok(SiteCheck::File(plan))
}
