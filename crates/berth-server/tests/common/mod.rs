//! `TestContext`: a real server on a loopback port over a fresh database, and typed clients for
//! every kind of caller, so tests read like user stories.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use berth_api::client::{Auth, Client};
use berth_api::httpsig::RequestSigner;
use berth_api::wire::*;
use berth_server::{Running, ServerConfig};
use berth_store::{Role, SqliteStore, Store};

pub const AGE_KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
/// An age file's armour (the header line `age-encryption.org/v1` and a stanza), as an agent sends.
pub const AGE_CIPHERTEXT: &str = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBhYmMKZGVmCg==\n-----END AGE ENCRYPTED FILE-----\n";
pub const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@berth";

pub struct TestContext {
    pub server: Running,
    pub url: String,
    pub operator: Client,
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

pub struct TestAgent {
    pub id: String,
    pub provider_id: String,
    pub client: Client,
    pub key: ed25519_dalek::SigningKey,
}

pub fn config(tweak: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut cfg = ServerConfig::parse("listen = \"127.0.0.1:0\"\n[database]\nsqlite = \"unused\"\n", "test").unwrap();
    cfg.agents.heartbeat_ttl_seconds = 30;
    tweak(&mut cfg);
    cfg
}

impl TestContext {
    pub async fn sqlite() -> TestContext {
        Self::sqlite_with(|_| {}).await
    }

    pub async fn sqlite_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestContext {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("berth.db")).await.unwrap());
        Self::over(store, config(tweak), Some(dir)).await
    }

    pub async fn over(store: Arc<dyn Store>, cfg: ServerConfig, dir: Option<tempfile::TempDir>) -> TestContext {
        let token = store
            .create_api_token(Role::Operator, "", "test", berth_server::now_ms())
            .await
            .unwrap();
        let server = berth_server::start(cfg, store.clone()).await.unwrap();
        let url = format!("http://{}", server.addr);
        TestContext {
            operator: Client::new(&url, Auth::Bearer(token.secret)),
            url,
            server,
            store,
            _dir: dir,
        }
    }

    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.url, Auth::Bearer(token.into()))
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, Auth::None)
    }

    /// A provider: its id and a client with its token.
    pub async fn provider(&self, name: &str) -> (String, Client) {
        let p = self.operator.create_provider(name).await.unwrap();
        (p.id, self.client(&p.token))
    }

    pub async fn customer(&self, name: &str) -> (String, Client) {
        let c = self.operator.create_customer(name).await.unwrap();
        (c.id, self.client(&c.token))
    }

    /// Enrolls a fresh key under the provider `provider` manages.
    pub async fn agent(&self, provider_id: &str, provider: &Client) -> TestAgent {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let token = provider.create_enrollment_token(provider_id, None).await.unwrap();
        let a = self.anonymous().enroll(&token.token, "agent", &key).await.unwrap();
        TestAgent {
            client: Client::new(&self.url, Auth::Signed(RequestSigner::new(key.clone(), a.id.clone()))),
            id: a.id,
            provider_id: provider_id.into(),
            key,
        }
    }
}

pub fn roomy() -> Heartbeat {
    Heartbeat {
        version: "test".into(),
        capacity: CapacityReport {
            cores_total: 64,
            cores_free: 64,
            memory_mib_total: 262_144,
            memory_mib_free: 262_144,
            disk_gib_total: 10_000,
            disk_gib_free: 10_000,
            unmetered: false,
        },
        backends: vec![BackendHealth {
            name: "pve1".into(),
            kind: "proxmox".into(),
            healthy: true,
            detail: None,
            reconfigure: Some(true),
        }],
        drift: vec![],
        site_drift: None,
        pools: Vec::new(),
    }
}

/// A small offering; each call's name is new (names are unique among a provider's offerings).
pub fn small_offering() -> OfferingSpec {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OfferingSpec {
        name: if n == 0 { "small".into() } else { format!("small-{n}") },
        cores: 2,
        memory_mib: 2048,
        disk_gib: 20,
        bandwidth_mbps: Some(100),
        template: Some("debian-12".into()),
        price: Some(Price {
            amount: 500,
            currency: "EUR".into(),
            period: PricePeriod::Month,
        }),
        region: Some("eu-1".into()),
        labels: [("ssd".to_owned(), "yes".to_owned())].into(),
        post_provision_commands: vec!["apt-get update".into()],
    }
}

pub fn order(offering_id: &str, name: &str) -> CreateOrder {
    CreateOrder {
        offering_id: offering_id.into(),
        name: name.into(),
        ssh_public_key: SSH_KEY.into(),
        requester_public_key: Some(AGE_KEY.into()),
        skip_post_provision: false,
        provision: true,
    }
}

pub const NO_WAIT: Duration = Duration::from_millis(0);
