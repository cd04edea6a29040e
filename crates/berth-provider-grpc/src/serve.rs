//! Serving a provider: where (TCP or a Unix socket), how it is protected (TLS, client
//! certificates, a bearer token), and the rule that plaintext stays on this machine.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use berth_core::{Provider, Secret};
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::{Request, Status};

use crate::pb::provider_server::ProviderServer;
use crate::server::Service;
use crate::tls::{Tls, Verdict};

/// Where the server listens: `HOST:PORT`, or `unix:/path/to.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("expected unix:/path/to.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        s.parse().map(Listen::Tcp).map_err(|_| {
            format!("expected ADDRESS:PORT like 127.0.0.1:7443 or [::1]:7443, or unix:/path/to.sock (got {s:?})")
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The server's certificate chain and key (PEM files), and the CA whose client certificates
/// it accepts (mutual TLS; without it any client that reaches the port may call, unless a
/// token is set).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

pub struct ServeOptions {
    pub listen: Listen,
    pub tls: Option<ServerTls>,
    /// Callers must send `authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve without TLS on {0}: plaintext is only for loopback addresses and Unix sockets (give a certificate and key)"
    )]
    Plaintext(SocketAddr),
    #[error("cannot listen on {listen}: {error}")]
    Bind { listen: String, error: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("serving: {0}")]
    Serve(String),
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Tls(tokio::net::TcpListener, Tls),
    Unix(tokio::net::UnixListener),
}

/// A bound server, not yet serving: its address is known (port 0 resolved).
pub struct Served {
    listener: Listener,
    opts: ServeOptions,
    pub local: Listen,
}

/// Binds the listener, refusing plaintext anywhere but loopback and Unix sockets.
pub async fn bind(opts: ServeOptions) -> Result<Served, ServeError> {
    let bind_err = |e| ServeError::Bind {
        listen: opts.listen.to_string(),
        error: e,
    };
    // The files are read first: a bad certificate is said before anything listens.
    let tls = opts.tls.as_ref().map(Tls::new).transpose()?;
    let (listener, local) = match &opts.listen {
        Listen::Tcp(addr) => {
            if tls.is_none() && !addr.ip().is_loopback() {
                return Err(ServeError::Plaintext(*addr));
            }
            let l = tokio::net::TcpListener::bind(addr).await.map_err(bind_err)?;
            let local = Listen::Tcp(l.local_addr().map_err(bind_err)?);
            match tls {
                Some(tls) => (Listener::Tls(l, tls), local),
                None => (Listener::Tcp(l), local),
            }
        }
        Listen::Unix(path) => {
            if tls.is_some() {
                return Err(ServeError::Tls(
                    "TLS is for TCP: a Unix socket is protected by its file permissions".into(),
                ));
            }
            // A socket left by a server that is gone is replaced; one that answers is in use.
            if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
            (Listener::Unix(l), Listen::Unix(path.clone()))
        }
    };
    Ok(Served { listener, opts, local })
}

/// The client certificate's verdict (mutual TLS), then the token, in constant time.
fn caller_check(token: Option<Secret>) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        if let Some(Verdict(Err(why))) = req.extensions().get::<Verdict>() {
            return Err(crate::status::to_status(&berth_core::ProviderError::unauthorized(
                why.clone(),
            )));
        }
        let Some(want) = &token else { return Ok(req) };
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(got.as_bytes().ct_eq(want.expose().as_bytes())) {
            Ok(req)
        } else {
            Err(crate::status::to_status(&berth_core::ProviderError::unauthorized(
                "missing or wrong bearer token (send authorization: Bearer <token>)",
            )))
        }
    }
}

impl Served {
    /// Serves `provider` until `shutdown` completes.
    pub async fn run(
        self,
        provider: Arc<dyn Provider>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let mut builder = Server::builder();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ProviderServer<Service>>().await;
        let service = ProviderServer::with_interceptor(Service::new(provider), caller_check(self.opts.token.clone()));
        let router = builder.add_service(health_service).add_service(service);
        let done = match self.listener {
            Listener::Tcp(l) => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown)
                    .await
            }
            Listener::Tls(l, tls) => {
                let (conns, _accepting) = crate::tls::incoming(l, tls);
                router.serve_with_incoming_shutdown(conns, shutdown).await
            }
            Listener::Unix(l) => {
                router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown)
                    .await
            }
        };
        if let Listen::Unix(p) = &self.local {
            let _ = std::fs::remove_file(p);
        }
        done.map_err(|e| ServeError::Serve(berth_core::error::error_chain(&e)))
    }
}
