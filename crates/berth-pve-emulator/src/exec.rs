//! qemu-ga's `guest-exec` / `guest-exec-status`, for real: the emulated guest's command runs as a
//! subprocess on the host (this is a test tool, never shipped). Like qemu-ga it runs the program
//! with its arguments (no shell unless asked for), captures stdout and stderr up to a limit per
//! stream (16 MiB, `GUEST_EXEC_MAX_OUTPUT`) and flags the rest as truncated, numbers processes per
//! guest, and forgets a process once it reported it finished. A stop or reboot of the guest
//! forgets (and kills) its processes; so does destroying it.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// qemu-ga's `GUEST_EXEC_MAX_OUTPUT`: what is kept of each of stdout and stderr.
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// How `guest-exec` behaves in this emulator.
#[derive(Clone, Debug)]
pub(crate) struct ExecSettings {
    /// Off = qemu-ga started with `--block-rpcs=guest-exec`.
    pub enabled: bool,
    pub output_limit: usize,
    /// Stands for the guests' file systems: a command runs with `BERTH_ROOT=<dir>/<vmid>`, so
    /// what Berth writes into a guest (its pool personalisation) lands there, not on this host.
    pub guest_root: Arc<tempfile::TempDir>,
}

impl ExecSettings {
    /// The directory standing for guest `vmid`'s `/`.
    pub fn root_of(&self, vmid: u32) -> std::path::PathBuf {
        self.guest_root.path().join(vmid.to_string())
    }
}

fn guest_root() -> Arc<tempfile::TempDir> {
    Arc::new(
        tempfile::Builder::new()
            .prefix("berth-pve-guests")
            .tempdir()
            .expect("a temporary directory for the emulated guests' files"),
    )
}

impl Default for ExecSettings {
    fn default() -> Self {
        ExecSettings {
            enabled: true,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            guest_root: guest_root(),
        }
    }
}

/// One captured stream.
#[derive(Clone, Debug, Default)]
struct Captured {
    data: Vec<u8>,
    truncated: bool,
}

/// A process that ended, as qemu-ga reports it.
#[derive(Clone, Debug)]
struct Finished {
    code: Option<i32>,
    signal: Option<i32>,
    out: Captured,
    err: Captured,
}

impl Finished {
    /// `guest-exec-status` of a finished process, after PVE's `qemu_exec_status` (base64 decoded,
    /// booleans as 1/0): output fields only for non-empty streams, `*-truncated` only when set.
    fn to_json(&self) -> Value {
        let mut v = json!({ "exited": 1 });
        if let Some(code) = self.code {
            v["exitcode"] = json!(code);
        } else if let Some(sig) = self.signal {
            v["signal"] = json!(sig);
        }
        for (stream, data, truncated) in [("out", &self.out, "out-truncated"), ("err", &self.err, "err-truncated")] {
            if data.data.is_empty() {
                continue;
            }
            v[format!("{stream}-data")] = json!(String::from_utf8_lossy(&data.data));
            if data.truncated {
                v[truncated] = json!(1);
            }
        }
        v
    }
}

/// Aborts the task (and so kills its child, `kill_on_drop`) when the process is forgotten.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Proc {
    /// The guest run it belongs to (`Guest::started_at`).
    boot: Option<Instant>,
    done: Arc<OnceLock<Finished>>,
    _task: AbortOnDrop,
}

/// One guest's processes started through its agent.
#[derive(Default)]
pub(crate) struct GuestExecs {
    next_pid: u32,
    procs: BTreeMap<u32, Proc>,
}

impl GuestExecs {
    /// Starts `argv` (program, then arguments; the program is looked up in `PATH`) with
    /// `input` on stdin and `BERTH_ROOT=root` (made if absent); the guest PID, or qemu-ga's
    /// error text. Needs a Tokio runtime.
    pub fn spawn(
        &mut self,
        argv: &[String],
        input: Option<Vec<u8>>,
        boot: Option<Instant>,
        limit: usize,
        root: &std::path::Path,
    ) -> Result<u32, String> {
        std::fs::create_dir_all(root).map_err(|e| format!("the guest's root {}: {e}", root.display()))?;
        self.forget_other_runs(boot);
        let (prog, args) = argv.split_first().ok_or("Invalid parameter 'path'")?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .env("BERTH_ROOT", root)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("Failed to execute child process “{prog}” ({})", os_message(&e)))?;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let done = Arc::new(OnceLock::new());
        let slot = done.clone();
        let task = tokio::spawn(async move {
            let feed = async {
                if let (Some(mut pipe), Some(data)) = (stdin, input) {
                    // A command that does not read its input closes the pipe: not an error.
                    let _ = pipe.write_all(&data).await;
                }
            };
            let ((), out, err) = tokio::join!(feed, capture(stdout, limit), capture(stderr, limit));
            let (code, signal) = match child.wait().await {
                Ok(status) => (status.code(), exit_signal(&status)),
                Err(_) => (None, None),
            };
            let _ = slot.set(Finished { code, signal, out, err });
        });
        if self.next_pid == 0 {
            // Where a freshly booted Linux guest's PIDs are.
            self.next_pid = 1000 + rand::random_range(0..2000);
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        self.procs.insert(
            pid,
            Proc {
                boot,
                done,
                _task: AbortOnDrop(task.abort_handle()),
            },
        );
        Ok(pid)
    }

