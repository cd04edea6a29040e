//! `berth provider serve` as its own process: the conformance suite through it (the Proxmox
//! backend against the PVE emulator over TCP with a token, the script backend on a Unix
//! socket); an agent whose backend is `type = "remote"` runs an order end to end through it,
//! and a create cut off by the serving process dying (kill -9) is resumed by the agent's retry
//! to exactly one machine.

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_core::Provider as _;
use berth_pve_emulator::EmulatorHandle;
use common::{berth, config_text};
use stack::{Db, Stack, paced};

const LONG: Duration = Duration::from_secs(90);

/// A `berth provider serve` process; killed when dropped.
struct Serve {
    _dir: tempfile::TempDir,
    child: Child,
    config: PathBuf,
    token: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Serve {
    /// Serves the emulator's Proxmox backend on a free loopback port with a bearer token.
    fn start(emu: &EmulatorHandle, tmp: tempfile::TempDir) -> Serve {
        let text = config_text(emu, &emu.token_secret());
        Serve::start_with(&text, tmp)
    }

    /// Serves the backend of `config_text` (a `berth.toml`).
    fn start_with(config_text: &str, tmp: tempfile::TempDir) -> Serve {
        let dir = tmp.path();
        let config = dir.join("backend.toml");
        std::fs::write(&config, config_text).unwrap();
        let token = dir.join("provider.token");
        std::fs::write(&token, "remote-secret\n").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("serve.log");
        let child = Serve::spawn(&config, &token, port, &log);
        Serve {
            _dir: tmp,
            child,
            config,
            token,
            port,
            log,
        }
    }

    fn spawn(config: &Path, token: &Path, port: u16, log: &Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        berth()
            .args(["provider", "serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--bearer-token-file"])
            .arg(token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        self.child = Serve::spawn(&self.config, &self.token, self.port, &self.log);
    }

    fn remote(&self) -> berth_provider_grpc::RemoteProvider {
        let c: berth_provider_grpc::RemoteConfig = toml::from_str(&format!(
            "endpoint = \"http://127.0.0.1:{}\"\ntoken_file = \"{}\"\n",
            self.port,
            self.token.display()
        ))
        .unwrap();
        berth_provider_grpc::RemoteProvider::new(&c, Path::new("/")).unwrap()
    }

    /// The agent's `[provisioner]` for this server.
    fn provisioner(&self) -> String {
        format!(
            "[provisioner]\ntype = \"remote\"\n\n[provisioner.remote]\nendpoint = \"http://127.0.0.1:{}\"\ntoken_file = \"{}\"\n",
            self.port,
            self.token.display()
        )
    }

    async fn listening(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < until, "provider serve never listened:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn stack_with_remote(timings: berth_pve_emulator::Timings) -> (Stack, Serve) {
    let serve_dir = tempfile::tempdir().unwrap();
    let mut serve = None;
    let s = Stack::start_with(
        Db::Sqlite,
        timings,
        |emu| {
            let sv = Serve::start(emu, serve_dir);
            let text = sv.provisioner();
            serve = Some(sv);
            text
        },
        "[polling]\nheartbeat_interval_seconds = 1\n",
    )
    .await
    .unwrap();
    let serve = serve.unwrap();
    serve.listening().await;
    (s, serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_runs_through_an_agent_whose_backend_is_a_remote_provider() {
    let (mut s, serve) = stack_with_remote(berth_pve_emulator::Timings::fast()).await;
    assert!(
        serve.log().contains("as a remote provider on 127.0.0.1:"),
        "{}",
        serve.log()
    );
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "far").await;
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}\n{}", s.agent_log(), serve.log());
    let inst = s.customer.instance(&a.instance_id).await.unwrap();
    assert_eq!(inst.status, "running", "{inst:#?}");
    assert_eq!(s.owned_by(&a.instance_id).len(), 1, "{:?}", s.owned());
    let stages: Vec<&str> = op.stages.iter().map(|st| st.stage.as_str()).collect();
    assert!(
        stages.contains(&"clone_template") && stages.contains(&"wait_network"),
        "{stages:?}"
    );
    // The agent reports the remote's capacity and templates like any backend's.
    let agents = s.provider.agents().await.unwrap();
    assert!(agents.iter().any(|a| a.alive), "{agents:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_off_by_the_serving_process_dying_resumes_to_one_machine() {
    let (mut s, mut serve) = stack_with_remote(paced()).await;
    s.spawn_agent();
    s.wait_agent_alive().await;
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "cut").await;
    let op = a.operation_id.as_deref().unwrap();
    s.in_stage(op, "clone_template").await;
    // kill -9 in the middle of the clone; back a moment later on the same address.
    serve.restart();
    serve.listening().await;
    let view = s.finished(op, LONG).await;
    assert_eq!(
        view.status,
        "succeeded",
        "{view:#?}\n{}\n{}",
        s.agent_log(),
        serve.log()
    );
    assert_eq!(
        s.owned_by(&a.instance_id).len(),
        1,
        "exactly one machine: {:?}",
        s.owned()
    );
    assert!(
        s.agent_log().contains("retryable failure"),
        "the agent saw the break and retried:\n{}",
        s.agent_log()
    );
}

fn conformance_spec(kind: berth_core::GuestKind, tag: &str) -> berth_core::VmSpec {
    berth_core::VmSpec {
        instance_id: berth_core::InstanceId::parse(&format!("served-{tag}")).unwrap(),
        name: format!("served-{tag}"),
        kind,
        cores: 2,
        memory_mib: 1024,
        disk_gib: 10,
        template: None,
        ssh_keys: vec![berth_core::SshPublicKey::parse(common::KEY).unwrap()],
        user: None,
        network: berth_core::NetworkSpec::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_behind_berth_provider_serve_conforms() {
    let emu = berth_pve_emulator::Emulator::start(berth_pve_emulator::EmulatorConfig {
        timings: berth_pve_emulator::Timings::fast(),
        schema_path: berth_pve_emulator::EmulatorConfig::default_schema_path(),
        ..Default::default()
    })
    .await
    .unwrap();
    let serve = Serve::start(&emu, tempfile::tempdir().unwrap());
    serve.listening().await;
    let fixture = berth_conformance::Fixture {
        provider: std::sync::Arc::new(serve.remote()),
        spec: Box::new(conformance_spec),
        kinds: vec![berth_core::GuestKind::Vm, berth_core::GuestKind::Container],
    };
    berth_conformance::run_all(&fixture).await;
    let left: Vec<_> = emu.guests().into_iter().filter(|g| !g.template).collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}\n{}", serve.log());
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_backend_behind_berth_provider_serve_conforms() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/script-backend/berth_backend.py");
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[provisioner]\ntype = \"script\"\n[provisioner.script]\ncommand = \"{}\"\ntimeout_seconds = 60\nenv = {{ BERTH_EXAMPLE_STATE = \"{}\" }}\n",
        example.display(),
        tmp.path().join("state").display()
    );
    let serve = Serve::start_with(&text, tmp);
    serve.listening().await;
    let fixture = berth_conformance::Fixture {
        provider: std::sync::Arc::new(serve.remote()),
        spec: Box::new(conformance_spec),
        kinds: vec![berth_core::GuestKind::Vm],
    };
    berth_conformance::run_all(&fixture).await;
}

/// A self-signed CA and a certificate for 127.0.0.1 it signed, in `dir/<name>-ca.pem`,
/// `<name>.crt`, `<name>.key`.
fn tls_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, leaf.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

/// `berth provider serve` over TLS reloads its certificate on SIGHUP: new connections get the
/// new one (a client trusting only the new CA gets in), and a bad pair keeps the one in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_server_reloads_its_certificate_on_sighup() {
    let emu = berth_pve_emulator::Emulator::start(berth_pve_emulator::EmulatorConfig {
        timings: berth_pve_emulator::Timings::fast(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old_ca, old_cert, old_key) = tls_files(d, "old");
    let (new_ca, new_cert, new_key) = tls_files(d, "new");
    let (cert, key) = (d.join("served.crt"), d.join("served.key"));
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let config = d.join("pve.toml");
    std::fs::write(&config, config_text(&emu, &emu.token_secret())).unwrap();
    std::fs::write(d.join("token"), "tls-token\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = d.join("serve.log");
    let mut child = berth()
        .args(["provider", "serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--bearer-token-file")
        .arg(d.join("token"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let trusting = |ca: &Path| {
        let c: berth_provider_grpc::RemoteConfig = toml::from_str(&format!(
            "endpoint = \"https://127.0.0.1:{port}\"\nca_file = \"{}\"\ntoken_file = \"{}\"\n",
            ca.display(),
            d.join("token").display()
        ))
        .unwrap();
        berth_provider_grpc::RemoteProvider::new(&c, Path::new("/")).unwrap()
    };
    let hup = || {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
            rustix::process::Signal::HUP,
        )
        .unwrap()
    };
    let until = Instant::now() + Duration::from_secs(30);
    while trusting(&old_ca).capabilities().await.is_err() {
        assert!(
            Instant::now() < until,
            "never served: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = trusting(&new_ca).capabilities().await.unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");

    // A key that does not belong to the certificate: the one in use stays.
    std::fs::copy(&new_cert, &cert).unwrap();
    hup();
    let until = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("keeping the certificate in use")
    {
        assert!(Instant::now() < until, "{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trusting(&old_ca).capabilities().await.unwrap();

    // The new pair whole: new connections get it.
    std::fs::copy(&new_key, &key).unwrap();
    hup();
    let until = Instant::now() + Duration::from_secs(30);
    while trusting(&new_ca).capabilities().await.is_err() {
        assert!(Instant::now() < until, "{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
