//! Crash safety as an operator meets it: `berth vm create` killed with SIGKILL right after each
//! stage starts and completes, then run again: exactly one VM, running, and nothing left after
//! delete.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use berth_pve_emulator::Timings;
use common::*;

/// Starts `berth vm create`, kills it with SIGKILL when its log shows `stage=<stage>` with
/// `phase`, and returns whether the kill happened before the command finished by itself.
fn create_and_kill(env: &Env, id: &str, stage: &str, phase: &str) -> bool {
    let mut child = berth()
        .args([
            "vm",
            "create",
            "--name",
            id,
            "--ssh-key",
            KEY,
            "--instance-id",
            id,
            "--config",
        ])
        .arg(&env.config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut killed = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains(&format!("stage={stage}")) && line.contains(phase) {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_every_stage_then_rerun_yields_one_vm() {
    let slow = Timings {
        clone: Duration::from_millis(300),
        start: Duration::from_millis(200),
        agent_ready: Duration::from_millis(300),
        ..Timings::fast()
    };
    let env = start(slow).await;
    let stages = ["clone_template", "configure_vm", "start_vm", "wait_network"];
    for (n, stage) in stages.iter().enumerate() {
        for phase in ["started", "completed"] {
            let id = format!("crash-{n}-{phase}");
            let env_ref = &env;
            let killed = tokio::task::block_in_place(|| create_and_kill(env_ref, &id, stage, phase));
            assert!(killed, "berth finished before reporting {stage} {phase}");

            let inst = env
                .json(&["vm", "create", "--name", &id, "--ssh-key", KEY, "--instance-id", &id])
                .await;
            assert_eq!(inst["state"], "running", "after kill at {stage} {phase}");
            let named: Vec<_> = env.machines().into_iter().filter(|g| g.name == id).collect();
            assert_eq!(
                named.len(),
                1,
                "kill at {stage} {phase}: expected one VM, found {named:?}"
            );

            assert_eq!(env.json(&["vm", "delete", &id, "--yes"]).await["outcome"], "deleted");
            assert!(
                env.machines().is_empty(),
                "kill at {stage} {phase} left {:?}",
                env.machines()
            );
        }
    }
}
