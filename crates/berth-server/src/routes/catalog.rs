//! Admission: whether a provider's live agents have room for a machine now. An agent can take
//! one when its heartbeat is within the TTL and its reported free capacity, kept under the
//! admission thresholds, fits the machine.

use berth_api::wire::*;

use crate::AppState;
use crate::config::Admission;
use crate::now_ms;
use crate::problem::{ApiError, ApiResult};

/// What an order of this offering needs from a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub cores: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl From<&OfferingSpec> for Need {
    fn from(s: &OfferingSpec) -> Need {
        Need {
            cores: u64::from(s.cores),
            memory_mib: s.memory_mib,
            disk_gib: s.disk_gib,
        }
    }
}

/// Whether `need` fits into what `c` reports is free, keeping usage under the thresholds:
/// `total × threshold − used ≥ need` in every dimension. An unmetered agent (a backend that
/// cannot tell its capacity) fits anything: its agent is the judge.
pub fn fits(c: &CapacityReport, adm: &Admission, need: Need) -> bool {
    if c.unmetered {
        return true;
    }
    let dim = |total: u64, free: u64, pct: u8, need: u64| {
        let used = i128::from(total) - i128::from(free.min(total));
        i128::from(total) * i128::from(pct) / 100 - used >= i128::from(need)
    };
    dim(c.cores_total, c.cores_free, adm.cores_percent, need.cores)
        && dim(
            c.memory_mib_total,
            c.memory_mib_free,
            adm.memory_percent,
            need.memory_mib,
        )
        && dim(c.disk_gib_total, c.disk_gib_free, adm.disk_percent, need.disk_gib)
}

impl From<&crate::views::InstanceRequest> for Need {
    fn from(r: &crate::views::InstanceRequest) -> Need {
        Need {
            cores: u64::from(r.cores),
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
        }
    }
}

/// The capacity each live agent (heartbeat within the TTL) reported, by provider: read and
/// parsed once per request, then asked per offering.
pub struct Live(pub(crate) Vec<(String, String, CapacityReport)>);

impl Live {
    pub async fn read(st: &AppState, provider_id: Option<&str>) -> ApiResult<Live> {
        let ttl = st.cfg.agents.heartbeat_ttl_seconds as i64 * 1000;
        let now = now_ms();
        let statuses = st.store.agent_statuses(provider_id).await?;
        Ok(Live(
            statuses
                .into_iter()
                .filter(|s| now - s.seen_at <= ttl)
                .filter_map(|s| {
                    Some((
                        s.provider_id,
                        s.agent_id,
                        serde_json::from_value::<Heartbeat>(s.report).ok()?.capacity,
                    ))
                })
                .collect(),
        ))
    }

    /// Whether a live agent of `provider_id` (only `agent`, when named) can take `need` now.
    pub fn can_take(&self, provider_id: &str, agent: Option<&str>, adm: &Admission, need: Need) -> bool {
        self.0
            .iter()
            .any(|(p, a, c)| p == provider_id && agent.is_none_or(|x| x == a) && fits(c, adm, need))
    }
}

/// Refuses (`409 no_capacity`, retryable) what no live agent of the provider (only `agent`,
/// when the work is pinned to one) has room for.
pub async fn require_room(
    st: &AppState,
    provider_id: &str,
    agent: Option<&str>,
    need: Need,
    what: &str,
) -> ApiResult<()> {
    if Live::read(st, Some(provider_id))
        .await?
        .can_take(provider_id, agent, &st.cfg.admission, need)
    {
        Ok(())
    } else {
        let whose = match agent {
            Some(a) => format!("agent {a} is offline or has no"),
            None => "no live agent of this provider has".into(),
        };
        Err(ApiError::conflict(
            "no_capacity",
            format!("{whose} room for {what} now; try again later"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_fits_under_thresholds() {
        let adm = Admission::default(); // 90 / 85 / 90
        let c = CapacityReport {
            cores_total: 10,
            cores_free: 5,
            memory_mib_total: 10_000,
            memory_mib_free: 5_000,
            disk_gib_total: 100,
            disk_gib_free: 50,
            unmetered: false,
        };
        let n = |cores, memory_mib, disk_gib| Need {
            cores,
            memory_mib,
            disk_gib,
        };
        assert!(fits(&c, &adm, n(4, 3_500, 40)));
        assert!(!fits(&c, &adm, n(5, 1, 1)), "10 × 90% − 5 used = 4 cores");
        assert!(!fits(&c, &adm, n(1, 3_501, 1)), "10000 × 85% − 5000 = 3500 MiB");
        assert!(!fits(&c, &adm, n(1, 1, 41)));
        let full = CapacityReport { cores_free: 0, ..c };
        assert!(!fits(&full, &adm, n(1, 1, 1)));
        // A free figure above the total (a bad report) is clamped, not trusted.
        let odd = CapacityReport { cores_free: 50, ..c };
        assert!(!fits(&odd, &adm, n(10, 1, 1)));
    }
}
