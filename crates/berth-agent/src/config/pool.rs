//! `[[pool]]`: warm pools. Each keeps `ready` machines of one template and size made ahead of
//! orders on one backend, stopped (never booted) or running; an order of that template and size
//! takes one instead of waiting for a clone.

use serde::Deserialize;

use berth_core::{PoolMark, PoolMode, VmSpec};

use super::backend::BackendConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    name: String,
    backend: Option<String>,
    template: Option<String>,
    cores: u32,
    memory_mib: u64,
    disk_gib: u64,
    ready: u32,
    #[serde(default)]
    mode: PoolMode,
    #[serde(default)]
    drain_on_shutdown: bool,
}

/// One pool, settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub name: String,
    pub backend: String,
    /// The template its machines are made from (`None`: the backend's default).
    pub template: Option<String>,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// How many machines to keep ready.
    pub ready: u32,
    pub mode: PoolMode,
    /// Delete the ready machines when the agent stops.
    pub drain_on_shutdown: bool,
}

/// At most this many machines kept ready per pool.
pub const MAX_READY: u32 = 100;

impl PoolSettings {
    /// The definition's key: what its machines were made to (template, size, mode). A machine
    /// with another key is drained and replaced, never handed out.
    pub fn key(&self) -> String {
        // FNV-1a: stable across versions and platforms, which is all a key needs.
        let text = format!(
            "{}|{}|{}|{}|{}",
            self.template.as_deref().unwrap_or(""),
            self.cores,
            self.memory_mib,
            self.disk_gib,
            self.mode
        );
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:08x}", h >> 32)
    }

    pub fn mark(&self) -> PoolMark {
        PoolMark::new(&self.name, &self.key()).expect("a settled pool's name is valid")
    }

    /// Whether an order for `spec` can take one of its machines: same template and size, the
    /// default user. A stopped machine may grow its disk (its first boot grows the file system);
    /// a running one (booted already, its network up) takes only its own size and DHCP.
    pub fn fits(&self, spec: &VmSpec) -> bool {
        let disk = match self.mode {
            PoolMode::Stopped => spec.disk_gib >= self.disk_gib,
            PoolMode::Running => spec.disk_gib == self.disk_gib,
        };
        spec.template == self.template
            && spec.kind == berth_core::GuestKind::Vm
            && spec.cores == self.cores
            && spec.memory_mib == self.memory_mib
            && disk
            && spec.user.is_none()
            && (self.mode == PoolMode::Stopped || spec.network == berth_core::NetworkSpec::default())
    }
}

pub(crate) fn settle(raw: Vec<RawPool>, backends: &[BackendConfig]) -> Result<Vec<PoolSettings>, (String, String)> {
    let mut out: Vec<PoolSettings> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let err = |key: &str, m: String| (format!("pool[{i}].{key}"), m);
        PoolMark::new(&p.name, "k").map_err(|e| err("name", e.to_string()))?;
        if out.iter().any(|o| o.name == p.name) {
            return Err(err("name", format!("two pools are called {:?}", p.name)));
        }
        let backend = match &p.backend {
            Some(name) => backends
                .iter()
                .find(|b| &b.name == name)
                .map(|b| b.name.clone())
                .ok_or_else(|| err("backend", format!("no backend named {name:?}")))?,
            None if backends.len() == 1 => backends[0].name.clone(),
            None => return Err(err("backend", "name the backend the pool's machines live on".into())),
        };
        if !(1..=VmSpec::MAX_CORES).contains(&p.cores) {
            return Err(err(
                "cores",
                format!("expected 1 to {} (got {})", VmSpec::MAX_CORES, p.cores),
            ));
        }
        if p.memory_mib < VmSpec::MIN_MEMORY_MIB {
            return Err(err(
                "memory_mib",
                format!("expected at least {} (got {})", VmSpec::MIN_MEMORY_MIB, p.memory_mib),
            ));
        }
        if p.disk_gib == 0 {
            return Err(err("disk_gib", "expected at least 1 (got 0)".into()));
        }
        if p.ready > MAX_READY {
            return Err(err("ready", format!("expected 0 to {MAX_READY} (got {})", p.ready)));
        }
        if let Some(t) = &p.template
            && t.trim().is_empty()
        {
            return Err(err("template", "must not be empty".into()));
        }
        out.push(PoolSettings {
            name: p.name,
            backend,
            template: p.template,
            cores: p.cores,
            memory_mib: p.memory_mib,
            disk_gib: p.disk_gib,
            ready: p.ready,
            mode: p.mode,
            drain_on_shutdown: p.drain_on_shutdown,
        });
    }
    Ok(out)
}
