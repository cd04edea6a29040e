//! Declarative mode: a Proxmox VE site described in a file (`site.toml`, or the seed's JSON
//! shape), planned against the live cluster (`plan`), applied exactly as planned and only if
//! nothing it touches changed since (`apply`), and written back out from a cluster
//! (`export`). This slice covers storage definitions, pools, node network interfaces, backup
//! jobs and the asserted cluster; guests and HA come next.
//!
//! Layers: `site` (file → desired objects), `plan` (pure: desired × observed → changes),
//! `observe`/`apply` (the PVE client), `export` (observed → file).

pub mod apply;
pub mod checkpoint;
mod doc;
pub mod export;
mod fields;
mod fields_table;
mod ha;
pub mod model;
pub mod observe;
pub mod plan;
pub mod render;
pub mod site;
mod vm;
mod vm_apply;

pub use model::{Desired, Kind, Object, Observed};
pub use plan::{Action, Change, Plan, PlanError, plan};
pub use site::{SiteError, parse};
