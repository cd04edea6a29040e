//! The libvirt connection: opened lazily, shared, reopened after it dies. libvirt calls block,
//! so each runs on tokio's blocking pool; libvirt errors become `ProviderError`s by class.

use std::sync::{Arc, Mutex, Once};

use berth_core::ProviderError;
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};

/// A libvirt URI and the connection to it.
pub struct Libvirt {
    uri: String,
    conn: Mutex<Option<Arc<Connect>>>,
}

static QUIET: Once = Once::new();

impl Libvirt {
    pub fn new(uri: &str) -> Libvirt {
        // libvirt prints every error to stderr by default; Berth reports them itself.
        QUIET.call_once(virt::error::clear_error_callback);
        Libvirt {
            uri: uri.to_owned(),
            conn: Mutex::new(None),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn connection(&self) -> Result<Arc<Connect>, ProviderError> {
        let mut slot = self.conn.lock().expect("libvirt connection lock");
        if let Some(c) = slot.as_ref()
            && c.is_alive().unwrap_or(false)
        {
            return Ok(c.clone());
        }
        let c = Connect::open(Some(&self.uri)).map_err(|e| {
            ProviderError::unavailable(format!(
                "cannot connect to libvirt at {}: {} (is libvirtd running, and may this user use it?)",
                redact_uri(&self.uri),
                e.message()
            ))
        })?;
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` with the connection on the blocking pool. `what` prefixes any error.
    pub async fn call<T, F>(&self, what: &str, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, ProviderError> + Send + 'static,
    {
        let conn = self.connection()?;
        let what = what.to_owned();
        let res = tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(|e| ProviderError::internal(format!("{what}: libvirt call panicked: {e}")))?;
        if let Err(ProviderError::Unavailable { .. }) = &res {
            // The daemon may have restarted: reconnect on the next call.
            *self.conn.lock().expect("libvirt connection lock") = None;
        }
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
    match e.code().known() {
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
