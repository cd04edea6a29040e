//! Commands inside a guest through its QEMU guest agent, as `virsh qemu-agent-command` sends
//! them: `guest-exec` of `/bin/sh -c <command>`, then `guest-exec-status` until it exited. Only
//! an agent that does not answer `guest-ping` yet means "not yet": any other failure of
//! `guest-exec` may have started the command, so it is not sent again.

use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_core::{ExecOutput, InstanceRef, ProviderError};
use serde_json::{Value, json};
use virt::domain::Domain;
use virt::error::ErrorNumber;

use crate::conn::map_err;
use crate::provider::LibvirtProvider;

/// How often a running command's status is asked for.
const STATUS_POLL: Duration = Duration::from_millis(100);
/// How often an agent that is not up yet is pinged again.
const AGENT_POLL: Duration = Duration::from_millis(250);
/// How long libvirt waits for the agent's answer to one command, in seconds.
const CALL_TIMEOUT: i32 = 10;

/// One agent command's outcome: its answer, or "the agent is not there yet" (with why).
enum Reply {
    Answer(Value),
    NotReady(String),
}

/// Sends `cmd` to the agent of the domain `r` names (which must carry Berth's marker).
async fn ask(p: &LibvirtProvider, r: &InstanceRef, cmd: Value) -> Result<Reply, ProviderError> {
    let what = format!(
        "{} through the guest agent of",
        cmd["execute"].as_str().unwrap_or("a command")
    );
    p.with_owned(&what, r, move |f| agent_command(&f.dom, &cmd.to_string()))
        .await
}

fn agent_command(dom: &Domain, cmd: &str) -> Result<Reply, ProviderError> {
    match dom.qemu_agent_command(cmd, CALL_TIMEOUT, 0) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(v) => Ok(Reply::Answer(v)),
            Err(e) => Err(ProviderError::internal(format!(
                "the guest agent answered {:?}, which is not JSON: {e}",
                text.chars().take(200).collect::<String>()
            ))),
        },
        Err(e) if e.code().is(ErrorNumber::AgentUnresponsive) => Ok(Reply::NotReady(e.message().to_owned())),
        Err(e) if e.code().is(ErrorNumber::ArgumentUnsupported) => Err(ProviderError::unsupported(format!(
            "the domain has no QEMU guest agent channel ({})",
            e.message()
        ))),
        Err(e) if e.code().is(ErrorNumber::OperationInvalid) => Err(ProviderError::conflict(format!(
            "the guest is not running; start it first ({})",
            e.message()
        ))),
        Err(e) => Err(map_err(e)),
    }
}

/// Waits until the guest agent answers `guest-ping`, within `limit` counted from `since`.
pub(crate) async fn wait_agent(
    p: &LibvirtProvider,
    r: &InstanceRef,
    since: Instant,
    limit: Duration,
    why: &str,
) -> Result<(), ProviderError> {
    loop {
        let last = match ask(p, r, json!({"execute": "guest-ping"})).await? {
            Reply::Answer(_) => return Ok(()),
            Reply::NotReady(last) => last,
        };
        if since.elapsed() >= limit {
            return Err(ProviderError::Timeout {
                what: format!("the guest agent of {r} to answer, {why} (last: {last})"),
                after: limit,
            });
        }
        tokio::time::sleep(AGENT_POLL).await;
    }
}

pub async fn exec(
    p: &LibvirtProvider,
    r: &InstanceRef,
    command: &str,
    timeout: Duration,
) -> Result<ExecOutput, ProviderError> {
    let started = Instant::now();
    let shown = ExecOutput::shown(command);
    // Polled by name: found once, not by scanning every domain's marker each time.
    let name = p
        .with_owned("running a command in", r, |f| Ok(f.facts.name.clone()))
        .await?;
    let by_name = InstanceRef::Backend(name.clone());
    let ctx = |e: ProviderError| e.context(format!("running `{shown}` in {name}"));
    wait_agent(p, &by_name, started, timeout, &format!("to run `{shown}`"))
        .await
        .map_err(ctx)?;
    let start = json!({
        "execute": "guest-exec",
        "arguments": {"path": "/bin/sh", "arg": ["-c", command], "capture-output": true},
    });
    let pid = match ask(p, &by_name, start).await.map_err(ctx)? {
        Reply::Answer(v) => v["return"]["pid"].as_i64().ok_or_else(|| {
            ctx(ProviderError::internal(format!(
                "the guest agent answered {v} to guest-exec"
            )))
        })?,
        Reply::NotReady(last) => {
            return Err(ctx(ProviderError::unavailable(format!(
                "the guest agent stopped answering ({last}); the command may have started"
            ))));
        }
    };
    tracing::debug!(domain = %name, pid, command = %shown, "command started by the guest agent");
    loop {
        let status = json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
        let last = match ask(p, &by_name, status).await.map_err(ctx)? {
            Reply::Answer(v) if v["return"]["exited"] == Value::Bool(true) => {
                let out = output(&v["return"]);
                tracing::debug!(domain = %name, pid, exit_status = out.exit_status, "command exited");
                return Ok(out);
            }
            Reply::Answer(_) => "still running".to_owned(),
            Reply::NotReady(last) => last,
        };
        if started.elapsed() >= timeout {
            return Err(ProviderError::Timeout {
                what: format!("`{shown}` to exit in {name} (guest PID {pid}, which may still run; last: {last})"),
                after: timeout,
            });
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

/// A finished command's `guest-exec-status` answer as Berth reports it (QEMU sends the output
/// base64-encoded).
fn output(st: &Value) -> ExecOutput {
    let text = |key: &str| {
        let raw = st[key].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap_or_else(|_| raw.as_bytes().to_vec());
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let flag = |key: &str| st[key].as_bool().unwrap_or(false);
    ExecOutput {
        exit_status: ExecOutput::status_of(st["exitcode"].as_i64(), st["signal"].as_i64()),
        stdout: text("out-data"),
        stderr: text("err-data"),
        truncated: flag("out-truncated") || flag("err-truncated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode() {
        let out = output(&json!({"exited": true, "exitcode": 3, "out-data": "aGkK", "err-truncated": true}));
        assert_eq!(
            (out.exit_status, out.stdout.as_str(), out.stderr.as_str()),
            (3, "hi\n", "")
        );
        assert!(out.truncated);
        assert_eq!(output(&json!({"exited": true, "signal": 9})).exit_status, 137);
    }
}
