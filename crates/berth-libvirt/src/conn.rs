//! The libvirt connection: opened lazily, shared, reopened after it dies. libvirt calls block,
//! so each runs on tokio's blocking pool; libvirt errors become `ProviderError`s by class.

use std::sync::{Arc, Mutex, Once};

use berth_core::ProviderError;
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};

/// A libvirt URI and the connection to it. Cheap to clone (shared).
#[derive(Clone)]
pub struct Libvirt {
    inner: Arc<Inner>,
}

struct Inner {
    uri: String,
    conn: Mutex<Option<Arc<Connect>>>,
}

static QUIET: Once = Once::new();

impl Libvirt {
    pub fn new(uri: &str) -> Libvirt {
        // libvirt prints every error to stderr by default; Berth reports them itself.
        QUIET.call_once(virt::error::clear_error_callback);
        Libvirt {
            inner: Arc::new(Inner {
                uri: uri.to_owned(),
                conn: Mutex::new(None),
            }),
        }
    }

    pub fn uri(&self) -> &str {
        &self.inner.uri
    }
}

impl Inner {
    /// The open connection, (re)opened when needed. Blocking: runs on the blocking pool.
    fn connection(&self) -> Result<Arc<Connect>, ProviderError> {
        let mut slot = self.conn.lock().expect("libvirt connection lock");
        if let Some(c) = slot.as_ref()
            && c.is_alive().unwrap_or(false)
        {
            return Ok(c.clone());
        }
        let c = Connect::open(Some(&self.uri)).map_err(|e| {
            let why = format!(
                "cannot connect to libvirt at {}: {} (is libvirtd running, and may this user use it?)",
                redact_uri(&self.uri),
                e.message()
            );
            match map_err(e) {
                ProviderError::Unauthorized { .. } => ProviderError::unauthorized(why),
                _ => ProviderError::unavailable(why),
            }
        })?;
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }
}

impl Libvirt {
    /// Runs `f` with the connection on the blocking pool. `what` prefixes any error.
    pub async fn call<T, F>(&self, what: &str, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, ProviderError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let what = what.to_owned();
        let res = tokio::task::spawn_blocking(move || {
            let conn = inner.connection()?;
            let res = f(&conn);
            if let Err(ProviderError::Unavailable { .. }) = &res
                && !conn.is_alive().unwrap_or(false)
            {
                // The daemon went away: reconnect on the next call.
                *inner.conn.lock().expect("libvirt connection lock") = None;
            }
            res
        })
        .await
        .map_err(|e| ProviderError::internal(format!("{what}: libvirt call panicked: {e}")))?;
        res.map_err(|e| e.context(&what))
    }
}

/// Whether a libvirt error says the object does not exist.
pub fn is_missing(e: &VirtError) -> bool {
    e.code().is_any(vec![
        ErrorNumber::NoDomain,
        ErrorNumber::NoStoragePool,
        ErrorNumber::NoStorageVolume,
        ErrorNumber::NoDomainMetadata,
    ])
}

/// A libvirt error as Berth's taxonomy.
pub fn map_err(e: VirtError) -> ProviderError {
    let msg = e.message().to_owned();
    // SystemError is any failed system call: a lost connection only when the RPC layer says so.
    let transport = e.domain().is_any(vec![ErrorDomain::Rpc, ErrorDomain::Remote]);
    match e.code().known() {
        Some(ErrorNumber::SystemError) if !transport => ProviderError::internal(msg),
        Some(
            ErrorNumber::AuthFailed
            | ErrorNumber::AuthCancelled
            | ErrorNumber::AccessDenied
            | ErrorNumber::OperationDenied,
        ) => ProviderError::unauthorized(msg),
        Some(ErrorNumber::NoDomain | ErrorNumber::NoStoragePool | ErrorNumber::NoStorageVolume) => {
            ProviderError::not_found(msg)
        }
        Some(ErrorNumber::OperationInvalid | ErrorNumber::DomExist) => ProviderError::conflict(msg),
        Some(
            ErrorNumber::NoConnect
            | ErrorNumber::Rpc
            | ErrorNumber::SystemError
            | ErrorNumber::AgentUnresponsive
            | ErrorNumber::OperationTimeout,
        ) => ProviderError::unavailable(msg),
        Some(ErrorNumber::NoSupport) => ProviderError::unsupported(msg),
        Some(ErrorNumber::XmlError | ErrorNumber::InvalidArg) => {
            ProviderError::internal(format!("libvirt refused: {msg}"))
        }
        _ => ProviderError::internal(msg),
    }
}

/// The URI without its query (which may carry credentials for some transports).
pub fn redact_uri(uri: &str) -> &str {
    uri.split_once('?').map(|(u, _)| u).unwrap_or(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_queries_are_hidden() {
        assert_eq!(redact_uri("qemu+tcp://h/system?password=x"), "qemu+tcp://h/system");
        assert_eq!(redact_uri("qemu:///system"), "qemu:///system");
    }

    #[tokio::test]
    async fn test_driver_answers_and_bad_uris_are_unavailable() {
        let lv = Libvirt::new("test:///default");
        let kind = lv.call("driver", |c| c.driver_type().map_err(map_err)).await.unwrap();
        assert_eq!(kind, "TEST");
        let bad = Libvirt::new("nosuchdriver:///x");
        let err = bad.call("x", |_| Ok(())).await.unwrap_err();
        assert_eq!(err.code(), berth_core::ErrorCode::Unavailable, "{err}");
        assert!(err.to_string().contains("nosuchdriver:///x"), "{err}");
    }
}
