//! Prometheus metrics on a local address: `GET /metrics` in the text exposition format. The
//! recorder is process-wide (installed once); the agent's counters, gauges and histograms are
//! named `berth_*` (see docs/agent.md for the list).

use std::net::SocketAddr;
use std::sync::OnceLock;

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (a test harness): keep ours for rendering anyway.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves `/metrics` on `addr` until `stop` fires; returns the bound address.
pub async fn serve(addr: SocketAddr, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let h = handle();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                h.render(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr} (agent.metrics_listen)"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(bound)
}

/// `# HELP` for the agent's own families (the guard describes the backend ones), and the series
/// a first scrape should already find, at zero: a dashboard or an alert on `rate()` needs them
/// before anything happened.
pub fn describe(backends: &[String]) {
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
    describe_counter!(
        "berth_operations_total",
        "Operations this agent finished, by kind and result"
    );
    describe_histogram!(
        "berth_stage_duration_seconds",
        Unit::Seconds,
        "How long each provisioning stage took"
    );
    describe_counter!(
        "berth_lease_renewals_total",
        "Lease renewals, by result (ok, lost, error)"
    );
    describe_counter!("berth_claims_total", "Claims for work, by result (work, none, error)");
    describe_counter!("berth_heartbeats_total", "Heartbeats sent, by result (ok, error)");
    describe_gauge!("berth_drift", "Machines not as the control plane expects them, by kind");
    describe_gauge!(
        "berth_site_drift",
        "Objects of the site file ([drift]) not as the cluster has them (-1: the check failed)"
    );
    describe_counter!(
        "berth_orphans_deleted_total",
        "Orphans deleted after their grace period"
    );
    for kind in ["provision", "start", "stop", "reboot", "reconfigure", "terminate"] {
        for result in ["succeeded", "failed", "interrupted"] {
            counter!("berth_operations_total", "kind" => kind, "result" => result).increment(0);
        }
    }
    for result in ["ok", "lost", "error"] {
        counter!("berth_lease_renewals_total", "result" => result).increment(0);
    }
    for result in ["work", "none", "error"] {
        counter!("berth_claims_total", "result" => result).increment(0);
    }
    for result in ["ok", "error"] {
        counter!("berth_heartbeats_total", "result" => result).increment(0);
    }
    for kind in ["stopped", "running", "missing", "orphan", "kept"] {
        gauge!("berth_drift", "kind" => kind).set(0.0);
    }
    for b in backends {
        counter!("berth_orphans_deleted_total", "backend" => b.clone()).increment(0);
    }
}
