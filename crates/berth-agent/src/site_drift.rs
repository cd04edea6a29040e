//! The scheduled drift check (`[drift]`): the Proxmox cluster every interval against the last
//! apply of the site file (with the ledger, `[drift] audit`: what changed outside Berth), or
//! against the file itself (nothing applied from it yet, or no ledger kept); the last result in
//! the heartbeat, and a log line when drift appears, the check fails, or it is gone again.

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
        let s = &self.settings;
        let found = berth_decl::check_site(&self.client, &s.site, s.ledger.as_deref(), &s.backend).await;
        let (error, applied_at, all) = match found {
            Ok(berth_decl::SiteCheck::File(plan)) => {
                let all = plan
                    .changes
                    .iter()
                    .map(|c| (c.addr.clone(), berth_decl::render::one_line(c)))
                    .collect();
                (None, None, all)
            }
            Ok(berth_decl::SiteCheck::SinceApply { drift, applied_at }) => {
                (None, Some(applied_at), since_apply(&drift))
            }
            Err(e) => (Some(clip(&e, 2000)), None, Vec::new()),
        };
        let more = all.len().saturating_sub(SiteDrift::MAX_CHANGES);
        let changes = all
            .into_iter()
            .take(SiteDrift::MAX_CHANGES)
            .map(|(addr, change)| SiteChange {
                address: clip(&addr, 200),
                change: clip(&change, 300),
            })
            .collect();
        SiteDrift {
            site: s.site.display().to_string(),
            backend: s.backend.clone(),
            checked_at,
            error,
            applied_at,
            changes,
            more: more as u32,
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
            note(before.as_ref(), &now, self.settings.ledger.as_deref());
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// What changed outside Berth since the last apply, one line per object: its fields
/// (`cores: "2" → "4"`), or that it is gone from the cluster. The file's edits not applied yet
/// are not drift.
fn since_apply(d: &berth_decl::ledger::Drift) -> Vec<(String, String)> {
    let mut by_addr: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for f in &d.outside {
        by_addr.entry(&f.addr).or_default().push(f.change());
    }
    for a in &d.gone {
        by_addr.entry(a).or_default().push("gone from the cluster".into());
    }
    by_addr
        .into_iter()
        .map(|(addr, parts)| (addr.to_owned(), parts.join(", ")))
        .collect()
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
/// failed, or all is as the file says again; and when a ledger is kept (`ledger`) but holds no
/// apply of this file yet, that the check is against the file.
fn note(before: Option<&SiteDrift>, now: &SiteDrift, ledger: Option<&std::path::Path>) {
    metrics::gauge!("berth_site_drift", "backend" => now.backend.clone()).set(count(now).map_or(-1.0, |n| n as f64));
    if let Some(ledger) = ledger
        && now.error.is_none()
        && now.applied_at.is_none()
        && before.is_none_or(|b| b.applied_at.is_some() || b.error.is_some())
    {
        tracing::info!(
            site = %now.site,
            backend = %now.backend,
            ledger = %ledger.display(),
            "no apply of the site file through this backend is in the ledger yet: checking the cluster against the file itself"
        );
    }
    if before.and_then(count) == count(now) && before.map(|b| &b.error) == Some(&now.error) {
        return;
    }
    let (same, drifted) = match now.applied_at {
        Some(_) => (
            "the cluster is as the last apply of the site file left it",
            "the cluster changed outside Berth since the last apply of the site file (berth drift -f SITE shows it all)",
        ),
        None => (
            "the cluster is as the site file says",
            "the cluster has drifted from the site file (berth drift -f SITE shows it all)",
        ),
    };
    match (&now.error, count(now)) {
        (Some(e), _) => tracing::warn!(site = %now.site, error = %e, "the site drift check failed"),
        (None, Some(0)) if before.is_some() => tracing::info!(site = %now.site, "{same} again"),
        (None, Some(0)) => tracing::info!(site = %now.site, "{same}"),
        (None, n) => tracing::warn!(
            site = %now.site,
            objects = n.unwrap_or_default(),
            first = %berth_core::text::printable(&now.changes.first().map(|c| format!("{}: {}", c.address, c.change)).unwrap_or_default()),
            "{drifted}"
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
