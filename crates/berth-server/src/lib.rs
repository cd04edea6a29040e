//! Berth's control plane, `berth server`: the `/api/v1` HTTP API over one [`berth_store::Store`]
//! (SQLite or PostgreSQL). Customers order, providers publish and enroll agents, agents claim
//! work under leases and report; every mutation is an operation (`202` + id) and an audit entry.
//! The OpenAPI document comes from the same handlers ([`openapi`]).

pub mod access;
mod apidoc;
pub mod auth;
pub mod config;
pub mod guard;
pub mod paging;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub(crate) mod tls;
pub mod views;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use berth_store::{PgStore, Role, SqliteStore, Store};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::ServerConfig;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub cfg: Arc<ServerConfig>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth control plane", description = "VM provisioning for hosting providers. Bearer API tokens for operators, providers and customers; RFC 9421 signed requests (ed25519) for agents. Errors are RFC 7807 problem documents with a stable `code`."),
    tags(
        (name = "accounts", description = "providers and customers"),
        (name = "agents", description = "enrollment, agents, their templates, pending contracts"),
        (name = "offerings", description = "what providers publish; discovery"),
        (name = "orders", description = "a customer's order becomes an instance and a provision operation"),
        (name = "instances", description = "machines and their actions"),
        (name = "operations", description = "every mutation, its stages and result"),
        (name = "agent", description = "the agent's signed side: claim, report, heartbeat"),
        (name = "audit", description = "the hash-chained audit log"),
    )
)]
struct ApiDoc;

fn api() -> OpenApiRouter<AppState> {
    use routes::*;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::create_provider, accounts::list_providers))
        .routes(routes!(accounts::create_customer, accounts::list_customers))
        .routes(routes!(keys::list_keys, keys::save_key))
        .routes(routes!(keys::delete_key))
        .routes(routes!(accounts::create_enrollment_token))
        .routes(routes!(accounts::enroll))
        .routes(routes!(accounts::list_agents))
        .routes(routes!(accounts::get_agent))
        .routes(routes!(accounts::revoke_agent))
        .routes(routes!(accounts::agent_templates))
        .routes(routes!(accounts::provider_templates))
        .routes(routes!(offerings::create_offering, offerings::list_offerings))
        .routes(routes!(offerings::get_offering, offerings::update_offering))
        .routes(routes!(offerings::withdraw_offering))
        .routes(routes!(instances::create_order))
        .routes(routes!(instances::list_instances, placement::create_instance))
        .routes(routes!(instances::get_instance))
        .routes(routes!(instances::instance_operations))
        .routes(routes!(actions::reconfigure))
        .routes(routes!(actions::instance_action))
        .routes(routes!(instances::pending_provision))
        .routes(routes!(operations::get_operation))
        .routes(routes!(operations::operation_events))
        .routes(routes!(inputs::submit_input, inputs::get_input))
        .routes(routes!(inputs::wait_input))
        .routes(routes!(inputs::input_taken))
        .routes(routes!(agent::claim))
        .routes(routes!(agent::renew))
        .routes(routes!(agent::release))
        .routes(routes!(agent::report_events))
        .routes(routes!(agent::complete))
        .routes(routes!(agent::heartbeat))
        .routes(routes!(agent::put_templates))
        .routes(routes!(agent::me))
        .routes(routes!(quotas::get_quota, quotas::set_quota))
        .routes(routes!(customer_quotas::list))
        .routes(routes!(customer_quotas::get, customer_quotas::set))
        .routes(routes!(tokens::list_own, tokens::create_own))
        .routes(routes!(tokens::revoke_own))
        .routes(routes!(tokens::rotate_own))
        .routes(routes!(tokens::list_account, tokens::create_account_token))
        .routes(routes!(tokens::revoke_account_token))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
}

/// The OpenAPI document of the API, as committed in `docs/openapi.json`.
pub fn openapi() -> serde_json::Value {
    apidoc::finish(api().split_for_parts().1)
}

/// The whole HTTP app over `state`.
pub fn router(state: AppState) -> Router {
    let (router, doc) = api().split_for_parts();
    let doc = Arc::new(apidoc::finish(doc));
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            problem::ApiError::MethodNotAllowed(method.to_string())
        })
        .fallback(|| async { problem::ApiError::NotFound("route".into()) })
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("opening the database: {0}")]
    Store(#[from] berth_store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
}

