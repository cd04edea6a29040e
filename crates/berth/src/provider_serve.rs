//! `berth provider serve`: one configured backend served as a remote provider over gRPC, so
//! an agent elsewhere drives this host through it (`type = "remote"`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use berth_core::Secret;
use berth_provider_grpc::{Listen, ServeOptions, ServerTls};

use crate::cli_api::ProviderServeArgs;

fn read(what: &str, p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("{what}: cannot read {}", p.display()))
}

pub async fn run(a: ProviderServeArgs) -> anyhow::Result<ExitCode> {
    let listen: Listen = a.listen.parse().map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    let config = berth_agent::load_config(&a.config.config)?;
    let backend = config.backend(a.backend.as_deref())?;
    let provider = berth_agent::build_provider(&config, backend)?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(ServerTls {
            cert_file: c.clone(),
            key_file: k.clone(),
            client_ca_file: a.client_ca.clone(),
        }),
        _ => None,
    };
    let token = match &a.bearer_token_file {
        Some(p) => {
            let t = String::from_utf8(read("--bearer-token-file", p)?)
                .context("--bearer-token-file: the token is not text")?
                .trim()
                .to_owned();
            anyhow::ensure!(!t.is_empty(), "--bearer-token-file: {} is empty", p.display());
            Some(Secret::new(t))
        }
        None => None,
    };
    let protection = match (&tls, &token) {
        (Some(t), _) if t.client_ca_file.is_some() => "TLS, client certificates required",
        (Some(_), Some(_)) => "TLS and a bearer token",
        (Some(_), None) => "TLS",
        (None, Some(_)) => "a bearer token",
        (None, None) => "no authentication: the socket's permissions only",
    };
    let stop = berth_agent::cmd::StopSignal::install()?;
    let served = berth_provider_grpc::bind(ServeOptions {
        listen,
        tls,
        token,
        allow_unauthenticated: a.allow_unauthenticated,
    })
    .await?;
    served.reload_certificate_on_hangup()?;
    eprintln!(
        "serving backend {:?} ({}) as a remote provider on {} ({protection}); stop with Ctrl-C",
        backend.name,
        backend.kind().as_str(),
        served.local
    );
    served.run(provider, stop.wait()).await?;
    Ok(ExitCode::SUCCESS)
}