    /// `guest-exec-status`: `None` for a PID this run of the guest does not know. A finished
    /// process is reported once, then forgotten.
    pub fn status(&mut self, pid: u32, boot: Option<Instant>) -> Option<Value> {
        self.forget_other_runs(boot);
        let finished = self.procs.get(&pid)?.done.get().cloned();
        match finished {
            None => Some(json!({ "exited": 0 })),
            Some(f) => {
                self.procs.remove(&pid);
                Some(f.to_json())
            }
        }
    }

    fn forget_other_runs(&mut self, boot: Option<Instant>) {
        self.procs.retain(|_, p| p.boot == boot);
    }
}

/// Reads a stream to its end, keeping the first `limit` bytes (qemu-ga keeps reading and drops
/// the rest, so the writer never sees a closed pipe).
async fn capture<R: AsyncRead + Unpin>(pipe: Option<R>, limit: usize) -> Captured {
    let mut out = Captured::default();
    let Some(mut pipe) = pipe else { return out };
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = limit.saturating_sub(out.data.len());
        out.data.extend_from_slice(&buf[..n.min(room)]);
        if n > room {
            out.truncated = true;
        }
    }
    out
}

/// "No such file or directory" from "No such file or directory (os error 2)", as glib words it.
fn os_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(unix)]
fn exit_signal(status: &std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(status)
}

#[cfg(not(unix))]
fn exit_signal(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn root() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("berth-exec-test-{}", std::process::id()))
    }

    async fn wait(execs: &mut GuestExecs, pid: u32, boot: Option<Instant>) -> Value {
        for _ in 0..500 {
            let st = execs.status(pid, boot).expect("known pid");
            if st["exited"] == 1 {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("pid {pid} did not finish");
    }

    #[tokio::test]
    async fn runs_captures_truncates_and_forgets() {
        let mut e = GuestExecs::default();
        let boot = Some(Instant::now());
        let pid = e
            .spawn(
                &argv(&["/bin/sh", "-c", "printf 0123456789; echo oo >&2; exit 3"]),
                None,
                boot,
                4,
                &root(),
            )
            .unwrap();
        let st = wait(&mut e, pid, boot).await;
        assert_eq!(st["exitcode"], 3);
        assert_eq!(
            (st["out-data"].as_str(), st["out-truncated"].as_i64()),
            (Some("0123"), Some(1))
        );
        assert_eq!(st["err-data"], "oo\n");
        assert!(st.get("err-truncated").is_none(), "{st}");
        // Reported once, then unknown.
        assert!(e.status(pid, boot).is_none());
        // Separate PIDs; stdin is fed.
        let pid2 = e
            .spawn(&argv(&["cat"]), Some(b"in".to_vec()), boot, 100, &root())
            .unwrap();
        assert_ne!(pid, pid2);
        let st = wait(&mut e, pid2, boot).await;
        assert_eq!(
            (st["exitcode"].as_i64(), st["out-data"].as_str()),
            (Some(0), Some("in"))
        );
        assert!(st.get("err-data").is_none(), "{st}");
    }

    #[tokio::test]
    async fn signals_missing_programs_and_reboots() {
        let mut e = GuestExecs::default();
        let boot = Some(Instant::now());
        let pid = e
            .spawn(&argv(&["/bin/sh", "-c", "kill -9 $$"]), None, boot, 100, &root())
            .unwrap();
        let st = wait(&mut e, pid, boot).await;
        assert_eq!(st["signal"], 9);
        assert!(st.get("exitcode").is_none(), "{st}");
        let err = e
            .spawn(&argv(&["/nonexistent/prog"]), None, boot, 100, &root())
            .unwrap_err();
        assert_eq!(
            err,
            "Failed to execute child process “/nonexistent/prog” (No such file or directory)"
        );
        let pid = e.spawn(&argv(&["sleep", "5"]), None, boot, 100, &root()).unwrap();
        assert_eq!(e.status(pid, boot), Some(json!({ "exited": 0 })));
        // After a reboot the process is gone.
        assert_eq!(e.status(pid, Some(Instant::now())), None);
        assert!(e.procs.is_empty());
    }
}
