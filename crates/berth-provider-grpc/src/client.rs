//! The client side: a [`Provider`] whose every call goes to a remote server. Each call has a
//! deadline, a broken connection is `unavailable` (so the agent retries it, and a create is
//! resumed by creating again: idempotent by contract), and errors keep their code and field.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, ConfigError, DeleteOutcome, ExecOutput, Instance, InstanceRef, ListFilter, PowerOp,
    ProgressSink, Provider, ProviderError, ReconfigureOutcome, Resize, Template, VmSpec,
};
use serde::Deserialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};

use crate::convert::{self as cv, Bad};
use crate::pb;
use crate::pb::provider_client::ProviderClient;
use crate::status::from_status;

/// `[provisioner.remote]`: where the remote provider is and how to prove who we are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `https://HOST:PORT`, `http://127.0.0.1:PORT` (loopback only), or `unix:/path/to.sock`.
    pub endpoint: String,
    /// The CA that signed the server's certificate (PEM); required for `https`.
    pub ca_file: Option<PathBuf>,
    /// This agent's client certificate and key (PEM), for a server that wants mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// A file holding the bearer token the server expects.
    pub token_file: Option<PathBuf>,
    /// How long any call but create may take.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_secs: u64,
    /// How long a create may take, end to end.
    #[serde(default = "default_create_timeout")]
    pub create_timeout_secs: u64,
}

fn default_call_timeout() -> u64 {
    60
}

fn default_create_timeout() -> u64 {
    3600
}

enum Target {
    Tls(String),
    Plain,
    Unix(PathBuf),
}

