//! The lean `berth-agent` binary end to end: enroll, doctor, run an order to a running VM on
//! the Proxmox VE emulator through a real control plane, and stop cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_api::client::{Auth, Client};
use berth_api::wire::{CreateOrder, OfferingSpec};
use berth_pve_emulator::{Emulator, EmulatorConfig, Timings};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl lean";

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth-agent"));
    c.env_remove("BERTH_CONFIG").env_remove("BERTH_SETUP_TOKEN");
    c
}

async fn output(mut c: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_agent_enrolls_checks_runs_and_stops() {
    let emu = Emulator::start(EmulatorConfig {
        timings: Timings::fast(),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let server_toml = format!(
        "listen = \"127.0.0.1:0\"\n[database]\nsqlite = \"{}\"\n",
        dir.path().join("berth.db").display()
    );
    let cfg = berth_server::ServerConfig::parse(&server_toml, "server.toml").unwrap();
    let store = berth_server::open_store(&cfg).await.unwrap();
    let token_file = dir.path().join("operator.token");
    berth_server::bootstrap_operator(&*store, &token_file).await.unwrap();
    let server = berth_server::start(cfg, store).await.unwrap();
    let url = format!("http://{}", server.addr);
    let operator = Client::new(
        &url,
        Auth::Bearer(std::fs::read_to_string(&token_file).unwrap().trim().into()),
    );
    let p = operator.create_provider("acme").await.unwrap();
    let provider = Client::new(&url, Auth::Bearer(p.token.clone()));
    let customer = Client::new(&url, Auth::Bearer(operator.create_customer("bob").await.unwrap().token));

    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[provisioner]\ntype = \"proxmox\"\n\n[provisioner.proxmox]\napi_url = \"{}\"\napi_token_id = \"{}\"\n\
             api_token_secret = \"{}\"\nnode = \"pve1\"\ntemplate_vmid = 9000\nstorage = \"local-lvm\"\npool = \"berth\"\n\
             tls_fingerprint = \"sha256:{}\"\npoll_interval_ms = 20\n\n[api]\nendpoint = \"{url}\"\n\n[agent]\nstate_dir = \"state\"\n",
            emu.base_url(),
            emu.token_id(),
            emu.token_secret(),
            emu.fingerprint().unwrap()
        ),
    )
    .unwrap();
    let setup = provider.create_enrollment_token(&p.id, None).await.unwrap();
    let mut enroll = agent();
    enroll
        .arg("enroll")
        .arg("--config")
        .arg(&config)
        .env("BERTH_SETUP_TOKEN", &setup.token);
    let out = output(enroll).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut doctor = agent();
    doctor.arg("doctor").arg("--config").arg(&config);
    let out = output(doctor).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("knows this key"), "{text}");

    let log = dir.path().join("agent.log");
    let mut child = agent()
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let offering = provider
        .create_offering(&OfferingSpec {
            name: "small".into(),
            cores: 1,
            memory_mib: 1024,
            disk_gib: 10,
            bandwidth_mbps: None,
            template: None,
            price: None,
            region: None,
            labels: Default::default(),
            post_provision_commands: Vec::new(),
        })
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !provider.agents().await.unwrap().iter().any(|a| a.alive) {
        assert!(Instant::now() < until, "no heartbeat:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let order = CreateOrder {
        offering_id: offering.id,
        name: "lean1".into(),
        ssh_public_key: KEY.into(),
        requester_public_key: Some(age::x25519::Identity::generate().to_public().to_string()),
        skip_post_provision: false,
        provision: true,
    };
    let a = customer.create_order(&order, None).await.unwrap();
    let op_id = a.operation_id.unwrap();
    let until = Instant::now() + Duration::from_secs(90);
    let op = loop {
        let op = customer.wait_operation(&op_id, Duration::from_secs(5)).await.unwrap();
        if op.status == "succeeded" || op.status == "failed" {
            break op;
        }
        assert!(Instant::now() < until, "{op:#?}\n{}", log_text());
    };
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", log_text());
    assert_eq!(customer.instance(&a.instance_id).await.unwrap().status, "running");

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", log_text());
    assert!(log_text().contains("stopping: no new work"), "{}", log_text());
}
