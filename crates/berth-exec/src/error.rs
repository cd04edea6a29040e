//! `ExecError`: every way running an external command can fail, each naming the program and
//! carrying what an operator needs (the stderr tail) — never the stdin contents.

use std::process::ExitStatus;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} timed out after {}s and was killed (with its process group){}", after.as_secs(), tail_suffix(stderr_tail))]
    Timeout {
        program: String,
        after: Duration,
        stderr_tail: String,
    },
    #[error(
        "{program} wrote more than {limit} bytes to stdout and was killed (with its process group){}",
        tail_suffix(stderr_tail)
    )]
    OutputTooLarge {
        program: String,
        limit: usize,
        stderr_tail: String,
    },
    #[error("{program} wrote {stream} that is not valid UTF-8 (at byte {valid_up_to})")]
    NotUtf8 {
        program: String,
        stream: &'static str,
        valid_up_to: usize,
    },
    #[error("{program} failed: {status}{}", tail_suffix(stderr_tail))]
    Failed {
        program: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("I/O error {context} for {program}: {source}")]
    Io {
        program: String,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ExecError {
    /// The program this error is about.
    pub fn program(&self) -> &str {
        match self {
            ExecError::Spawn { program, .. }
            | ExecError::Timeout { program, .. }
            | ExecError::OutputTooLarge { program, .. }
            | ExecError::NotUtf8 { program, .. }
            | ExecError::Failed { program, .. }
            | ExecError::Io { program, .. } => program,
        }
    }

    /// The last lines the program wrote to stderr (redacted), when the error has them.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            ExecError::Timeout { stderr_tail, .. }
            | ExecError::OutputTooLarge { stderr_tail, .. }
            | ExecError::Failed { stderr_tail, .. } => Some(stderr_tail),
            _ => None,
        }
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; stderr tail: {}", tail.trim_end())
    }
}