impl RemoteConfig {
    fn target(&self) -> Result<Target, ConfigError> {
        let e = &self.endpoint;
        let bad = |why: &str| {
            ConfigError::new(
                "endpoint",
                format!("{why}; expected https://HOST:PORT, http://127.0.0.1:PORT or unix:/path/to.sock (got {e:?})"),
            )
        };
        if let Some(path) = e.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(Target::Unix(PathBuf::from(path)))
            } else {
                Err(bad("a Unix socket needs an absolute path"))
            };
        }
        let url: http::Uri = e.parse().map_err(|_| bad("not a URL"))?;
        let host = url.host().ok_or_else(|| bad("no host"))?.trim_matches(['[', ']']);
        if url.port_u16().is_none() {
            return Err(bad("no port"));
        }
        match url.scheme_str() {
            Some("https") => Ok(Target::Tls(host.to_owned())),
            Some("http") => {
                // A literal address: a name could resolve anywhere.
                let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if loopback {
                    Ok(Target::Plain)
                } else {
                    Err(bad(
                        "plaintext http is only for loopback addresses (a token or spec would cross the network unencrypted): use https",
                    ))
                }
            }
            _ => Err(bad("unknown scheme")),
        }
    }

    /// Checks the table: the endpoint's form, TLS files that go together, positive timeouts.
    pub fn validate(&self, base_dir: &Path) -> Result<(), ConfigError> {
        let target = self.target()?;
        if matches!(target, Target::Tls(_)) && self.ca_file.is_none() {
            return Err(ConfigError::new(
                "ca_file",
                "an https endpoint needs the CA that signed the server's certificate (PEM)",
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            let key = if self.client_cert.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            return Err(ConfigError::new(
                key,
                "client_cert and client_key go together (mutual TLS)",
            ));
        }
        if !matches!(target, Target::Tls(_)) && (self.ca_file.is_some() || self.client_cert.is_some()) {
            return Err(ConfigError::new(
                "endpoint",
                "TLS files are set but the endpoint is not https",
            ));
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
            ("token_file", &self.token_file),
        ] {
            if let Some(p) = path
                && !base_dir.join(p).is_file()
            {
                return Err(ConfigError::new(key, format!("{} is not a readable file", p.display())));
            }
        }
        for (key, v) in [
            ("call_timeout_secs", self.call_timeout_secs),
            ("create_timeout_secs", self.create_timeout_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be at least 1 second"));
            }
        }
        Ok(())
    }
}

/// Adds the bearer token (marked sensitive: never in a `Debug` of the request).
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = ProviderClient<InterceptedService<Channel, Bearer>>;

/// The largest answer taken: room for a command's whole output.
const MAX_MESSAGE: usize = 80 << 20;

pub struct RemoteProvider {
    client: Client,
    endpoint: String,
    call_timeout: Duration,
    create_timeout: Duration,
}

impl RemoteProvider {
    /// Reads the files the table names (relative paths from `base_dir`) and prepares the
    /// connection; nothing is dialled until the first call.
    pub fn new(config: &RemoteConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        config.validate(base_dir)?;
        let read = |key: &str, p: &Path| {
            std::fs::read(base_dir.join(p))
                .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", p.display())))
        };
        let token = match &config.token_file {
            Some(p) => {
                let raw = read("token_file", p)?;
                let t = String::from_utf8(raw)
                    .map_err(|_| ConfigError::new("token_file", "the token is not text"))?
                    .trim()
                    .to_owned();
                let mut v: MetadataValue<Ascii> = format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ConfigError::new("token_file", "the token must be printable ASCII"))?;
                if t.is_empty() {
                    return Err(ConfigError::new("token_file", "the file is empty"));
                }
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let keepalive = |ep: Endpoint| {
            ep.connect_timeout(Duration::from_secs(10))
                .http2_keep_alive_interval(Duration::from_secs(15))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
        };
        let bad_endpoint = |e: tonic::transport::Error| ConfigError::new("endpoint", e.to_string());
        let channel = match config.target()? {
            Target::Unix(path) => keepalive(Endpoint::from_static("http://localhost")).connect_with_connector_lazy(
                tower::service_fn(move |_: http::Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }),
            ),
            Target::Plain => {
                keepalive(Endpoint::from_shared(config.endpoint.clone()).map_err(bad_endpoint)?).connect_lazy()
            }
            Target::Tls(host) => {
                let ca = read("ca_file", config.ca_file.as_deref().unwrap_or(Path::new("")))?;
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(host);
                if let (Some(c), Some(k)) = (&config.client_cert, &config.client_key) {
                    tls = tls.identity(Identity::from_pem(read("client_cert", c)?, read("client_key", k)?));
                }
                keepalive(Endpoint::from_shared(config.endpoint.clone()).map_err(bad_endpoint)?)
                    .tls_config(tls)
                    .map_err(|e| ConfigError::new("ca_file", format!("TLS setup failed: {e}")))?
                    .connect_lazy()
            }
        };
        Ok(RemoteProvider {
            // A command's output may be large (the script backend keeps up to 64 MiB).
            client: ProviderClient::with_interceptor(channel, Bearer(token)).max_decoding_message_size(MAX_MESSAGE),
            endpoint: config.endpoint.clone(),
            call_timeout: Duration::from_secs(config.call_timeout_secs),
            create_timeout: Duration::from_secs(config.create_timeout_secs),
        })
    }

    fn failed(&self, call: &str, s: &Status) -> ProviderError {
        from_status(s, &format!("remote provider at {}: {call}", self.endpoint))
    }

    /// One unary call under the call deadline.
    async fn call<T, F>(&self, name: &str, f: impl FnOnce(Client) -> F) -> Result<T, ProviderError>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_within(name, self.call_timeout, f).await
    }

    async fn call_within<T, F>(
        &self,
        name: &str,
        deadline: Duration,
        f: impl FnOnce(Client) -> F,
    ) -> Result<T, ProviderError>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        match tokio::time::timeout(deadline, f(self.client.clone())).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.failed(name, &s)),
            Err(_) => Err(ProviderError::Timeout {
                what: format!("the remote provider at {} did not answer {name}", self.endpoint),
                after: deadline,
            }),
        }
    }

    async fn create_stream(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        let req = pb::CreateRequest {
            spec: Some(cv::spec_to(spec)),
        };
        let mut stream = self
            .client
            .clone()
            .create(req)
            .await
            .map_err(|s| self.failed("create", &s))?
            .into_inner();
        while let Some(msg) = stream.message().await.map_err(|s| self.failed("create", &s))? {
            match msg.event {
                Some(pb::create_event::Event::Stage(e)) => {
                    if let Some(e) = cv::event_from(e) {
                        progress.event(e);
                    }
                }
                Some(pb::create_event::Event::Instance(i)) => return cv::instance_from(i).map_err(Bad::remote_fault),
                None => {}
            }
        }
        Err(ProviderError::unavailable(format!(
            "the remote provider at {} ended the create before the machine was made (creating again resumes it)",
            self.endpoint
        )))
    }
}

