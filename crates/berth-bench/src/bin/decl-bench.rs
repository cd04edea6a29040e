//! The declarative mode against the PVE emulator (in this process):
//!
//! - plan time for a site of 500 VMs, 20 storages and 50 interfaces (the cluster exported, so the
//!   plan is empty, and then with one field changed on every VM): wall time of observe + plan,
//!   and the API requests it takes;
//! - the same plan as a person runs it: `berth plan -f site.toml`, a new process each time
//!   (start-up, configuration, TLS, observe, plan, printing), when the `berth` binary is built;
//! - apply time of 50 VMs made from scratch against the emulator-bound ideal
//!   ⌈50 / concurrency⌉ × one create's emulated time.
//!
//! `cargo build --release -p berth -p berth-bench && target/release/decl-bench`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_decl::apply::{ApplyOptions, apply};
use berth_decl::observe::observe;
use berth_proxmox::client::network::NetworkInterface;
use berth_proxmox::client::{ClientOptions, Fingerprint, Params, PveClient, TlsOptions};
use berth_pve_emulator::{Emulator, EmulatorConfig, Timings};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 500)]
    vms: u32,
    #[arg(long, default_value_t = 20)]
    storages: u32,
    #[arg(long, default_value_t = 50)]
    interfaces: u32,
    #[arg(long, default_value_t = 7)]
    runs: usize,
    #[arg(long, default_value_t = 50)]
    creates: u32,
    /// Emulated duration of one VM create (qmcreate), ms.
    #[arg(long, default_value_t = 2000)]
    create_ms: u64,
    /// The `berth` binary for the cold CLI plan (skipped when it is not built).
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn client(emu: &berth_pve_emulator::EmulatorHandle) -> anyhow::Result<PveClient> {
    let mut o = ClientOptions::new(
        &emu.base_url(),
        &emu.token_id(),
        berth_core::Secret::new(emu.token_secret()),
    );
    o.tls = TlsOptions {
        fingerprints: vec![Fingerprint::parse(&emu.fingerprint().unwrap_or_default()).map_err(anyhow::Error::msg)?],
        ..TlsOptions::default()
    };
    o.poll_interval = Duration::from_millis(20);
    Ok(PveClient::new(o)?)
}

