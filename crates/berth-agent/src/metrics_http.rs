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
