//! Write a Berth provider for any backend in Rust: implement [`Provider`] (the contract every
//! built-in backend keeps: see `berth_core::provider` for its rules), then hand it to
//! [`run`]. An agent reaches it with `type = "remote"`; `berth-conformance` checks it.
//!
//! ```no_run
//! # use berth_provider_sdk::*;
//! # struct MyCloud;
//! # #[async_trait] impl Provider for MyCloud {
//! #   fn backend(&self) -> &'static str { "my-cloud" }
//! #   async fn validate(&self) -> Vec<Check> { vec![] }
//! #   async fn capabilities(&self) -> Result<Capabilities, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn create(&self, _: &VmSpec, _: &dyn ProgressSink) -> Result<Instance, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn describe(&self, _: &InstanceRef) -> Result<Instance, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn list(&self, _: ListFilter) -> Result<Vec<Instance>, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn power(&self, _: &InstanceRef, _: PowerOp) -> Result<Instance, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn reconfigure(&self, _: &InstanceRef, _: &Resize) -> Result<ReconfigureOutcome, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn delete(&self, _: &InstanceRef) -> Result<DeleteOutcome, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! #   async fn capacity(&self) -> Result<Capacity, ProviderError> { Err(ProviderError::unsupported("a sketch")) }
//! # }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     // --listen ADDR|unix:/path, --tls-cert/--tls-key, --client-ca, --token-file
//!     run(MyCloud).await
//! }
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub use async_trait::async_trait;
pub use berth_core::{
    Capabilities, Capacity, Check, CheckStatus, DeleteOutcome, ErrorCode, ExecOutput, GuestKind, Instance, InstanceId,
    InstanceRef, Ipv4Config, Ipv6Config, ListFilter, NetworkSpec, PowerOp, PowerState, ProgressSink, Provider,
    ProviderError, ReconfigureOutcome, Resize, Secret, SshPublicKey, Stage, StageEvent, StagePhase, Template, VmSpec,
};
pub use berth_provider_grpc::{Listen, ServeError, ServeOptions, ServerTls};

/// Serves `provider` as `opts` say until SIGINT or SIGTERM; says where on stderr.
pub async fn serve(provider: impl Provider + 'static, opts: ServeOptions) -> Result<(), ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let bind_err = |e: std::io::Error| ServeError::Serve(format!("cannot watch for signals: {e}"));
    let mut int = signal(SignalKind::interrupt()).map_err(bind_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(bind_err)?;
    let backend = provider.backend();
    let served = berth_provider_grpc::bind(opts).await?;
    served.reload_certificate_on_hangup()?;
    eprintln!("serving the {backend} provider on {}", served.local);
    let stop = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    served.run(Arc::new(provider), stop).await
}

/// The serving options from command-line arguments: `--listen ADDR` (default
/// `127.0.0.1:8422`; or `unix:/path`), `--tls-cert FILE --tls-key FILE`, `--client-ca FILE`,
/// `--token-file FILE`, `--allow-unauthenticated` (TCP without a token or client CA).
pub fn options_from_args(args: impl IntoIterator<Item = String>) -> Result<ServeOptions, String> {
    let mut listen: Listen = "127.0.0.1:8422".parse()?;
    let (mut cert, mut key, mut ca, mut token) = (None, None, None, None);
    let mut allow_unauthenticated = false;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--allow-unauthenticated" => allow_unauthenticated = true,
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "--client-ca" => ca = Some(PathBuf::from(value()?)),
            "--token-file" => {
                let path = value()?;
                let t = std::fs::read_to_string(&path).map_err(|e| format!("--token-file {path}: {e}"))?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(format!("--token-file {path}: the file is empty"));
                }
                token = Some(Secret::new(t));
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; expected --listen, --tls-cert, --tls-key, --client-ca, --token-file or --allow-unauthenticated"
                ));
            }
        }
    }
    let tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(ServerTls {
            cert_file,
            key_file,
            client_ca_file: ca,
        }),
        (None, None) if ca.is_none() => None,
        _ => return Err("--tls-cert and --tls-key go together (and --client-ca needs them)".into()),
    };
    Ok(ServeOptions {
        listen,
        tls,
        token,
        allow_unauthenticated,
    })
}

/// A provider program's whole `main`: options from the command line, then [`serve`]; errors
/// printed, exit status 1 (2 for bad arguments).
pub async fn run(provider: impl Provider + 'static) -> ExitCode {
    let opts = match options_from_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(provider, opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn arguments_are_read_and_bad_ones_named() {
        let o = options_from_args(args("--listen unix:/run/x.sock")).unwrap();
        assert_eq!(o.listen, Listen::Unix("/run/x.sock".into()));
        assert!(o.tls.is_none() && o.token.is_none() && !o.allow_unauthenticated);
        assert!(
            options_from_args(args("--allow-unauthenticated"))
                .unwrap()
                .allow_unauthenticated
        );
        let o = options_from_args(args("--tls-cert a.crt --tls-key a.key --client-ca ca.pem")).unwrap();
        assert_eq!(o.tls.unwrap().client_ca_file, Some(PathBuf::from("ca.pem")));
        for (bad, says) in [
            ("--listen", "needs a value"),
            ("--listen nowhere", "--listen"),
            ("--tls-cert a.crt", "go together"),
            ("--client-ca ca.pem", "go together"),
            ("--port 1", "unknown argument"),
            ("--token-file /nonexistent/berth-token", "--token-file"),
        ] {
            let e = options_from_args(args(bad)).err().unwrap();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
