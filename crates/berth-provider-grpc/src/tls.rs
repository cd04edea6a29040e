//! The server's TLS, done here rather than by tonic so that a refused client certificate is
//! *said*. In TLS 1.3 a client whose certificate the server refuses in the handshake learns
//! only "connection closed". So the handshake takes any certificate the client proves it
//! holds (the signature over the handshake is still checked), the chain is then judged
//! against the client CA, and every call on a connection it does not vouch for is refused
//! with why: none sent, an unknown CA, expired. The operator's log says the same.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::server::Connected;

use crate::serve::{ServeError, ServerTls};

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connection's client certificate is worth: `Err(why)` refuses every call on it.
#[derive(Debug, Clone)]
pub(crate) struct Verdict(pub Result<(), String>);

/// Accepts any certificate in the handshake (its signature over the handshake still checked);
/// the chain is judged afterwards by [`Tls::judge`].
#[derive(Debug)]
struct Lenient(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Lenient {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    /// The served certificate, which [`Tls::certificate`] hands out for reloading.
    cert: Arc<berth_tls::server::ReloadingCert>,
    /// The client CA's verifier, when client certificates are required.
    clients: Option<Arc<dyn ClientCertVerifier>>,
}

fn tls_err(file: &Path, e: impl std::fmt::Display) -> ServeError {
    ServeError::Tls(format!("{}: {e}", file.display()))
}

impl Tls {
    pub(crate) fn new(t: &ServerTls) -> Result<Tls, ServeError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert = berth_tls::server::ReloadingCert::open(&t.cert_file, &t.key_file)
            .map_err(|(key, m)| ServeError::Tls(format!("{key}: {m}")))?;
        let clients = match &t.client_ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| tls_err(ca, e))?;
                let mut roots = rustls::RootCertStore::empty();
                for c in berth_tls::parse_pem_certs(&pem).map_err(|e| tls_err(ca, e))? {
                    roots.add(c).map_err(|e| tls_err(ca, e))?;
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tls_err(ca, e))?;
                Some(v)
            }
            None => None,
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServeError::Tls(e.to_string()))?;
        let builder = match &clients {
            Some(v) => builder.with_client_cert_verifier(Arc::new(Lenient(v.clone()))),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
            clients,
        })
    }

    pub(crate) fn certificate(&self) -> Arc<berth_tls::server::ReloadingCert> {
        self.cert.clone()
    }

    /// The client CA's word on the certificate the client sent.
    fn judge(&self, stream: &tokio_rustls::server::TlsStream<TcpStream>) -> Verdict {
        let Some(v) = &self.clients else {
            return Verdict(Ok(()));
        };
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        let Some((leaf, rest)) = chain.split_first() else {
            return Verdict(Err(
                "no client certificate was sent: this server requires one signed by its client CA \
                 (set client_cert and client_key)"
                    .into(),
            ));
        };
        Verdict(
            v.verify_client_cert(leaf, rest, UnixTime::now())
                .map(|_| ())
                .map_err(|e| format!("the client certificate was refused: {e}")),
        )
    }
}

/// A connection after its handshake, with its verdict.
pub(crate) struct TlsConn {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    verdict: Verdict,
}

impl Connected for TlsConn {
    type ConnectInfo = Verdict;
    fn connect_info(&self) -> Verdict {
        self.verdict.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The listener's connections after their handshakes (each in its own task, so a slow client
/// holds up nobody); the accepting stops when the handle is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Tls,
) -> (ReceiverStream<io::Result<TlsConn>>, AbortOnDropHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let tls = Arc::new(tls);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move { handshake(&tls, tcp, peer, tx).await });
        }
    });
    (ReceiverStream::new(rx), AbortOnDropHandle::new(task))
}

async fn handshake(tls: &Tls, tcp: TcpStream, peer: SocketAddr, tx: mpsc::Sender<io::Result<TlsConn>>) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(tcp)).await {
        Ok(Ok(io)) => {
            let verdict = tls.judge(&io);
            if let Err(why) = &verdict.0 {
                tracing::warn!(%peer, "refusing the calls of a client: {why}");
            }
            let _ = tx.send(Ok(TlsConn { io, verdict })).await;
        }
        Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::warn!(%peer, "TLS handshake did not finish within {HANDSHAKE_TIMEOUT:?}"),
    }
}
