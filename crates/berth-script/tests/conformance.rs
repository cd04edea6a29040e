//! The Provider conformance suite against both example backends in `examples/script-backend`
//! (each with its state directory in a fresh tempdir, passed through `env`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_conformance::{Fixture, Recorder, run_all};
use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey, Stage, StagePhase, VmSpec};
use berth_script::{ScriptConfig, ScriptProvider};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/script-backend")
}

fn fixture(script: &str, state: &Path) -> Fixture {
    let mut config = ScriptConfig::with_command(script);
    config.timeout_seconds = 60;
    config
        .env
        .insert("BERTH_EXAMPLE_STATE".into(), state.display().to_string());
    let provider = ScriptProvider::new(config, examples_dir()).expect("valid config");
    Fixture {
        provider: Arc::new(provider),
        spec: Box::new(|kind: GuestKind, tag: &str| VmSpec {
            instance_id: InstanceId::parse(&format!("conf-{tag}")).unwrap(),
            name: format!("sc-{tag}"),
            kind,
            cores: 2,
            memory_mib: 1536,
            disk_gib: 10,
            template: None,
            ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
            user: None,
            network: NetworkSpec::default(),
        }),
        kinds: vec![GuestKind::Vm],
    }
}

async fn check_example(script: &str) {
    let state = tempfile::tempdir().unwrap();
    let f = fixture(script, state.path());
    for check in f.provider.validate().await {
        assert_eq!(check.status, berth_core::CheckStatus::Ok, "{check:?}");
    }
    run_all(&f).await;

    // The example's own stage lines arrive as events, inside the provision call's stage.
    let spec = (f.spec)(GuestKind::Vm, "stages");
    let rec = Recorder::default();
    let inst = f.provider.create(&spec, &rec).await.unwrap();
    let seen: Vec<(Stage, StagePhase)> = rec.events().iter().map(|e| (e.stage, e.phase)).collect();
    assert_eq!(
        seen,
        vec![
            (Stage::CloneTemplate, StagePhase::Started),
            (Stage::ConfigureVm, StagePhase::Started),
            (Stage::ConfigureVm, StagePhase::Completed),
            (Stage::StartVm, StagePhase::Started),
            (Stage::StartVm, StagePhase::Completed),
            (Stage::CloneTemplate, StagePhase::Completed),
        ]
    );
    assert_eq!(inst.memory_mib, Some(1536));
    assert!(inst.ipv4.unwrap().is_private(), "{inst:?}");
    // Deterministic address: the same contract in another state directory gets the same one.
    let other = tempfile::tempdir().unwrap();
    let g = fixture(script, other.path());
    assert_eq!(
        g.provider.create(&spec, &Recorder::default()).await.unwrap().ipv4,
        inst.ipv4
    );
}

#[tokio::test]
async fn python_example_passes_the_conformance_suite() {
    check_example("berth_backend.py").await;
}

#[tokio::test]
async fn bash_example_passes_the_conformance_suite() {
    let have_jq = ["/usr/bin/jq", "/usr/local/bin/jq", "/bin/jq"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !have_jq {
        eprintln!("SKIPPED: jq is not installed (Debian: apt-get install jq); the bash example needs it");
        return;
    }
    check_example("berth-backend.sh").await;
}
