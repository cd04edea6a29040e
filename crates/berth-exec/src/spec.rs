//! `ExecSpec`: what to run and under which limits. Its `Debug` shows the environment's names
//! only and the stdin's length only, since both may hold secrets.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

/// `PATH` given to every command unless the spec sets its own.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Default stdout limit: 1 MiB.
pub const DEFAULT_MAX_STDOUT: usize = 1024 * 1024;
/// Default size of the stderr tail kept for errors.
pub const DEFAULT_STDERR_TAIL: usize = 4096;

/// One command to run. Build with [`ExecSpec::new`] and the chained setters.
pub struct ExecSpec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) stdin: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
    pub(crate) max_stdout: usize,
    pub(crate) stderr_tail: usize,
    pub(crate) name: String,
    pub(crate) current_dir: Option<PathBuf>,
    pub(crate) stderr_lines: Option<UnboundedSender<String>>,
}

impl ExecSpec {
    /// `program` with no arguments, the default environment, no stdin (`/dev/null`), the given
    /// timeout and the default stdout limit. The log name defaults to the program's file name.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        let program = program.into();
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.display().to_string());
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
        env.insert("LC_ALL".to_owned(), "C.UTF-8".to_owned());
        ExecSpec {
            program,
            args: Vec::new(),
            env,
            stdin: None,
            timeout,
            max_stdout: DEFAULT_MAX_STDOUT,
            stderr_tail: DEFAULT_STDERR_TAIL,
            name,
            current_dir: None,
            stderr_lines: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable (overriding the defaults `PATH` and `LC_ALL` if named so).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn envs<I: IntoIterator<Item = (K, V)>, K: Into<String>, V: Into<String>>(mut self, vars: I) -> Self {
        for (k, v) in vars {
            self.env.insert(k.into(), v.into());
        }
        self
    }

    /// Bytes written to the child's stdin (then closed). Never logged or put into an error.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Stdout beyond this many bytes kills the command with `OutputTooLarge`.
    pub fn max_stdout(mut self, bytes: usize) -> Self {
        self.max_stdout = bytes;
        self
    }

    /// How many bytes of the stderr's last lines are kept for errors.
    pub fn stderr_tail(mut self, bytes: usize) -> Self {
        self.stderr_tail = bytes;
        self
    }

    /// Name in log lines (`cmd=...`), e.g. `provision.sh`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Every stderr line (unredacted, without its newline) is also sent here, as it arrives.
    pub fn stderr_lines(mut self, tx: UnboundedSender<String>) -> Self {
        self.stderr_lines = Some(tx);
        self
    }

    pub fn program(&self) -> &std::path::Path {
        &self.program
    }
}

impl fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env_names", &self.env.keys().collect::<Vec<_>>())
            .field("stdin_len", &self.stdin.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("max_stdout", &self.max_stdout)
            .field("name", &self.name)
            .field("current_dir", &self.current_dir)
            .finish()
    }
}
