//! One agent, two backends: the Proxmox VE emulator and a script backend (the Python example).
//! Each order goes to the backend that offers its template; stop and terminate find the backend
//! that holds the machine, also after a restart of the agent; health and capacity are per
//! backend; `berth doctor` and `berth vm --backend` work on the file.

mod common;
mod stack;

use std::path::Path;
use std::time::Duration;

use berth_api::wire::*;
use berth_pve_emulator::{EmulatorHandle, Timings};
use common::config_text;
use stack::{Db, Stack, run_berth};

const LONG: Duration = Duration::from_secs(90);

/// The emulator as backend `pve` (2 at a time), the script example as backend `lab` with its
/// own capacity.
fn two_backends(emu: &EmulatorHandle, script_state: &Path) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/script-backend/berth_backend.py");
    let pve = config_text(emu, &emu.token_secret())
        .replace(
            "[provisioner]\ntype = \"proxmox\"\n",
            "[provisioner.backends.pve]\ntype = \"proxmox\"\nconcurrency = 2\n",
        )
        .replace("[provisioner.proxmox]", "[provisioner.backends.pve.proxmox]");
    format!(
        "{pve}\n[provisioner.backends.lab]\ntype = \"script\"\n\n[provisioner.backends.lab.script]\n\
         command = \"{}\"\ntimeout_seconds = 30\nenv = {{ BERTH_EXAMPLE_STATE = \"{}\" }}\n\n\
         [provisioner.backends.lab.capacity]\ncores = 64\nmemory_mib = 262144\ndisk_gib = 10000\n",
        example.display(),
        script_state.display()
    )
}

/// The script backend's machines: (contract id, state).
fn lab_machines(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            (
                m["contract_id"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn offering(s: &Stack, template: &str) -> String {
    let spec = OfferingSpec {
        name: format!("on-{template}"),
        cores: 1,
        memory_mib: 1024,
        disk_gib: 10,
        bandwidth_mbps: None,
        template: Some(template.into()),
        price: None,
        region: None,
        labels: Default::default(),
        post_provision_commands: Vec::new(),
    };
    s.provider.create_offering(&spec).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_goes_to_the_backend_with_its_template() {
    let lab = tempfile::tempdir().unwrap();
    let lab_dir = lab.path().to_owned();
    let extra = "[polling]\nheartbeat_interval_seconds = 1\n";
    let mut s = Stack::start_with(Db::Sqlite, Timings::fast(), |emu| two_backends(emu, &lab_dir), extra)
        .await
        .unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;

    let on_pve = offering(&s, "9000").await;
    let on_lab = offering(&s, "lab-image").await;
    let a = s.order(&on_pve, "pve-vm").await;
    let b = s.order(&on_lab, "lab-vm").await;
    for op in [&a, &b] {
        let op = s.finished(op.operation_id.as_deref().unwrap(), LONG).await;
        assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    }
    assert_eq!(s.owned_by(&a.instance_id).len(), 1, "template 9000 is the emulator's");
    assert!(
        s.owned_by(&b.instance_id).is_empty(),
        "nothing else went to the emulator"
    );
    assert_eq!(
        lab_machines(lab.path()),
        [(b.instance_id.clone(), "running".to_owned())],
        "the emulator does not list lab-image, so it went to the script backend"
    );

    let agent = s.provider.agents().await.unwrap().remove(0);
    let hb = agent.heartbeat.unwrap();
    let names: Vec<(&str, &str, bool)> = hb
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.kind.as_str(), b.healthy))
        .collect();
    assert_eq!(names, [("pve", "proxmox", true), ("lab", "script", true)], "{hb:?}");
    assert!(hb.capacity.cores_total >= 64, "the lab's 64 cores are counted: {hb:?}");
    let templates = s.provider.provider_templates(&s.provider_id).await.unwrap();
    assert!(templates.iter().all(|t| t.template.backend == "pve"), "{templates:?}");

    // A restart forgets where machines are: they are found again by asking the backends.
    s.kill_agent();
    s.spawn_agent();
    let act = |id: String, action: &'static str| {
        let c = s.customer.clone();
        async move { c.instance_action(&id, action).await.unwrap().operation_id.unwrap() }
    };
    for (i, kind) in [(&b, "stop"), (&a, "stop")] {
        let op = s.finished(&act(i.instance_id.clone(), kind).await, LONG).await;
        assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    }
    assert_eq!(lab_machines(lab.path())[0].1, "stopped");
    assert_eq!(s.owned_by(&a.instance_id)[0].status, "stopped");

    // The CLI on the same file: one backend by name; without a name it asks for one.
    let cfg = s.agent_toml.display().to_string();
    let out = run_berth(
        ["vm", "list", "--backend", "lab", "--config", &cfg]
            .map(String::from)
            .to_vec(),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&b.instance_id),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(&a.instance_id), "{text}");
    let out = run_berth(["vm", "list", "--config", &cfg].map(String::from).to_vec()).await;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && all.contains("--backend") && all.contains("pve, lab"),
        "{all}"
    );
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backends pve (proxmox), lab (script)"), "{text}");
    assert!(
        text.contains("pve: ") && text.contains("lab: "),
        "each backend's checks say whose: {text}"
    );

    for i in [&a, &b] {
        let op = s.finished(&act(i.instance_id.clone(), "terminate").await, LONG).await;
        assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    }
    assert!(lab_machines(lab.path()).is_empty());
    assert!(s.owned().is_empty(), "{:?}", s.owned());
}
