//! The script backend in exactly the seed's form (`provision`, `terminate`, `health_check`,
//! `timeout_seconds`: no `status`, `list`, `start` or `stop`) runs an order end to end with a real
//! `berth agent` and no `[capacity]` (the backend is unmetered: admitted, said by the agent's log,
//! doctor, the heartbeat and the dashboard). `berth doctor` says what that form cannot guarantee; an agent killed with -9
//! while `provision` runs (the machine made, never reported) does not leave two machines: after
//! the restart `terminate` is asked for the cut-off machine before provisioning again.

mod browser;
mod common;
mod stack;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_pve_emulator::Timings;
use stack::{AGE_ID, Db, Stack, run_berth};

const LONG: Duration = Duration::from_secs(60);

const PROVISION: &str = r#"#!/usr/bin/env python3
import json, os, sys, time, uuid
req = json.load(sys.stdin)
machines = os.path.join(os.getcwd(), "machines")
os.makedirs(machines, exist_ok=True)
ext = "vm-" + uuid.uuid4().hex[:8]
with open(os.path.join(machines, ext + ".json"), "w") as f:
    json.dump({"contract_id": req["contract_id"], "external_id": ext}, f)
hang = os.path.join(machines, "hang-once")
if os.path.exists(hang):
    os.remove(hang)
    with open(os.path.join(machines, "hung.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
print(json.dumps({"success": True, "instance": {"external_id": ext, "ip_address": "10.0.0.100",
      "ssh_port": 22, "root_password": "generated_password"}}))
"#;

const TERMINATE: &str = r#"#!/usr/bin/env python3
import json, os, sys
req = json.load(sys.stdin)
machines = os.path.join(os.getcwd(), "machines")
found = False
for name in os.listdir(machines) if os.path.isdir(machines) else []:
    if name.startswith("vm-"):
        path = os.path.join(machines, name)
        m = json.load(open(path))
        if m["contract_id"] == req.get("contract_id") or m["external_id"] == req.get("external_id"):
            os.remove(path)
            found = True
if found:
    print(json.dumps({"success": True}))
else:
    print(json.dumps({"success": False, "error": "no such machine", "code": "not_found"}))
    sys.exit(1)
"#;

const HEALTH: &str = "#!/usr/bin/env python3\nprint('{\"success\": true}')\n";

fn script(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

fn machines(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vm-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_three_script_form_runs_an_order_and_a_crash_makes_no_second_machine() {
    let scripts = tempfile::tempdir().unwrap();
    // The seed's `[provisioner.script]`, keys and all.
    let backend = format!(
        "[provisioner]\ntype = \"script\"\n\n[provisioner.script]\nprovision = \"{}\"\nterminate = \"{}\"\nhealth_check = \"{}\"\ntimeout_seconds = 300\n",
        script(scripts.path(), "provision.sh", PROVISION),
        script(scripts.path(), "terminate.sh", TERMINATE),
        script(scripts.path(), "health.sh", HEALTH),
    );
    // No `[capacity]` either, as in the seed: the backend cannot tell, so it is unmetered.
    let extra = "[polling]\nheartbeat_interval_seconds = 1\n";
    let mut s = Stack::start_with_backend(Db::Sqlite, Timings::fast(), Some(backend), extra)
        .await
        .unwrap();
    let machines_dir = s.dir.path().join("agent/machines");

    // Doctor accepts it and says what this form cannot guarantee.
    let cfg = s.agent_toml.display().to_string();
    let out = run_berth(["doctor", "--config", &cfg].map(String::from).to_vec()).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("no `status` action") && text.contains("terminate"),
        "{text}"
    );
    assert!(text.contains("no `list` action: reconcile and capacity"), "{text}");
    assert!(text.contains("the health action succeeded"), "{text}");
    assert!(text.contains("orders are admitted without a capacity check"), "{text}");

    // The first provision makes its machine, then hangs: the agent dies there, unreported.
    std::fs::create_dir_all(&machines_dir).unwrap();
    std::fs::write(machines_dir.join("hang-once"), "").unwrap();
    s.spawn_agent();
    s.wait_agent_alive().await;
    let agents = s.provider.agents().await.unwrap();
    let hb = agents[0].heartbeat.as_ref().expect("a heartbeat");
    assert!(hb.capacity.unmetered, "{hb:#?}");
    assert!(hb.backends.iter().all(|b| b.healthy), "{hb:#?}");
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "seed1").await;
    let op = a.operation_id.clone().unwrap();
    let until = Instant::now() + LONG;
    while !machines_dir.join("hung.pid").exists() {
        assert!(Instant::now() < until, "provision never ran:\n{}", s.agent_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.kill_agent();
    let pid: i32 = std::fs::read_to_string(machines_dir.join("hung.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    );
    assert_eq!(
        machines(&machines_dir).len(),
        1,
        "the cut-off provision made its machine"
    );

    // Restarted: the cut-off machine is terminated, one machine is made and handed over.
    s.spawn_agent();
    let done = s.finished(&op, LONG).await;
    assert_eq!(done.status, "succeeded", "{done:#?}\n{}", s.agent_log());
    assert!(
        s.agent_log().contains("orders are admitted without a capacity check"),
        "the agent says its backend is unmetered:\n{}",
        s.agent_log()
    );
    assert!(
        done.stages.iter().any(|st| st.stage == "cleanup"),
        "the terminate of the cut-off machine shows: {:#?}",
        done.stages
    );
    assert_eq!(machines(&machines_dir).len(), 1, "never two machines");
    let i = s.customer.instance(&a.instance_id).await.unwrap();
    assert_eq!(
        (i.status.as_str(), i.ip_address.as_deref()),
        ("running", Some("10.0.0.100"))
    );
    let plain = berth_api::credentials::open(AGE_ID, &i.credentials.unwrap()).unwrap();
    assert_eq!(plain.password, "generated_password");

    // Terminate goes to the seed's script; no record is left behind.
    let t = s.customer.instance_action(&a.instance_id, "terminate").await.unwrap();
    let t = s.finished(&t.operation_id.unwrap(), LONG).await;
    assert_eq!(t.status, "succeeded", "{t:#?}\n{}", s.agent_log());
    assert!(machines(&machines_dir).is_empty());
    let ledger = s.dir.path().join("agent/berth-script");
    assert_eq!(std::fs::read_dir(&ledger).unwrap().count(), 0, "{}", ledger.display());

    // The provider's hypervisors page says orders are not limited, with no empty bars.
    if let Some(b) = browser::Browser::start(&s.url, "seed_script").await {
        b.sign_in(&s.tokens.provider).await;
        b.goto("/ui/agents").await;
        b.wait_for(".agent").await;
        let text = b.text(".agent").await;
        assert!(text.contains("Capacity not metered"), "{text}");
        assert!(!text.contains("CPU cores"), "no bars of nothing: {text}");
        b.shot("hypervisors-unmetered").await;
        b.check_accessibility("hypervisors-unmetered").await;
        b.set_width(360).await;
        b.shot("hypervisors-unmetered-360px").await;
        b.set_width(1280).await;
        b.sign_out().await;
        b.sign_in(&s.tokens.operator).await;
        b.goto("/ui/agents").await;
        b.wait_for(".agent").await;
        assert!(b.text(".agent").await.contains("Capacity not metered"));
        b.shot("operator-hypervisors-unmetered").await;
    }
    s.term_agent().await;
}
