//! The heartbeat: version, capacity (configured or backend totals × overcommit − what Berth's
//! machines take, free disk), and each backend's health; the template list with it. The same
//! capacity arithmetic gates a provision on the agent (the host's thresholds are enforced here
//! too, not only declared to the control plane).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::wire::{BackendHealth, CapacityReport, Heartbeat, TemplateReport};
use berth_core::{CheckStatus, ErrorCode, ListFilter, ProviderError};

use crate::agent::{Agent, Backend};
use crate::config::CapacitySection;

/// What a new machine needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    pub cores: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl std::ops::Add for Need {
    type Output = Need;
    fn add(self, o: Need) -> Need {
        Need {
            cores: self.cores + o.cores,
            memory_mib: self.memory_mib + o.memory_mib,
            disk_gib: self.disk_gib + o.disk_gib,
        }
    }
}

impl std::ops::Sub for Need {
    type Output = Need;
    fn sub(self, o: Need) -> Need {
        Need {
            cores: self.cores.saturating_sub(o.cores),
            memory_mib: self.memory_mib.saturating_sub(o.memory_mib),
            disk_gib: self.disk_gib.saturating_sub(o.disk_gib),
        }
    }
}

/// What a backend has, as read from it: totals after overcommit, and the Berth-owned machines
/// it lists on the host those totals are of.
pub(crate) struct Reading {
    cores_total: u64,
    memory_total: u64,
    disk_total: u64,
    /// What the backend says is free on disk, when it says.
    disk_free_cap: Option<u64>,
    /// Each listed machine's instance id and what it takes.
    listed: Vec<(Option<String>, Need)>,
    /// The backend cannot tell its totals and none are configured: nothing is limited.
    unmetered: bool,
}

/// Reads one backend's totals (from the config, else the backend) × overcommit, and what the
/// Berth-owned machines on its node take; disk total and free are capped by what it has.
/// (The totals and the list are asked at once: each is a round trip to the backend.)
pub(crate) async fn read(b: &Backend, cfg: &CapacitySection) -> Result<Reading, ProviderError> {
    let counting = ListFilter {
        without_addresses: true,
        ..Default::default()
    };
    let (host, listed) = tokio::join!(b.provider.capacity(), b.provider.list(counting));
    let host = match host {
        Ok(c) => Some(c),
        Err(e) if cfg.cores.is_some() && cfg.memory_mib.is_some() && cfg.disk_gib.is_some() => {
            tracing::debug!(backend = %b.name, error = %e, "no capacity from the backend; using the configured totals");
            None
        }
        // It cannot tell, by design (no capacity action), and nothing is configured: unmetered
        // (a backend that could tell but failed to is an error below, and unhealthy).
        Err(e)
            if e.code() == ErrorCode::Unsupported
                && cfg.cores.is_none()
                && cfg.memory_mib.is_none()
                && cfg.disk_gib.is_none() =>
        {
            return Ok(Reading {
                cores_total: 0,
                memory_total: 0,
                disk_total: 0,
                disk_free_cap: None,
                listed: Vec::new(),
                unmetered: true,
            });
        }
        Err(e) => {
            return Err(e.context(
                "reading the host's totals (set cores, memory_mib and disk_gib in [capacity] for a backend that cannot tell)",
            ));
        }
    };
    let pick = |configured: Option<u64>, from_host: Option<u64>| configured.or(from_host).unwrap_or(0);
    let scale = |v: u64, f: f64| (v as f64 * f).floor() as u64;
    // Disk is not overcommitted: the configured total can only lower what the host has.
    let mut disk_total = pick(cfg.disk_gib, host.as_ref().map(|h| h.disk_gib_total));
    let mut disk_free_cap = None;
    if let Some(h) = &host
        && h.disk_gib_total > 0
    {
        disk_total = disk_total.min(h.disk_gib_total);
        disk_free_cap = Some(h.disk_gib_free);
    }
    // Totals of one node count only the machines on that node (a cluster lists them all).
    let node = host.as_ref().and_then(|h| h.node.clone());
    let listed = listed?
        .into_iter()
        .filter(|i| node.is_none() || i.node.is_none() || i.node == node)
        .map(|i| {
            (
                i.instance_id.map(|id| id.to_string()),
                Need {
                    cores: u64::from(i.cores.unwrap_or(0)),
                    memory_mib: i.memory_mib.unwrap_or(0),
                    disk_gib: i.disk_gib.unwrap_or(0),
                },
            )
        })
        .collect();
    Ok(Reading {
        cores_total: scale(
            pick(cfg.cores, host.as_ref().map(|h| u64::from(h.cpus_total))),
            cfg.cpu_overcommit,
        ),
        memory_total: scale(
            pick(cfg.memory_mib, host.as_ref().map(|h| h.memory_mib_total)),
            cfg.memory_overcommit,
        ),
        disk_total,
        disk_free_cap,
        listed,
        unmetered: false,
    })
}