#[async_trait]
impl Provider for RemoteProvider {
    fn backend(&self) -> &'static str {
        "remote"
    }

    async fn validate(&self) -> Vec<Check> {
        match self
            .call(
                "validate",
                |mut c| async move { c.validate(pb::ValidateRequest {}).await },
            )
            .await
        {
            Ok(r) => r.checks.into_iter().map(cv::check_from).collect(),
            Err(e) => vec![Check::fail("remote provider", e.to_string())],
        }
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        let r = self
            .call("capabilities", |mut c| async move {
                c.capabilities(pb::CapabilitiesRequest {}).await
            })
            .await?;
        Ok(cv::capabilities_from(r.capabilities.unwrap_or_default()))
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        tokio::time::timeout(self.create_timeout, self.create_stream(spec, progress))
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::Timeout {
                    what: format!("the remote provider at {} did not finish the create", self.endpoint),
                    after: self.create_timeout,
                })
            })
    }

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError> {
        let id = Some(cv::ref_to(id));
        let i = self
            .call("describe", |mut c| async move {
                c.describe(pb::DescribeRequest { id }).await
            })
            .await?;
        cv::instance_from(i).map_err(Bad::remote_fault)
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        let req = cv::filter_to(filter);
        let r = self.call("list", |mut c| async move { c.list(req).await }).await?;
        r.instances
            .into_iter()
            .filter(|i| {
                // A kind a newer server has and this agent does not: not its to manage.
                let known = pb::GuestKind::try_from(i.kind).is_ok();
                if !known {
                    tracing::warn!(backend_id = %i.backend_id, kind = i.kind, "the remote listed a machine of an unknown kind; left out");
                }
                known
            })
            .map(|i| cv::instance_from(i).map_err(Bad::remote_fault))
            .collect()
    }

    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        let req = pb::PowerRequest {
            id: Some(cv::ref_to(id)),
            op: Some(cv::power_to(op)),
        };
        // A graceful shutdown may take its whole timeout: that, then the usual allowance.
        let deadline = match op {
            PowerOp::Shutdown { timeout_secs } => Duration::from_secs(timeout_secs) + self.call_timeout,
            _ => self.call_timeout,
        };
        let i = self
            .call_within("power", deadline, |mut c| async move { c.power(req).await })
            .await?;
        cv::instance_from(i).map_err(Bad::remote_fault)
    }

    async fn reconfigure(&self, id: &InstanceRef, change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        let req = pb::ReconfigureRequest {
            id: Some(cv::ref_to(id)),
            cores: change.cores,
            memory_mib: change.memory_mib,
            disk_gib: change.disk_gib,
        };
        let r = self
            .call("reconfigure", |mut c| async move { c.reconfigure(req).await })
            .await?;
        Ok(ReconfigureOutcome {
            restart_required: r.restart_required,
        })
    }

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        let id = Some(cv::ref_to(id));
        let r = self
            .call(
                "delete",
                |mut c| async move { c.delete(pb::DeleteRequest { id }).await },
            )
            .await?;
        cv::delete_from(r.outcome).map_err(Bad::remote_fault)
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        let r = self
            .call("list_templates", |mut c| async move {
                c.list_templates(pb::ListTemplatesRequest {}).await
            })
            .await?;
        r.templates
            .into_iter()
            .map(|t| cv::template_from(t).map_err(Bad::remote_fault))
            .collect()
    }

    async fn exec(&self, id: &InstanceRef, command: &str, timeout: Duration) -> Result<ExecOutput, ProviderError> {
        let req = pb::ExecRequest {
            id: Some(cv::ref_to(id)),
            command: command.to_owned(),
            timeout_ms: timeout.as_millis().max(1) as u64,
        };
        // The command's own time, then the usual allowance for the call.
        let o = self
            .call_within(
                "exec",
                timeout + self.call_timeout,
                |mut c| async move { c.exec(req).await },
            )
            .await?;
        Ok(ExecOutput {
            exit_status: o.exit_status,
            stdout: o.stdout,
            stderr: o.stderr,
            truncated: o.truncated,
        })
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        let c = self
            .call(
                "capacity",
                |mut c| async move { c.capacity(pb::CapacityRequest {}).await },
            )
            .await?;
        Ok(cv::capacity_from(c))
    }
}
