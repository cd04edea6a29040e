//! The access log: one line per request to the API or the dashboard (target `berth::access`,
//! journald-friendly): method, route (the matched pattern, never ids or query strings), status,
//! duration, the caller's audit name, and the client's address (behind `api.trusted_proxies`,
//! the address the proxies say they forwarded for). Never a token, cookie or body.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The connection's peer address, on plain and TLS listeners alike.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The client's address as [`log`] worked it out (behind trusted proxies: the one they
/// forwarded for), for the layers inside it (the rate limits).
#[derive(Clone, Copy, Debug)]
pub struct Client(pub IpAddr);

/// Where authentication writes who the caller turned out to be, for the access log.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<Mutex<Option<String>>>);

/// Records the caller of the request whose extensions these are (no slot: nothing to do).
pub fn note_caller(extensions: &axum::http::Extensions, actor: String) {
    if let Some(CallerSlot(s)) = extensions.get::<CallerSlot>() {
        *s.lock().expect("caller slot") = Some(actor);
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// `10.0.0.1` or `10.0.0.0/8` (IPv6 alike); errors name the entry.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{e:?} is not an IP address or network (10.0.0.1, 10.0.0.0/8, fd00::/8)"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client: the peer, or, when the peer is a trusted proxy, the nearest address in
    /// `X-Forwarded-For` that is not one of ours (walking from the right, as each proxy appends).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = forwarded_for
            .unwrap_or_default()
            .split(',')
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }
}

pub async fn log(State(proxies): State<Arc<TrustedProxies>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "-".into());
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.0.ip());
    let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let client = peer.map(|p| proxies.client(p, forwarded));
    if let Some(c) = client {
        req.extensions_mut().insert(Client(c));
    }
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let resp = next.run(req).await;
    let client = client.map(|c| c.to_string());
    let caller = slot.0.lock().expect("caller slot").take();
    tracing::info!(
        target: "berth::access",
        method = %method,
        route = %route,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        caller = %caller.as_deref().unwrap_or("-"),
        client = %client.as_deref().unwrap_or("-"),
        "request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwarded_it() {
        let t = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not a proxy of ours: its header is ignored.
        assert_eq!(t.client(ip("198.51.100.4"), Some("203.0.113.9")), ip("198.51.100.4"));
        // Through two of ours: the first address that is not ours, from the right.
        assert_eq!(
            t.client(ip("127.0.0.1"), Some("1.2.3.4, 203.0.113.9, 10.1.1.1")),
            ip("203.0.113.9")
        );
        assert_eq!(t.client(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(t.client(ip("127.0.0.1"), Some("10.2.2.2")), ip("10.2.2.2"));
        let e = TrustedProxies::parse(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
    }
}
