//! Running a command inside a VM through the QEMU guest agent (post-provision commands):
//! `POST agent/exec` with `/bin/sh -c <command>`, then `GET agent/exec-status` until it exited.
//! An agent that is not up yet means "not yet"; containers have no agent, so no exec.

use std::time::Duration;

use berth_core::{ExecOutput, InstanceRef, ProviderError};

use super::ProxmoxProvider;
use super::guest::Guest;
use crate::client::types::AgentExecStatus;
use crate::client::{GuestType, Poll, PveError};

/// What PVE reported for a finished command, as Berth reports it: a signal `N` as 128 + N.
pub(crate) fn exec_output(st: AgentExecStatus) -> ExecOutput {
    ExecOutput {
        exit_status: ExecOutput::status_of(st.exitcode, st.signal),
        stdout: st.out_data.unwrap_or_default(),
        stderr: st.err_data.unwrap_or_default(),
        truncated: st.out_truncated || st.err_truncated,
    }
}

impl ProxmoxProvider {
    pub(crate) async fn exec_ref(
        &self,
        r: &InstanceRef,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutput, ProviderError> {
        let g = self.owned(r).await?;
        let shown = ExecOutput::shown(command);
        if g.ty == GuestType::Lxc {
            return Err(ProviderError::unsupported(format!(
                "running `{shown}` inside {}: containers have no QEMU guest agent, and PVE's API \
                 cannot run commands in them",
                g.label()
            )));
        }
        let poll = Poll::new(self.client.poll_interval());
        let pid = self.start_exec(&g, command, &shown, &poll, timeout).await?;
        tracing::debug!(vmid = g.vmid, pid, command = %shown, "command started by the guest agent");
        let out = self.wait_exec(&g, pid, &shown, &poll, timeout).await?;
        tracing::debug!(vmid = g.vmid, pid, exit_status = out.exit_status, "command exited");
        Ok(out)
    }

    /// Starts the command, waiting (within `timeout`) for the agent to come up. Only "the agent
    /// did not answer the ping" is retried: any other failure may have started the command.
    async fn start_exec(
        &self,
        g: &Guest,
        command: &str,
        shown: &str,
        poll: &Poll,
        timeout: Duration,
    ) -> Result<u64, ProviderError> {
        let argv = ["/bin/sh", "-c", command];
        loop {
            let last = match self.client.agent_exec(&g.node, g.vmid, &argv).await {
                Ok(pid) => return Ok(pid),
                Err(e) if e.is_agent_down() => e,
                Err(e) => return Err(exec_failure(g, shown, e)),
            };
            if poll.elapsed() >= timeout {
                return Err(ProviderError::Timeout {
                    what: format!("the guest agent of {} to run `{shown}` (last: {last})", g.label()),
                    after: timeout,
                });
            }
            poll.sleep(timeout).await;
        }
    }

    /// Polls `exec-status` until the command exited or `timeout` (counted from the start of
    /// `exec`) runs out. Transport and proxy failures and a briefly absent agent are retried.
    async fn wait_exec(
        &self,
        g: &Guest,
        pid: u64,
        shown: &str,
        poll: &Poll,
        timeout: Duration,
    ) -> Result<ExecOutput, ProviderError> {
        loop {
            let last = match self.client.agent_exec_status(&g.node, g.vmid, pid).await {
                Ok(st) if st.exited => return Ok(exec_output(st)),
                Ok(_) => "still running".to_owned(),
                Err(e) if e.is_agent_down() || e.is_transport() || e.is_proxy_failure() => e.to_string(),
                Err(e) => return Err(exec_failure(g, shown, e)),
            };
            if poll.elapsed() >= timeout {
                return Err(ProviderError::Timeout {
                    what: format!(
                        "`{shown}` to exit in {} (guest PID {pid}, which may still run; last: {last})",
                        g.label()
                    ),
                    after: timeout,
                });
            }
            poll.sleep(timeout).await;
        }
    }
}

/// The error for a failed exec call: no agent is Unsupported, a stopped VM a Conflict, an error
/// the agent itself answered (a PID it no longer knows after a reboot, a program it cannot run)
/// Internal: a read of exec-status failing that way is not a transient failure.
fn exec_failure(g: &Guest, shown: &str, e: PveError) -> ProviderError {
    let ctx = format!("running `{shown}` in {}", g.label());
    if e.is_agent_not_configured() {
        return ProviderError::unsupported(format!(
            "{ctx}: the VM has no QEMU guest agent configured (set `agent: 1` in the template)"
        ));
    }
    if e.is_guest_not_running() {
        return ProviderError::conflict(format!("{ctx}: the VM is not running; start it first"));
    }
    if e.is_agent_error() {
        return ProviderError::internal(format!("{ctx}: {e} (did the guest restart?)"));
    }
    ProviderError::from(e).context(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals() {
        let st = |exitcode, signal| AgentExecStatus {
            exited: true,
            exitcode,
            signal,
            ..AgentExecStatus::default()
        };
        assert_eq!(exec_output(st(Some(3), None)).exit_status, 3);
        assert_eq!(exec_output(st(None, Some(9))).exit_status, 137);
        assert_eq!(exec_output(st(None, None)).exit_status, -1);
        assert_eq!(
            exec_output(st(Some(0xC000_0005), None)).exit_status,
            0xC000_0005_u32 as i32
        );
        let full = AgentExecStatus {
            exited: true,
            exitcode: Some(0),
            out_data: Some("hi\n".into()),
            err_truncated: true,
            ..AgentExecStatus::default()
        };
        let out = exec_output(full);
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("hi\n", ""));
        assert!(out.truncated && out.success());
    }
}
