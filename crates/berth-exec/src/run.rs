//! `run`: spawn in a fresh process group with a cleared environment, drain every pipe
//! concurrently, enforce the timeout and the stdout limit, and kill the whole group when the
//! work ends early — including when the returned future is dropped.
//!
//! When the main process exits, whatever it left running in its group (background jobs that
//! still hold the pipes) is killed too: a command that wants something to outlive it must
//! detach it into its own session (`setsid`, `systemd-run`) and should also close or redirect
//! stdin/stdout/stderr: once the main process has exited, the pipes are drained for a short
//! grace period only, then `run` returns what it read so far (and warns).

use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::error::ExecError;
use crate::spec::ExecSpec;
use crate::stderr::{Tail, drain};

/// What a finished command left behind.
#[derive(Debug)]
pub struct ExecOutput {
    /// The program, as in errors.
    pub program: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The last stderr lines (redacted), at most the spec's tail size.
    pub stderr_tail: String,
}

impl ExecOutput {
    /// Stdout as text; not UTF-8 is an error naming the program.
    pub fn stdout_utf8(&self) -> Result<&str, ExecError> {
        std::str::from_utf8(&self.stdout).map_err(|e| ExecError::NotUtf8 {
            program: self.program.clone(),
            stream: "stdout",
            valid_up_to: e.valid_up_to(),
        })
    }

    /// `Ok` for exit status 0, else `Failed` with the status and the stderr tail.
    pub fn check_success(&self) -> Result<(), ExecError> {
        if self.status.success() {
            Ok(())
        } else {
            Err(ExecError::Failed {
                program: self.program.clone(),
                status: self.status,
                stderr_tail: self.stderr_tail.clone(),
            })
        }
    }
}

/// Kills the child's process group once: explicitly, or when dropped still armed.
struct GroupGuard {
    pgid: Option<Pid>,
    armed: AtomicBool,
}

impl GroupGuard {
    fn new(pid: Option<u32>) -> Self {
        GroupGuard {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).and_then(Pid::from_raw),
            armed: AtomicBool::new(true),
        }
    }

    fn kill(&self) {
        if self.armed.swap(false, Ordering::SeqCst)
            && let Some(pgid) = self.pgid
        {
            // ESRCH (the group is already empty) is the expected, harmless outcome.
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long pipe draining may go on once the main process has exited and its group was killed:
/// only a descendant that detached into its own session can still hold the pipes then.
const PIPE_GRACE: Duration = Duration::from_secs(2);

enum Stop {
    TooLarge,
    Io(&'static str, std::io::Error),
}

/// Runs the command described by `spec` to completion (see the module docs for the guarantees).
/// A non-zero exit is not an error here: see [`ExecOutput::check_success`].
pub async fn run(spec: ExecSpec) -> Result<ExecOutput, ExecError> {
    let program = spec.program.display().to_string();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &spec.current_dir {
        cmd.current_dir(dir);
    }
    tracing::debug!(cmd = %spec.name, program = %program, "running");
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;
    let guard = GroupGuard::new(child.id());
    let io_err = |context: &'static str| {
        let program = program.clone();
        move |source| ExecError::Io {
            program,
            context,
            source,
        }
    };
    let stdin_pipe = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io_err("taking stdout")(std::io::Error::other("stdout was not captured")))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io_err("taking stderr")(std::io::Error::other("stderr was not captured")))?;
    let tail = Mutex::new(Tail::new(spec.stderr_tail));

    let mut stdout_buf = Vec::new();
    let work = async {
        let feed = async {
            if let (Some(mut pipe), Some(bytes)) = (stdin_pipe, spec.stdin.as_deref()) {
                match pipe.write_all(bytes).await.and(pipe.shutdown().await) {
                    // A command that does not read its stdin closes the pipe early: fine.
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(Stop::Io("writing stdin", e)),
                    _ => {}
                }
            }
            Ok(())
        };
        let out = read_limited(stdout, spec.max_stdout, &mut stdout_buf);
        let err = async {
            drain(stderr, &spec.name, &tail, spec.stderr_lines.as_ref())
                .await
                .map_err(|e| Stop::Io("reading stderr", e))
        };
        let pipes = async { tokio::try_join!(feed, out, err).map(|_| ()) };
        let wait = async {
            let status = child.wait().await.map_err(|e| Stop::Io("waiting for exit", e))?;
            // Stragglers left in the group would hold the pipes open: end them now.
            guard.kill();
            Ok::<_, Stop>(status)
        };
        tokio::pin!(pipes, wait);
        let status = tokio::select! {
            done = &mut pipes => {
                done?;
                wait.await?
            }
            status = &mut wait => {
                let status = status?;
                // Something the command started in its own session may still hold the pipes:
                // drain what is already there, but do not wait for it to end.
                match tokio::time::timeout(PIPE_GRACE, &mut pipes).await {
                    Ok(done) => done?,
                    Err(_) => tracing::warn!(
                        cmd = %spec.name,
                        grace_secs = PIPE_GRACE.as_secs(),
                        "the command exited but a descendant in another session still holds its stdout/stderr; \
                         returning the output read so far"
                    ),
                }
                status
            }
        };
        Ok::<_, Stop>(status)
    };

    let result = tokio::time::timeout(spec.timeout, work).await;
    guard.kill();
    let stderr_tail = tail.lock().unwrap_or_else(|p| p.into_inner()).text();
    match result {
        Err(_) => {
            tracing::warn!(cmd = %spec.name, after_secs = spec.timeout.as_secs(), "timed out; process group killed");
            Err(ExecError::Timeout {
                program,
                after: spec.timeout,
                stderr_tail,
            })
        }
        Ok(Err(Stop::TooLarge)) => Err(ExecError::OutputTooLarge {
            program,
            limit: spec.max_stdout,
            stderr_tail,
        }),
        Ok(Err(Stop::Io(context, source))) => Err(ExecError::Io {
            program,
            context,
            source,
        }),
        Ok(Ok(status)) => {
            let stdout = stdout_buf;
            tracing::debug!(cmd = %spec.name, %status, stdout_bytes = stdout.len(), "finished");
            Ok(ExecOutput {
                program,
                status,
                stdout,
                stderr_tail,
            })
        }
    }
}

/// Reads `reader` to its end into `out` (which keeps what was read if this future is dropped).
async fn read_limited<R: AsyncRead + Unpin>(mut reader: R, limit: usize, out: &mut Vec<u8>) -> Result<(), Stop> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| Stop::Io("reading stdout", e))?;
        if n == 0 {
            return Ok(());
        }
        if out.len() + n > limit {
            return Err(Stop::TooLarge);
        }
        out.extend_from_slice(&buf[..n]);
    }
}
