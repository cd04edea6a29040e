//! Serving a provider: where (TCP or a Unix socket), how it is protected (TLS, client
//! certificates, a bearer token), and the rule that plaintext stays on this machine.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

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
    /// Serve TCP with neither a token nor client certificates: anyone who reaches the port
    /// may create, delete and run commands in guests. Off unless asked for by name.
    pub allow_unauthenticated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve without TLS on {0}: plaintext is only for loopback addresses and Unix sockets (give a certificate and key)"
    )]
    Plaintext(SocketAddr),
    #[error(
        "refusing to serve {0} to anyone who reaches it: set a bearer token or client certificates (a client CA), serve on a Unix socket, or allow it explicitly"
    )]
    Unauthenticated(String),
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

impl Served {
    /// On SIGHUP (`systemctl reload`), reads the certificate and key files again: new
    /// connections get what they hold, open ones keep theirs; a pair that does not load keeps
    /// the one in use (and says why on stderr). Without TLS the signal is taken and said to
    /// have nothing to reload, rather than end the server.
    pub fn reload_certificate_on_hangup(&self) -> Result<(), ServeError> {
        let cert = match &self.listener {
            Listener::Tls(_, tls) => Some(tls.certificate()),
            _ => None,
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| ServeError::Serve(format!("cannot watch for SIGHUP: {e}")))?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match cert.as_ref().map(|c| c.reload()) {
                    Some(Ok(fp)) => eprintln!("SIGHUP: serving the certificate sha256:{fp} to new connections"),
                    Some(Err(e)) => eprintln!("SIGHUP: keeping the certificate in use: {e}"),
                    None => eprintln!("SIGHUP: no TLS certificate to reload"),
                }
            }
        });
        Ok(())
    }
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
            let client_ca = opts.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
            if opts.token.is_none() && !client_ca && !opts.allow_unauthenticated {
                return Err(ServeError::Unauthenticated(addr.to_string()));
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
            // A socket left by a server that is gone is replaced; one that answers is in use,
            // and anything that is not a socket is never touched.
            let stale = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
            if stale && std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
            // Only this user may connect: the socket's permissions are its protection.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
            (Listener::Unix(l), Listen::Unix(path.clone()))
        }
    };
    Ok(Served { listener, opts, local })
}

/// The client certificate's verdict (mutual TLS: a connection without one is refused too),
/// then the token, in constant time.
fn caller_check(token: Option<Secret>, mtls: bool) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let refuse = |why: String| Err(crate::status::to_status(&berth_core::ProviderError::unauthorized(why)));
        match req.extensions().get::<Verdict>() {
            Some(Verdict(Err(why))) => return refuse(why.clone()),
            None if mtls => return refuse("this server requires a client certificate".into()),
            _ => {}
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
        // Keep-alive pings notice a client that vanished without closing its connection, so
        // its create is cancelled rather than left to race its retry.
        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(15)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        let mtls = self.opts.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ProviderServer<Service>>().await;
        let service =
            ProviderServer::with_interceptor(Service::new(provider), caller_check(self.opts.token.clone(), mtls));
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