/// Opens the configured database (migrating it).
pub async fn open_store(cfg: &ServerConfig) -> Result<Arc<dyn Store>, ServeError> {
    if let Some(path) = &cfg.database.sqlite {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ServeError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
        }
        return Ok(Arc::new(SqliteStore::open(path).await?));
    }
    match cfg.postgres_url().map_err(ServeError::Config)? {
        Some(url) => Ok(Arc::new(PgStore::connect(&url).await?)),
        None => Err(ServeError::Config("database: no database configured".into())),
    }
}

/// Makes the first operator token if the database has none, writing it to `file` (created
/// with mode 0600, never overwritten) before its hash is stored, so a token the database knows
/// is never lost. Returns whether one was made.
pub async fn bootstrap_operator(store: &dyn Store, file: &Path) -> Result<bool, ServeError> {
    if store.has_operator_token().await? {
        return Ok(false);
    }
    if file.exists() {
        return Err(ServeError::Config(format!(
            "{} exists but the database has no operator token (a new database?): move the old file away and start again",
            file.display()
        )));
    }
    let t = berth_store::ApiToken::generate(Role::Operator, "")?;
    let io = |source| ServeError::Io {
        what: format!("writing the operator token to {}", file.display()),
        source,
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    use std::io::Write as _;
    let mut f = opts.open(file).map_err(io)?;
    f.write_all(format!("{}\n", t.secret).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    if let Err(e) = store.store_api_token(&t, "bootstrap", now_ms()).await {
        let _ = std::fs::remove_file(file);
        return Err(e.into());
    }
    Ok(true)
}

/// A running server: its address and a handle to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    /// The certificate served, when HTTPS is on.
    pub tls: Option<Arc<berth_tls::server::ReloadingCert>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// `https://…` or `http://…` of the listening address.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Reads the certificate and key files again (SIGHUP): new connections get what they hold
    /// now, open ones keep theirs. On error the certificate in use stays, and is logged.
    pub fn reload_tls(&self) {
        let Some(t) = &self.tls else { return };
        match t.reload() {
            Ok(fp) => tracing::info!(fingerprint = %format!("sha256:{fp}"), "TLS certificate reloaded"),
            Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; still serving the previous one"),
        }
    }

    /// Stops accepting, lets requests in flight finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Serves `store` on `cfg.listen` (port 0: any free port) until [`Running::shutdown`].
pub async fn start(cfg: ServerConfig, store: Arc<dyn Store>) -> Result<Running, ServeError> {
    start_app(cfg, store, router).await
}

/// [`start`] with the app `app` builds over the state (the API plus what a layer above adds,
/// such as the dashboard).
pub async fn start_app(
    cfg: ServerConfig,
    store: Arc<dyn Store>,
    app: impl FnOnce(AppState) -> Router,
) -> Result<Running, ServeError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("listening on {}", cfg.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        what: "reading the listening address".into(),
        source,
    })?;
    let tls = match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(c), Some(k)) => Some(
            berth_tls::server::ReloadingCert::open(c, k)
                .map_err(|(key, m)| ServeError::Tls(format!("tls.{key}: {m}")))?,
        ),
        _ => None,
    };
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            listen = %addr,
            "serving PLAIN HTTP on a non-loopback address (tls.allow_plaintext = true): tokens and sessions cross \
             the network in clear unless a proxy in front terminates TLS"
        );
    }
    let state = AppState {
        store,
        cfg: Arc::new(cfg),
    };
    let proxies = Arc::new(
        access::TrustedProxies::parse(&state.cfg.api.trusted_proxies)
            .map_err(|e| ServeError::Config(format!("api.trusted_proxies: {e}")))?,
    );
    let limiter = Arc::new(ratelimit::RateLimiter::new(&state.cfg.limits));
    // Outermost first: the access log sees every answer, guards and limits included.
    let mut app = app(state.clone())
        .layer(axum::middleware::from_fn_with_state(limiter, ratelimit::limit))
        .layer(axum::middleware::from_fn(guard::check))
        .layer(axum::middleware::from_fn_with_state(proxies, access::log));
    let acceptor = match &tls {
        None => None,
        Some(t) => {
            let config = t.server_config().map_err(ServeError::Tls)?;
            tracing::info!(fingerprint = %format!("sha256:{}", t.fingerprint()), "serving HTTPS");
            app = app.layer(axum::middleware::from_fn(tls::hsts));
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
    };
    let bounds = serve::Bounds::from_config(&state.cfg.limits);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        let _ = rx.await;
    };
    let task = tokio::spawn(serve::serve(listener, acceptor, app, bounds, stop));
    Ok(Running {
        addr,
        state,
        tls,
        stop: Some(tx),
        task,
    })
}
