//! The example provider, as its own process on a Unix socket, passes the conformance suite.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_conformance::{Fixture, run_all};
use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey, VmSpec};
use berth_provider_grpc::{RemoteConfig, RemoteProvider};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_provider_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cloud.sock");
    let mut example = Example(
        Command::new(env!("CARGO_BIN_EXE_remote-provider"))
            .args(["--listen", &format!("unix:{}", socket.display())])
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(example.0.try_wait().unwrap().is_none(), "the example exited");
        assert!(Instant::now() < until, "the example never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config: RemoteConfig = toml::from_str(&format!("endpoint = \"unix:{}\"", socket.display())).unwrap();
    let fixture = Fixture {
        provider: Arc::new(RemoteProvider::new(&config, dir.path()).unwrap()),
        spec: Box::new(|kind: GuestKind, tag: &str| VmSpec {
            instance_id: InstanceId::parse(&format!("ex-{tag}")).unwrap(),
            name: format!("ex-{tag}"),
            kind,
            cores: 2,
            memory_mib: 2048,
            disk_gib: 10,
            template: Some("debian-12".into()),
            ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
            user: None,
            network: NetworkSpec::default(),
        }),
        kinds: vec![GuestKind::Vm],
    };
    run_all(&fixture).await;
}