/// `berth plan -f site.toml` as a new process, `runs` times: the site exported, so each exits 0
/// ("No changes").
async fn cold_cli(args: &Args, emu: &berth_pve_emulator::EmulatorHandle, site: &str) -> anyhow::Result<()> {
    if !args.berth.is_file() {
        println!(
            "cold CLI plan: skipped ({} is not built: cargo build --release -p berth)",
            args.berth.display()
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (site_file, config) = (dir.path().join("site.toml"), dir.path().join("berth.toml"));
    std::fs::write(&site_file, site)?;
    std::fs::write(&config, config_text(emu))?;
    // What a cold run adds to the plan itself: the process, and reading the site file.
    let mut starts = Vec::new();
    let mut parses = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let berth = args.berth.clone();
        let out =
            tokio::task::spawn_blocking(move || std::process::Command::new(berth).arg("--version").output()).await??;
        anyhow::ensure!(out.status.success(), "berth --version failed");
        starts.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(berth_decl::parse("site.toml", site).map_err(|e| anyhow::anyhow!("{e:?}"))?);
        parses.push(t.elapsed().as_secs_f64());
    }
    println!(
        "cold CLI parts: process start (berth --version) median {:.3} s; reading the site file median {:.3} s",
        median(starts),
        median(parses)
    );
    let mut times = Vec::new();
    let mut requests = 0;
    for _ in 0..args.runs {
        let before = emu.requests().len();
        let t = Instant::now();
        let out = plan_process(&args.berth, &site_file, &config, dir.path()).await?;
        times.push(t.elapsed().as_secs_f64());
        requests = emu.requests().len() - before;
        anyhow::ensure!(
            out.status.code() == Some(0),
            "berth plan exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "cold CLI plan (berth plan -f, a new process each run, no change): median {:.3} s over {} runs, {requests} API requests",
        median(times),
        args.runs
    );
    Ok(())
}

async fn plan_process(berth: &Path, site: &Path, config: &Path, dir: &Path) -> anyhow::Result<std::process::Output> {
    let mut cmd = std::process::Command::new(berth);
    cmd.arg("plan")
        .arg("-f")
        .arg(site)
        .arg("--config")
        .arg(config)
        .arg("--audit")
        .arg(dir.join("audit.jsonl"))
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_PROXMOX_TOKEN_SECRET");
    Ok(tokio::task::spawn_blocking(move || cmd.output()).await??)
}

/// A `berth.toml` whose proxmox backend is the emulator (pinned by its certificate).
fn config_text(emu: &berth_pve_emulator::EmulatorHandle) -> String {
    format!(
        "[provisioner]\ntype = \"proxmox\"\n\n[provisioner.proxmox]\napi_url = \"{url}\"\napi_token_id = \"{token}\"\n\
         api_token_secret = \"{secret}\"\nnode = \"pve1\"\ntemplate_vmid = 9000\nstorage = \"local-lvm\"\n\
         tls_fingerprint = \"sha256:{fp}\"\n",
        url = emu.base_url(),
        token = emu.token_id(),
        secret = emu.token_secret(),
        fp = emu.fingerprint().unwrap_or_default(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ms = Duration::from_millis;
    let emu = Emulator::start(EmulatorConfig {
        timings: Timings {
            clone: ms(args.create_ms),
            ..Timings::fast()
        },
        ..EmulatorConfig::default()
    })
    .await?;
    emu.set_storage_gib("local-lvm", 100_000);
    let c = client(&emu)?;
    for i in 0..args.vms {
        let node = if i % 2 == 0 { "pve1" } else { "pve2" };
        emu.add_foreign_vm(node, 1000 + i, &format!("guest-{i}"));
    }
    for i in 0..args.storages {
        c.create_storage(
            &format!("dir{i}"),
            "dir",
            &Params::new().str("path", format!("/srv/dir{i}")),
        )
        .await?;
    }
    for i in 0..args.interfaces {
        let node = if i % 2 == 0 { "pve1" } else { "pve2" };
        let iface = NetworkInterface {
            iface: format!("vmbr{}", 10 + i),
            kind: "bridge".into(),
            autostart: true,
            ..Default::default()
        };
        c.create_interface(node, &iface).await?;
    }
    for node in ["pve1", "pve2"] {
        let upid = c.reload_network(node).await?;
        c.wait_task(&upid, Duration::from_secs(30)).await?;
    }
    let observed = observe(&c).await?;
    let site = berth_decl::export::export(&observed, None);
    let desired = berth_decl::parse("site.toml", &site).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let changed = berth_decl::parse("site.toml", &site.replace("cores = 2", "cores = 3"))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    println!(
        "site: {} VMs, {} storages, {} interfaces ({} objects, {} lines of TOML)",
        args.vms,
        args.storages + 3,
        observed
            .objects
            .iter()
            .filter(|o| o.kind == berth_decl::Kind::Interface)
            .count(),
        observed.objects.len(),
        site.lines().count()
    );
    for (what, d) in [("no change", &desired), ("cores changed on every VM", &changed)] {
        let mut times = Vec::new();
        let mut requests = 0;
        for _ in 0..args.runs {
            let before = emu.requests().len();
            let t = Instant::now();
            let o = observe(&c).await?;
            let p = berth_decl::plan(d, &o, "bench").map_err(|e| anyhow::anyhow!("{e:?}"))?;
            times.push(t.elapsed().as_secs_f64());
            requests = emu.requests().len() - before;
            std::hint::black_box(p);
        }
        println!(
            "plan ({what}): median {:.3} s over {} runs, {requests} API requests",
            median(times),
            args.runs
        );
    }

    cold_cli(&args, &emu, &site).await?;

    // 50 VMs from scratch.
    let mut text = String::from("version = 1\n[proxmox]\n");
    for i in 0..args.creates {
        text.push_str(&format!(
            "[[proxmox.vms]]\nvmid = {}\nnode = \"{}\"\nname = \"new-{i}\"\ncores = 1\nmemory = 512\nstate = \"stopped\"\n\
             disks.scsi0 = {{ storage = \"local-lvm\", size = \"4G\" }}\nnets.net0 = {{ bridge = \"vmbr0\" }}\n",
            5000 + i,
            if i % 2 == 0 { "pve1" } else { "pve2" }
        ));
    }
    let d = berth_decl::parse("new.toml", &text).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let p = berth_decl::plan(&d, &observe(&c).await?, "bench").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let opts = ApplyOptions::default();
    let concurrency = 8;
    let t = Instant::now();
    apply(&c, &p, opts).await?;
    let took = t.elapsed().as_secs_f64();
    let ideal = f64::from(args.creates.div_ceil(concurrency)) * args.create_ms as f64 / 1000.0;
    println!(
        "apply: {} VM creates in {took:.2} s; emulator-bound ideal {ideal:.2} s (⌈{}/{concurrency}⌉ × {:.1} s): {:.2}×",
        args.creates,
        args.creates,
        args.create_ms as f64 / 1000.0,
        took / ideal
    );
    Ok(())
}