/// The capacity left: totals minus the listed machines and the provisions under way, a machine
/// being made counted once (by its reservation) even when it already shows in the list.
pub(crate) fn report(r: &Reading, reserved: &HashMap<String, Need>) -> CapacityReport {
    let used = r
        .listed
        .iter()
        .filter(|(id, _)| id.as_ref().is_none_or(|id| !reserved.contains_key(id)))
        .map(|(_, n)| *n)
        .chain(reserved.values().copied())
        .fold(Need::default(), |a, n| a + n);
    let mut disk_free = r.disk_total.saturating_sub(used.disk_gib);
    if let Some(cap) = r.disk_free_cap {
        disk_free = disk_free.min(cap);
    }
    CapacityReport {
        cores_total: r.cores_total,
        cores_free: r.cores_total.saturating_sub(used.cores),
        memory_mib_total: r.memory_total,
        memory_mib_free: r.memory_total.saturating_sub(used.memory_mib),
        disk_gib_total: r.disk_total,
        disk_gib_free: disk_free,
        unmetered: r.unmetered,
    }
}

/// One backend's capacity now, provisions under way included.
pub async fn capacity(b: &Backend, cfg: &CapacitySection) -> Result<CapacityReport, ProviderError> {
    let r = read(b, cfg).await?;
    Ok(report(&r, &b.reserved()))
}

/// Whether `need` keeps every dimension under its threshold; the error says which is short.
/// An unmetered backend (see [`CapacityReport::unmetered`]) fits anything.
pub fn fits(c: &CapacityReport, cfg: &CapacitySection, need: Need) -> Result<(), String> {
    if c.unmetered {
        return Ok(());
    }
    let dims = [
        ("cores", c.cores_total, c.cores_free, cfg.cpu_threshold, need.cores),
        (
            "memory_mib",
            c.memory_mib_total,
            c.memory_mib_free,
            cfg.memory_threshold,
            need.memory_mib,
        ),
        (
            "disk_gib",
            c.disk_gib_total,
            c.disk_gib_free,
            cfg.storage_threshold,
            need.disk_gib,
        ),
    ];
    for (name, total, free, pct, need) in dims {
        let used = total - free.min(total);
        let limit = i128::from(total) * i128::from(pct) / 100;
        if limit - i128::from(used) < i128::from(need) {
            return Err(format!(
                "the host is full: {name} needs {need}, in use {used} of {total} with a {pct}% threshold"
            ));
        }
    }
    Ok(())
}

fn add(a: CapacityReport, b: CapacityReport) -> CapacityReport {
    CapacityReport {
        cores_total: a.cores_total + b.cores_total,
        cores_free: a.cores_free + b.cores_free,
        memory_mib_total: a.memory_mib_total + b.memory_mib_total,
        memory_mib_free: a.memory_mib_free + b.memory_mib_free,
        disk_gib_total: a.disk_gib_total + b.disk_gib_total,
        disk_gib_free: a.disk_gib_free + b.disk_gib_free,
        unmetered: a.unmetered || b.unmetered,
    }
}

impl Agent {
    /// One heartbeat: capacity summed over the backends (a backend that cannot say counts as
    /// none and is reported unhealthy), each backend's health, the drift reconcile found.
    pub async fn heartbeat_once(&self) -> Heartbeat {
        let mut total = CapacityReport::default();
        let mut backends = Vec::new();
        for b in &self.backends {
            let (mut healthy, mut detail) = b.health();
            match capacity(b, self.capacity_of(b)).await {
                Ok(c) => {
                    if c.unmetered {
                        b.note_unmetered();
                    }
                    total = add(total, c)
                }
                Err(e) => {
                    healthy = false;
                    detail = Some(format!("capacity: {e}"));
                }
            }
            if let Some(open) = b.circuit_open() {
                healthy = false;
                detail = Some(open);
            }
            b.note_health(healthy, detail.as_deref());
            backends.push(BackendHealth {
                name: b.name.clone(),
                kind: b.provider.backend().to_owned(),
                healthy,
                detail,
                reconfigure: b.capabilities().await.map(|c| c.reconfigure),
            });
        }
        Heartbeat {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capacity: total,
            backends,
            drift: self.drift(),
            site_drift: self.site.get().and_then(|w| w.last()),
            pools: self.pools.get().map(|p| p.reports()).unwrap_or_default(),
        }
    }

