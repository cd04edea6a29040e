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

/// The site file at `path` against the cluster now: the plan that would bring the cluster back
/// to the file (empty: no drift). Errors in words; the file's own with file:line: key.
pub async fn check_site(client: &berth_proxmox::PveClient, path: &std::path::Path) -> Result<Plan, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let desired = parse(&name, &text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        format!("{} problem(s) in the site file: {}", lines.len(), lines.join("; "))
    })?;
    let observed = observe::observe(client)
        .await
        .map_err(|e| format!("reading the cluster: {e}"))?;
    plan(&desired, &observed, &site::file_hash(&text)).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("{name}:{e}")).collect();
        format!("the site file names what does not exist: {}", lines.join("; "))
    })
}
