//! `libvirt-bench`: time from `create` called to the domain running (overlay, seed ISO, define and
//! start: Berth's own work plus libvirt's) and to the guest's address being known, against the
//! private libvirtd of `scripts/test-libvirtd.sh` and the tiny guest of
//! `scripts/build-test-image.sh` (TCG guests; run as root).
//!
//! With `--pools`, also the warm pools' take: from `take` called to the address known, for a
//! machine of a `stopped` pool (never booted: the guest boots with the customer's seed) and of a
//! `running` one (booted: the customer's host name and keys go in through the guest agent).
//!
//! `cargo run --release -p berth-bench --bin libvirt-bench -- [--runs 5] [--pools]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_core::{
    GuestKind, InstanceId, InstanceRef, NetworkSpec, PoolMark, PoolMode, ProgressSink, Provider, SshPublicKey, Stage,
    StageEvent, StagePhase, VmSpec,
};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Sequential creates to take the median of (after one warm-up create).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// Also time taking machines from warm pools (one fill per run, not timed).
    #[arg(long)]
    pools: bool,
}

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bench@berth";

/// When each stage completed, counted from the moment `create` was called.
struct Clock {
    t0: Instant,
    marks: Mutex<Vec<(Stage, Duration)>>,
}

impl ProgressSink for Clock {
    fn event(&self, e: StageEvent) {
        if e.phase == StagePhase::Completed {
            self.marks
                .lock()
                .expect("clock lock")
                .push((e.stage, self.t0.elapsed()));
        }
    }
}

type Marks = Vec<(Stage, Duration)>;

fn at(marks: &Marks, s: Stage) -> Duration {
    marks
        .iter()
        .find(|(st, _)| *st == s)
        .map(|(_, d)| *d)
        .unwrap_or_default()
}

fn script(workspace: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("bash").args(args).current_dir(workspace).output()?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn summary(label: &str, v: Vec<Duration>) {
    let (lo, hi) = (*v.iter().min().expect("runs"), *v.iter().max().expect("runs"));
    println!("  {label:<34}{:>8}  (min {}, max {})", ms(median(v)), ms(lo), ms(hi));
}

/// A world-traversable scratch directory (QEMU runs as libvirt-qemu and must reach the disks).
fn scratch_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("berth-libvirt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    let image_dir = workspace.join("target/berth-test-image");
    let image = PathBuf::from(script(
        &workspace,
        &["scripts/build-test-image.sh", &image_dir.to_string_lossy()],
    )?);
    let uri = script(&workspace, &["scripts/test-libvirtd.sh", "start"])?;
    let root = scratch_dir()?;
    let text = format!(
        "[provisioner]\ntype = \"libvirt\"\n[provisioner.libvirt]\nuri = \"{uri}\"\nimages_dir = \"{}\"\n\
         instances_dir = \"{}\"\ntemplate = \"berth-test\"\nnetwork = \"user\"\ndomain_type = \"qemu\"\n",
        image.parent().context("image dir")?.display(),
        root.join("instances").display()
    );
    let cfg = berth_agent::parse_config(&root.join("bench.toml"), &text, &|_| None)?;
    let p = berth_agent::build_provider(&cfg, &cfg.backends[0])?;
    let mut runs: Vec<Marks> = Vec::new();
    // Run 0 is a warm-up: the first create after a daemon start pays libvirt's one-time work.
    for n in 0..=args.runs {
        let spec = order(&format!("bench-{n}"))?;
        let clock = Clock {
            t0: Instant::now(),
            marks: Mutex::new(Vec::new()),
        };
        p.create(&spec, &clock)
            .await
            .with_context(|| format!("create bench-{n}"))?;
        p.delete(&InstanceRef::Id(spec.instance_id.clone())).await?;
        if n > 0 {
            runs.push(clock.marks.into_inner().expect("clock lock"));
        }
    }
    let between = |from: Option<Stage>, to: Stage| -> Vec<Duration> {
        runs.iter()
            .map(|m| at(m, to) - from.map(|f| at(m, f)).unwrap_or_default())
            .collect()
    };
    println!(
        "libvirt backend, {} runs after a warm-up (TCG guests, user networking):",
        args.runs
    );
    summary("overlay (qemu-img create)", between(None, Stage::CloneTemplate));
    summary(
        "seed ISO + define",
        between(Some(Stage::CloneTemplate), Stage::ConfigureVm),
    );
    summary(
        "start (libvirt starts QEMU)",
        between(Some(Stage::ConfigureVm), Stage::StartVm),
    );
    summary("create called -> domain running", between(None, Stage::StartVm));
    summary("create called -> IP known", between(None, Stage::WaitNetwork));
    if args.pools {
        for mode in [PoolMode::Stopped, PoolMode::Running] {
            let took = takes(p.as_ref(), mode, args.runs).await?;
            summary(&format!("{mode} pool: take -> IP known"), took);
        }
    }
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

/// The bench's order: 1 core, 256 MiB, 1 GiB, one key.
fn order(id: &str) -> anyhow::Result<VmSpec> {
    Ok(VmSpec {
        instance_id: InstanceId::parse(id)?,
        name: id.to_owned(),
        kind: GuestKind::Vm,
        cores: 1,
        memory_mib: 256,
        disk_gib: 1,
        template: None,
        ssh_keys: vec![SshPublicKey::parse(KEY)?],
        user: None,
        network: NetworkSpec::default(),
    })
}

/// `runs` takes from a pool kept in `mode`, each of a machine filled just before (not timed).
async fn takes(p: &dyn Provider, mode: PoolMode, runs: u16) -> anyhow::Result<Vec<Duration>> {
    let mark = PoolMark::new("bench", "k1")?;
    let mut took = Vec::new();
    for n in 0..runs {
        let from = berth_core::pool::pool_machine_id();
        let fill = VmSpec {
            ssh_keys: Vec::new(),
            ..order(from.as_str())?
        };
        p.fill(&fill, &mark, mode, &berth_core::NoProgress)
            .await
            .with_context(|| format!("filling {from}"))?;
        let spec = order(&format!("bench-{mode}-{n}"))?;
        let t0 = Instant::now();
        let inst = p
            .take(&from, &mark, mode, &spec, &berth_core::NoProgress)
            .await
            .with_context(|| format!("taking {from}"))?;
        took.push(t0.elapsed());
        anyhow::ensure!(inst.ipv4.is_some(), "{} has no address", spec.name);
        p.delete(&InstanceRef::Id(spec.instance_id.clone())).await?;
    }
    Ok(took)
}
