//! `agent/exec` and `agent/exec-status` on the wire: JSON and form encodings of `command`, the
//! agent's readiness, per-VM PIDs, "exited: 0" while running, the one-time result, truncation,
//! schema validation, reboots, and an emulator that refuses `guest-exec`.

mod common;

use std::time::Duration;

use berth_pve_emulator::{EmulatorConfig, Timings};
use common::{Api, Resp, fast_config, start, start_with};
use serde_json::{Value, json};

impl Api {
    async fn exec_json(&self, vmid: u32, body: Value) -> Resp {
        self.send(
            self.client
                .post(self.url(&format!("/nodes/pve1/qemu/{vmid}/agent/exec")))
                .header("Authorization", &self.auth)
                .json(&body),
        )
        .await
    }

    async fn exec_status(&self, vmid: u32, pid: &Value) -> Resp {
        self.get(&format!("/nodes/pve1/qemu/{vmid}/agent/exec-status?pid={pid}"))
            .await
    }

    /// Polls exec-status until `exited` is 1; every answer before must be exactly `exited: 0`.
    async fn exec_result(&self, vmid: u32, pid: &Value) -> Value {
        for _ in 0..1000 {
            let r = self.exec_status(vmid, pid).await;
            assert_eq!(r.status, 200, "{} {}", r.reason, r.raw);
            if r.data()["exited"] == 1 {
                return r.data().clone();
            }
            assert_eq!(r.data(), &json!({"exited": 0}));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("pid {pid} of VM {vmid} did not exit");
    }

    /// Clones 9000 into `vmid`, starts it and waits until its agent answers.
    async fn running_vm(&self, vmid: u32) {
        self.clone_9000(vmid, &[]).await;
        let st = self
            .run_task(self.post(&format!("/nodes/pve1/qemu/{vmid}/status/start"), &[]).await)
            .await;
        assert_eq!(st["exitstatus"], "OK");
        for _ in 0..400 {
            if self
                .post(&format!("/nodes/pve1/qemu/{vmid}/agent/ping"), &[])
                .await
                .status
                == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the agent of VM {vmid} never came up");
    }
}

#[tokio::test]
async fn runs_commands_and_reports_each_result_once() {
    let api = start().await;
    api.running_vm(120).await;
    let r = api
        .exec_json(
            120,
            json!({"command": ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let pid = r.data()["pid"].clone();
    assert!(pid.as_u64().is_some_and(|p| p >= 1000), "{}", r.raw);
    let res = api.exec_result(120, &pid).await;
    assert_eq!(
        res,
        json!({"exited": 1, "exitcode": 3, "out-data": "out\n", "err-data": "err\n"})
    );
    // qemu-ga forgets a PID once it reported it.
    let again = api.exec_status(120, &pid).await;
    assert_eq!(
        (again.status, again.reason.as_str()),
        (500, "Agent error: Invalid parameter 'pid'")
    );

    // A running command answers exited 0; PIDs count per VM; another VM does not know this one.
    let slow = api.exec_json(120, json!({"command": ["sleep", "0.3"]})).await;
    let slow_pid = slow.data()["pid"].clone();
    assert_eq!(slow_pid.as_u64(), pid.as_u64().map(|p| p + 1));
    assert_eq!(api.exec_status(120, &slow_pid).await.data(), &json!({"exited": 0}));
    api.running_vm(121).await;
    assert_eq!(api.exec_status(121, &slow_pid).await.status, 500);
    assert_eq!(
        api.exec_result(120, &slow_pid).await,
        json!({"exited": 1, "exitcode": 0})
    );

    // stdin from input-data; a form value is a single element (the program alone).
    let cat = api
        .exec_json(120, json!({"command": ["cat"], "input-data": "fed"}))
        .await;
    let res = api.exec_result(120, &cat.data()["pid"]).await;
    assert_eq!(res["out-data"], "fed");
    let form = api
        .post("/nodes/pve1/qemu/120/agent/exec", &[("command", "true")])
        .await;
    assert_eq!(form.status, 200, "{}", form.raw);
    assert_eq!(api.exec_result(120, &form.data()["pid"]).await["exitcode"], 0);
    // A repeated form key is one NUL-joined element, as PVE makes it: no such program.
    let joined = api
        .post(
            "/nodes/pve1/qemu/120/agent/exec",
            &[("command", "/bin/sh"), ("command", "-c")],
        )
        .await;
    assert_eq!(joined.status, 500);
    assert!(
        joined
            .reason
            .starts_with("Agent error: Failed to execute child process"),
        "{}",
        joined.reason
    );
    let missing = api
        .exec_json(120, json!({"command": ["/nonexistent/berth-test"]}))
        .await;
    // glib's curly quotes reach the body; the reason phrase carries only ASCII.
    assert_eq!(
        missing.body["message"],
        "Agent error: Failed to execute child process “/nonexistent/berth-test” (No such file or directory)\n"
    );
    assert!(api.h.schema_violations().is_empty() || !api.h.schema_loaded());
}

/// Whether a process whose command line contains `needle` runs on this host.
fn host_runs(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
}

/// Whether `check` becomes true within 2 s.
async fn eventually(check: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_reboot_forgets_and_kills_running_commands() {
    let api = start().await;
    api.running_vm(125).await;
    let r = api.exec_json(125, json!({"command": ["sleep", "31.4159"]})).await;
    let pid = r.data()["pid"].clone();
    assert_eq!(api.exec_status(125, &pid).await.data(), &json!({"exited": 0}));
    // A just-exec'd process shows an empty command line for a moment.
    assert!(
        eventually(|| host_runs("sleep 31.4159")).await,
        "the command really runs"
    );
    let st = api
        .run_task(api.post("/nodes/pve1/qemu/125/status/reboot", &[]).await)
        .await;
    assert_eq!(st["exitstatus"], "OK");
    assert!(
        eventually(|| !host_runs("sleep 31.4159")).await,
        "the reboot killed the command"
    );
    for _ in 0..400 {
        let r = api.exec_status(125, &pid).await;
        if r.reason != "QEMU guest agent is not running" {
            assert_eq!(
                (r.status, r.reason.as_str()),
                (500, "Agent error: Invalid parameter 'pid'")
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the agent never came back");
}

#[tokio::test]
async fn agent_state_and_validation_come_first() {
    let api = start().await;
    api.clone_9000(122, &[]).await;
    let cmd = json!({"command": ["true"]});
    let r = api.exec_json(122, cmd.clone()).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "VM 122 is not running"));
    let r = api.exec_json(999, cmd.clone()).await;
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"
    );

    api.h.set_timings(Timings {
        agent_ready: Duration::from_secs(600),
        ..Timings::fast()
    });
    let st = api
        .run_task(api.post("/nodes/pve1/qemu/122/status/start", &[]).await)
        .await;
    assert_eq!(st["exitstatus"], "OK");
    let r = api.exec_json(122, cmd.clone()).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "QEMU guest agent is not running"));
    let r = api.exec_status(122, &json!(1000)).await;
    assert_eq!(r.reason, "QEMU guest agent is not running");

    if api.h.schema_loaded() {
        let r = api.post("/nodes/pve1/qemu/122/agent/exec", &[]).await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.body["errors"]["command"],
            "property is missing and it is not optional"
        );
        let r = api.get("/nodes/pve1/qemu/122/agent/exec-status").await;
        assert_eq!(r.body["errors"]["pid"], "property is missing and it is not optional");
        let r = api.get("/nodes/pve1/qemu/122/agent/exec-status?pid=x").await;
        assert_eq!(r.body["errors"]["pid"], "type check ('integer') failed - got 'x'");
    }
}

#[tokio::test]
async fn output_limit_and_blocked_exec() {
    let api = start_with(EmulatorConfig {
        exec_output_limit: 5,
        ..fast_config()
    })
    .await;
    api.running_vm(123).await;
    let r = api
        .exec_json(123, json!({"command": ["/bin/sh", "-c", "printf 0123456789"]}))
        .await;
    let res = api.exec_result(123, &r.data()["pid"]).await;
    assert_eq!(
        res,
        json!({"exited": 1, "exitcode": 0, "out-data": "01234", "out-truncated": 1})
    );

    let api = start_with(EmulatorConfig {
        guest_exec: false,
        ..fast_config()
    })
    .await;
    api.running_vm(124).await;
    let r = api.exec_json(124, json!({"command": ["true"]})).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            500,
            "Agent error: The command guest-exec has been disabled for this instance"
        )
    );
}
