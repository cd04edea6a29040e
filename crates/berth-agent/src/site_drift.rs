//! The scheduled drift check (`[drift]`): the site file against the Proxmox cluster every
//! interval, the last result in the heartbeat, and a log line when drift appears, the check
//! fails, or the cluster is as the file says again.

use std::sync::{Arc, Mutex};

use berth_api::wire::{SiteChange, SiteDrift};
use berth_proxmox::{ProxmoxConfig, PveClient};
use tokio_util::sync::CancellationToken;

use crate::config::DriftSettings;

pub struct SiteWatch {
    settings: DriftSettings,
    client: PveClient,
    last: Mutex<Option<SiteDrift>>,
}

impl SiteWatch {
    /// A watch over the cluster `px` reaches (the `[drift]` backend's table).
    pub fn new(settings: DriftSettings, px: &ProxmoxConfig) -> anyhow::Result<SiteWatch> {
        let provider = berth_proxmox::ProxmoxProvider::new(px.clone())
            .map_err(|e| anyhow::anyhow!("drift.backend {}: {e}", settings.backend))?;
        Ok(SiteWatch {
            settings,
            client: provider.client().clone(),
            last: Mutex::new(None),
        })
    }

    /// One check now; never fails: what went wrong is in `error`.
    pub async fn check(&self) -> SiteDrift {
        let checked_at = crate::lease::now_ms();
        let (error, changes, more) = match berth_decl::check_site(&self.client, &self.settings.site).await {
            Ok(plan) => {
                let more = plan.changes.len().saturating_sub(SiteDrift::MAX_CHANGES);
                let changes = plan
                    .changes
                    .iter()
                    .take(SiteDrift::MAX_CHANGES)
                    .map(|c| SiteChange {
                        address: clip(&c.addr, 200),
                        change: clip(&berth_decl::render::one_line(c), 300),
                    })
                    .collect();
                (None, changes, more as u32)
            }
            Err(e) => (Some(clip(&e, 2000)), Vec::new(), 0),
        };
        SiteDrift {
            site: self.settings.site.display().to_string(),
            backend: self.settings.backend.clone(),
            checked_at,
            error,
            changes,
            more,
        }
    }

    /// The last check's result, for the heartbeat.
    pub fn last(&self) -> Option<SiteDrift> {
        self.last.lock().expect("site drift lock").clone()
    }

    /// Checks at once, then every interval, until `stop` (a check under way is dropped then).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let now = tokio::select! {
                d = self.check() => d,
                _ = stop.cancelled() => return,
            };
            let before = self.last.lock().expect("site drift lock").replace(now.clone());
            note(before.as_ref(), &now);
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// At most `max` bytes of `s` (whole characters), marked when cut: a heartbeat stays well
/// under the control plane's body limit whatever the site holds.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// How many objects differ (`None`: the check failed).
fn count(d: &SiteDrift) -> Option<usize> {
    d.error.is_none().then_some(d.changes.len() + d.more as usize)
}

/// Logs what changed since the last check: drift appeared (or its count changed), the check
/// failed, or all is as the file says again.
fn note(before: Option<&SiteDrift>, now: &SiteDrift) {
    metrics::gauge!("berth_site_drift", "backend" => now.backend.clone()).set(count(now).map_or(-1.0, |n| n as f64));
    if before.and_then(count) == count(now) && before.map(|b| &b.error) == Some(&now.error) {
        return;
    }
    match (&now.error, count(now)) {
        (Some(e), _) => tracing::warn!(site = %now.site, error = %e, "the site drift check failed"),
        (None, Some(0)) if before.is_some() => {
            tracing::info!(site = %now.site, "the cluster is as the site file says again")
        }
        (None, Some(0)) => tracing::info!(site = %now.site, "the cluster is as the site file says"),
        (None, n) => tracing::warn!(
            site = %now.site,
            objects = n.unwrap_or_default(),
            first = %berth_core::text::printable(&now.changes.first().map(|c| format!("{}: {}", c.address, c.change)).unwrap_or_default()),
            "the cluster has drifted from the site file (berth drift -f SITE shows it all)"
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_keeps_whole_characters_and_says_it_cut() {
        assert_eq!(super::clip("short", 10), "short");
        assert_eq!(super::clip("ééééé", 5), "éé…");
        assert!(super::clip(&"x".repeat(5000), 300).len() <= 300 + "…".len());
    }
}