    /// Runs each backend's own checks and keeps the result for the heartbeat.
    pub async fn check_health(&self) {
        for b in &self.backends {
            let checks = b.provider.validate().await;
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| c.status == CheckStatus::Fail)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            b.set_health(failed.is_empty(), (!failed.is_empty()).then(|| failed.join("; ")));
        }
    }

    pub async fn templates(&self) -> Vec<TemplateReport> {
        let mut out = Vec::new();
        for b in &self.backends {
            let listed = b.provider.list_templates().await;
            self.routes.templates_seen(&b.name, listed.as_ref().ok());
            match listed {
                Ok(ts) => out.extend(ts.into_iter().map(|t| TemplateReport {
                    backend: b.name.clone(),
                    id: t.id,
                    name: t.name,
                    format: t.format,
                    disk_gib: t.disk_gib,
                })),
                Err(e) => tracing::warn!(backend = %b.name, error = %e, "cannot list templates"),
            }
        }
        out
    }

    /// Heartbeats every interval, health checks and templates every health-check interval.
    pub async fn heartbeat_loop(self: Arc<Self>) {
        let every = Duration::from_secs(self.settings.polling.heartbeat_interval_seconds);
        let checks_every = Duration::from_secs(self.settings.polling.health_check_interval_seconds);
        let mut last_checks: Option<tokio::time::Instant> = None;
        loop {
            if last_checks.is_none_or(|t| t.elapsed() >= checks_every) {
                self.check_health().await;
                let ts = self.templates().await;
                if let Err(e) = self.client.report_templates(ts).await {
                    tracing::warn!(error = %e, "cannot report templates");
                }
                last_checks = Some(tokio::time::Instant::now());
            }
            let hb = self.heartbeat_once().await;
            match self.client.heartbeat(&hb).await {
                Ok(()) => metrics::counter!("berth_heartbeats_total", "result" => "ok").increment(1),
                Err(e) => {
                    metrics::counter!("berth_heartbeats_total", "result" => "error").increment(1);
                    tracing::warn!(error = %e, "heartbeat not delivered");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(total: u64, free: u64) -> CapacityReport {
        CapacityReport {
            cores_total: total,
            cores_free: free,
            memory_mib_total: 100_000,
            memory_mib_free: 100_000,
            disk_gib_total: 1000,
            disk_gib_free: 1000,
            unmetered: false,
        }
    }

    #[test]
    fn thresholds_refuse_what_would_cross_them() {
        let cfg = CapacitySection::default(); // cores 90 %
        let need = Need {
            cores: 2,
            memory_mib: 1024,
            disk_gib: 10,
        };
        assert!(fits(&cap(100, 20), &cfg, need).is_ok()); // 80 used + 2 ≤ 90
        let e = fits(&cap(100, 11), &cfg, need).unwrap_err(); // 89 used + 2 > 90
        assert!(e.contains("cores") && e.contains("90%"), "{e}");
        let mut mem = cap(100, 100);
        mem.memory_mib_free = 15_000; // 85 000 used: at the 85 % threshold already
        assert!(fits(&mem, &cfg, need).unwrap_err().contains("memory_mib"));
    }

    #[test]
    fn an_unmetered_backend_fits_anything_and_marks_the_sum() {
        let cfg = CapacitySection::default();
        let huge = Need {
            cores: 1 << 20,
            memory_mib: 1 << 40,
            disk_gib: 1 << 30,
        };
        let open = CapacityReport {
            unmetered: true,
            ..CapacityReport::default()
        };
        assert!(fits(&open, &cfg, huge).is_ok());
        let sum = add(cap(10, 5), open);
        assert!(
            sum.unmetered,
            "one unmetered backend makes the agent's report unmetered"
        );
        assert_eq!((sum.cores_total, sum.cores_free), (10, 5), "the metered figures stay");
        assert!(!add(cap(10, 5), cap(4, 4)).unmetered);
    }
}
