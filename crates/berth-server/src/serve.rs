//! The connection loop under the API and the dashboard, bounded so that no client can starve
//! others (`[limits]`): a request head — and, on a kept-alive connection, the next one — must
//! arrive within `header_timeout_seconds`; a body whole within `body_timeout_seconds` of its
//! head; a response other than an event stream must be sent within `response_timeout_seconds`.
//! At most `max_connections` are open (and never more than the file limit leaves room for): at
//! the cap, a new connection closes the oldest one with no request in flight, and is itself
//! closed only when every open connection is busy. TLS handshakes run in the connection's own
//! task with a time limit. On shutdown, open connections finish what they are doing, for at
//! most [`GRACE`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::time::Sleep;
use tower::ServiceExt as _;

use crate::access::Peer;
use crate::config::Limits;

/// How long open connections get to finish when the server stops.
pub const GRACE: Duration = Duration::from_secs(10);
/// A TLS handshake must finish within this.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// File descriptors kept for the database, logs and files beside the connections.
const FD_RESERVE: usize = 64;

/// The bounds of one server, from `[limits]`.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub response_timeout: Duration,
}

impl Bounds {
    pub fn from_config(l: &Limits) -> Bounds {
        let max_connections = match open_file_limit() {
            Some(fds) if fds.saturating_sub(FD_RESERVE) < l.max_connections => {
                let cap = fds.saturating_sub(FD_RESERVE).max(16);
                tracing::warn!(
                    configured = l.max_connections,
                    open_file_limit = fds,
                    max_connections = cap,
                    "limits.max_connections is above what the open-file limit allows; raise LimitNOFILE (ulimit -n)"
                );
                cap
            }
            _ => l.max_connections,
        };
        Bounds {
            max_connections,
            header_timeout: Duration::from_secs(l.header_timeout_seconds),
            body_timeout: Duration::from_secs(l.body_timeout_seconds),
            response_timeout: Duration::from_secs(l.response_timeout_seconds),
        }
    }
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits`.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The body of a request or response went past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the {0} did not arrive within its time limit")]
pub struct TimedOut(&'static str);

/// Whether `e` (or what caused it) is a [`TimedOut`] request body.
pub fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<TimedOut>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// One open connection.
struct Conn {
    id: u64,
    in_flight: AtomicUsize,
    evict: Notify,
}

/// Open connections, oldest first.
#[derive(Default)]
struct Table {
    open: Mutex<VecDeque<Arc<Conn>>>,
    next: AtomicU64,
}

impl Table {
    /// Room for a new connection, closing the oldest idle one at the cap; `None` when every
    /// open connection is busy.
    fn admit(&self, cap: usize) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().expect("connection table");
        if open.len() >= cap {
            let idle = open.iter().position(|c| c.in_flight.load(Ordering::SeqCst) == 0)?;
            if let Some(victim) = open.remove(idle) {
                victim.evict.notify_one();
            }
        }
        let c = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicUsize::new(0),
            evict: Notify::new(),
        });
        open.push_back(c.clone());
        Some(c)
    }

    fn close(&self, id: u64) {
        self.open.lock().expect("connection table").retain(|c| c.id != id);
    }
}

/// A request in flight on a connection, until its response body is sent or dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn enter(c: &Arc<Conn>) -> InFlight {
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(c.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A body with a deadline for the whole of it, holding its request's [`InFlight`] mark.
struct Bounded<B> {
    inner: B,
    deadline: Option<Pin<Box<Sleep>>>,
    what: &'static str,
    _in_flight: Option<InFlight>,
}

impl<B> http_body::Body for Bounded<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(f) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        if let Some(d) = &mut this.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(TimedOut(this.what).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) within `bounds` until `stop` resolves, then
/// lets open connections finish for at most [`GRACE`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    bounds: Bounds,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let table = Arc::new(Table::default());
    let (stopping, stopped) = watch::channel(false);
    let tasks = tokio_util::task::TaskTracker::new();
    let bounds = Arc::new(bounds);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Some(conn) = table.admit(bounds.max_connections) else {
            tracing::warn!(%peer, max_connections = bounds.max_connections, "connection refused: every open connection is busy");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (table, app, bounds, tls, stopped) =
            (table.clone(), app.clone(), bounds.clone(), tls.clone(), stopped.clone());
        tasks.spawn(async move {
            let id = conn.id;
            match tls {
                None => connection(stream, peer, conn, app, &bounds, stopped).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream));
                    tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => connection(s, peer, conn, app, &bounds, stopped).await,
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        },
                        _ = conn.evict.notified() => tracing::debug!(%peer, "connection closed during its handshake to make room"),
                    }
                }
            }
            table.close(id);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// One HTTP/1.1 connection until it ends, is evicted while idle, or the server stops.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    conn: Arc<Conn>,
    app: Router,
    bounds: &Bounds,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (body_timeout, response_timeout) = (bounds.body_timeout, bounds.response_timeout);
    let marks = conn.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = InFlight::enter(&marks);
        let app = app.clone();
        async move {
            let mut req = req.map(|b| {
                // No timer for a request without a body (most GETs).
                let empty = http_body::Body::is_end_stream(&b);
                Body::new(Bounded {
                    inner: b,
                    deadline: (!empty).then(|| Box::pin(tokio::time::sleep(body_timeout))),
                    what: "request body",
                    _in_flight: None,
                })
            });
            req.extensions_mut().insert(ConnectInfo(Peer(peer)));
            let resp = app.oneshot(req).await.unwrap_or_else(|e: Infallible| match e {});
            let stream = resp
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            Ok::<_, Infallible>(resp.map(|b| {
                Body::new(Bounded {
                    inner: b,
                    // Event streams carry their own lifetime (limits.stream_max_seconds).
                    deadline: (!stream).then(|| Box::pin(tokio::time::sleep(response_timeout))),
                    what: "response",
                    _in_flight: Some(in_flight),
                })
            }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // Heads past 64 KiB are cut by hyper (431, no body); below, `guard` answers with a problem.
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_buf_size(64 * 1024);
    let served = http.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(served);
    let grace = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(grace);
    let mut draining = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = conn.evict.notified(), if !draining => {
                if conn.in_flight.load(Ordering::SeqCst) == 0 {
                    tracing::debug!(%peer, "idle connection closed to make room");
                    return;
                }
            }
            _ = stopped.wait_for(|s| *s), if !draining => {
                served.as_mut().graceful_shutdown();
                grace.as_mut().reset(tokio::time::Instant::now() + GRACE);
                draining = true;
            }
            _ = grace.as_mut(), if draining => {
                tracing::debug!(%peer, "connection cut at shutdown");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let t = Table::default();
        let a = t.admit(2).unwrap();
        let b = t.admit(2).unwrap();
        let busy = InFlight::enter(&a);
        let c = t.admit(2).unwrap();
        // `a` is busy, so `b` was closed.
        let ids: Vec<u64> = t.open.lock().unwrap().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![a.id, c.id]);
        let _busy_c = InFlight::enter(&c);
        assert!(t.admit(2).is_none(), "every connection busy: the new one is refused");
        drop(busy);
        let d = t.admit(2).unwrap();
        let ids: Vec<u64> = t.open.lock().unwrap().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![c.id, d.id]);
        let _ = b;
    }

    #[test]
    fn the_file_limit_is_read() {
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }
}
