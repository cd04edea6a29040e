//! Emulator configuration: listen address, TLS, schema location and the timing knobs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How an emulator instance is started.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; default `127.0.0.1:0` (an ephemeral port).
    pub listen: SocketAddr,
    /// Default true: HTTPS with a freshly generated self-signed certificate.
    pub tls: bool,
    /// `apidata.json`; `None` = no schema validation (handlers still check required params).
    pub schema_path: Option<PathBuf>,
    /// Task durations and delays.
    pub timings: Timings,
    /// Default false: error bodies carry `"message"` (PVE 8.3+); true = `{"data":null}` only.
    pub old_error_envelope: bool,
    /// Default true: create the standard world (nodes, storages, templates, pool, token).
    pub seed: bool,
    /// Default true: `agent/exec` runs the command for real, as a subprocess of the emulator on
    /// this host (with the emulator's user, environment and working directory). False answers
    /// like a guest agent with `guest-exec` blocked.
    pub guest_exec: bool,
    /// Bytes of stdout and of stderr kept per `agent/exec` command; default qemu-ga's 16 MiB.
    pub exec_output_limit: usize,
    /// The PVE major version to behave as: 9 (default; HA rules) or 8 (HA groups).
    pub pve_major: u8,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            schema_path: Self::default_schema_path(),
            timings: Timings::default(),
            old_error_envelope: false,
            seed: true,
            guest_exec: true,
            exec_output_limit: crate::exec::DEFAULT_OUTPUT_LIMIT,
            pve_major: 9,
        }
    }
}

impl EmulatorConfig {
    /// `<workspace>/../shared/pve/apidata.json` if that file exists (found from CARGO_MANIFEST_DIR at
    /// compile time, or the BERTH_PVE_SCHEMA env var at run time), else None.
    pub fn default_schema_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("BERTH_PVE_SCHEMA") {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Some(p);
            }
        }
        // CARGO_MANIFEST_DIR = <workspace>/crates/berth-pve-emulator
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let workspace = manifest.parent()?.parent()?;
        let candidate = workspace.parent()?.join("shared").join("pve").join("apidata.json");
        candidate.is_file().then_some(candidate)
    }
}

/// How long the emulated operations take.
#[derive(Clone, Debug)]
pub struct Timings {
    pub clone: Duration,
    pub start: Duration,
    pub stop: Duration,
    pub shutdown: Duration,
    pub reboot: Duration,
    pub destroy: Duration,
    pub create_ct: Duration,
    pub resize: Duration,
    /// The guest agent answers this long after the VM started.
    pub agent_ready: Duration,
    /// Real PVE: 3 s; tests use ~10 ms.
    pub auth_failure_delay: Duration,
    /// A new UPID answers 400 "no such task" this long.
    pub no_such_task_window: Duration,
}

impl Default for Timings {
    /// Roughly the pace of a small real cluster (still quicker than most real clones).
    fn default() -> Self {
        Timings {
            clone: Duration::from_millis(2000),
            start: Duration::from_millis(1000),
            stop: Duration::from_millis(500),
            shutdown: Duration::from_millis(1500),
            reboot: Duration::from_millis(2000),
            destroy: Duration::from_millis(700),
            create_ct: Duration::from_millis(2500),
            resize: Duration::from_millis(300),
            agent_ready: Duration::from_millis(5000),
            auth_failure_delay: Duration::from_secs(3),
            no_such_task_window: Duration::from_millis(50),
        }
    }
}

impl Timings {
    /// For tests: tasks ~30 ms, agent 50 ms, auth failure 10 ms, no "no such task" window.
    pub fn fast() -> Self {
        let ms = Duration::from_millis;
        Timings {
            clone: ms(30),
            start: ms(30),
            stop: ms(30),
            shutdown: ms(30),
            reboot: ms(30),
            destroy: ms(30),
            create_ct: ms(30),
            resize: ms(30),
            agent_ready: ms(50),
            auth_failure_delay: ms(10),
            no_such_task_window: Duration::ZERO,
        }
    }
}
