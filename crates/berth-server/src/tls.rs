//! HTTPS for the control plane: the handshake runs in each connection's task ([`crate::serve`]),
//! with the certificate from [`berth_tls::server::ReloadingCert`] (SIGHUP swaps it for new
//! connections; open ones keep theirs). Every response then carries `Strict-Transport-Security`.

/// `Strict-Transport-Security` on every response served over TLS.
pub async fn hsts(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    resp
}
