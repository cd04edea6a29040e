//! One `multipass` call through `berth-exec` (cleared environment, own process group, timeout,
//! captured output), and the translation of Multipass's failure messages into `ProviderError`s
//! that name the command.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_core::ProviderError;
use berth_exec::{ExecError, ExecSpec};

use crate::config::MultipassConfig;
use crate::json::ParseError;

/// Multipass's exit code when the daemon could not be reached (`ReturnCode::DaemonFail`).
const EXIT_DAEMON_FAIL: i32 = 3;

/// Everything needed to run the `multipass` binary.
pub(crate) struct Cli {
    pub config: MultipassConfig,
    pub base_dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

impl Cli {
    pub fn quick(&self) -> Duration {
        Duration::from_secs(self.config.timeout_seconds)
    }

    pub fn launch_timeout(&self) -> Duration {
        Duration::from_secs(self.config.launch_timeout_seconds)
    }

    pub fn program(&self) -> Result<PathBuf, ProviderError> {
        self.config
            .resolve_binary(&self.base_dir)
            .map_err(|why| ProviderError::internal(format!("multipass binary: {why}")))
    }

    /// Runs `multipass ARGS` and returns its stdout; a non-zero exit becomes an error classified
    /// from Multipass's message (see [`classify`]).
    pub async fn run(&self, args: &[&str], stdin: Option<Vec<u8>>, timeout: Duration) -> Result<String, ProviderError> {
        let program = self.program()?;
        let label = command_label(args);
        let mut spec = ExecSpec::new(&program, timeout)
            .envs(self.env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .args(args.iter().copied())
            .name(label.clone())
            .current_dir(&self.base_dir);
        if let Some(bytes) = stdin {
            spec = spec.stdin(bytes);
        }
        let output = berth_exec::run(spec).await.map_err(|e| exec_error(e, &label))?;
        if !output.status.success() {
            return Err(classify(&label, output.status.code(), &output.stderr_tail));
        }
        let text = output
            .stdout_utf8()
            .map_err(|e| ProviderError::internal(format!("{label}: {e}")))?;
        Ok(text.to_owned())
    }

    /// Runs a `--format json` command and parses its stdout with `parse`.
    pub async fn json<T>(
        &self,
        args: &[&str],
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<T, ProviderError> {
        let text = self.run(args, None, self.quick()).await?;
        parse(&text).map_err(|e| ProviderError::internal(format!("{}: {e}", command_label(args))))
    }
}

/// `multipass info --format json berth-web1`, as errors and logs name the command.
pub(crate) fn command_label(args: &[&str]) -> String {
    let mut s = String::from("multipass");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Maps a failed command to an error class by Multipass's own wording (the daemon's messages,
/// printed by the client as `<command> failed: <message>`).
pub(crate) fn classify(label: &str, code: Option<i32>, stderr: &str) -> ProviderError {
    let text = stderr.trim();
    let msg = if text.is_empty() {
        format!(
            "{label} failed with exit code {} and printed nothing",
            code.unwrap_or(-1)
        )
    } else {
        format!("{label}: {text}")
    };
    let has = |needle: &str| text.contains(needle);
    // An unreachable daemon comes first: its messages may mention anything (even "does not
    // exist"), and taking it for a missing instance would turn a delete into "already absent".
    if code == Some(EXIT_DAEMON_FAIL) || has("cannot connect to the multipass socket") {
        ProviderError::unavailable(msg)
    } else if names_a_missing_instance(text) {
        ProviderError::not_found(msg)
    } else if has("already exists") {
        ProviderError::conflict(msg)
    } else if has("Unable to find an image matching") || has("Unable to find an image") {
        ProviderError::invalid("template", msg)
    } else if has("Invalid memory size") || (has("below minimum") && has("memory")) {
        ProviderError::invalid("memory_mib", msg)
    } else if has("Invalid disk size") || (has("below minimum") && has("disk")) {
        ProviderError::invalid("disk_gib", msg)
    } else if has("Invalid number of CPUs") || has("Invalid CPU") {
        ProviderError::invalid("cores", msg)
    } else {
        ProviderError::internal(msg)
    }
}

/// True when `text` holds Multipass's own message for a missing instance:
/// `instance "<name>" does not exist` (with a non-empty quoted name).
fn names_a_missing_instance(text: &str) -> bool {
    const HEAD: &str = "instance \"";
    const TAIL: &str = "\" does not exist";
    text.match_indices(HEAD).any(|(at, _)| {
        let rest = &text[at + HEAD.len()..];
        rest.find('"')
            .is_some_and(|end| end > 0 && !rest[..end].contains('\n') && rest[end..].starts_with(TAIL))
    })
}

fn exec_error(e: ExecError, label: &str) -> ProviderError {
    match e {
        ExecError::Timeout { after, .. } => ProviderError::Timeout {
            what: format!("{label} (the client was killed; the daemon may still finish the work): {e}"),
            after,
        },
        ExecError::Spawn { ref source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            ProviderError::internal(format!(
                "{label}: {e} (check that the multipass binary exists and is executable)"
            ))
        }
        ExecError::Spawn { .. } | ExecError::Io { .. } => ProviderError::unavailable(format!("{label}: {e}")),
        ExecError::OutputTooLarge { .. } | ExecError::NotUtf8 { .. } | ExecError::Failed { .. } => {
            ProviderError::internal(format!("{label}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_core::ErrorCode;

    use super::*;

    #[test]
    fn multipass_messages_pick_the_error_class() {
        let cases = [
            (
                "info failed: instance \"berth-x\" does not exist",
                Some(2),
                ErrorCode::NotFound,
            ),
            (
                "delete failed: instance \"berth-x\" does not exist\n",
                Some(2),
                ErrorCode::NotFound,
            ),
            (
                "launch failed: instance \"berth-x\" already exists",
                Some(2),
                ErrorCode::Conflict,
            ),
            (
                "launch failed: Unable to find an image matching \"nope\" in remote \"release\".",
                Some(2),
                ErrorCode::InvalidSpec,
            ),
            (
                "list failed: cannot connect to the multipass socket",
                Some(3),
                ErrorCode::Unavailable,
            ),
            ("start failed: something odd", Some(2), ErrorCode::Internal),
            // The daemon failing outranks any wording, and only the quoted-name form is NotFound.
            (
                "delete failed: instance \"berth-x\" does not exist",
                Some(3),
                ErrorCode::Unavailable,
            ),
            (
                "delete failed: the socket file does not exist",
                Some(2),
                ErrorCode::Internal,
            ),
            (
                "cannot connect to the multipass socket: /run/multipass_socket does not exist",
                Some(1),
                ErrorCode::Unavailable,
            ),
            (
                "info failed: instance \"\" does not exist",
                Some(2),
                ErrorCode::Internal,
            ),
            ("", Some(2), ErrorCode::Internal),
        ];
        for (stderr, code, want) in cases {
            let e = classify("multipass x", code, stderr);
            assert_eq!(e.code(), want, "{stderr}: {e}");
            assert!(e.to_string().contains("multipass x"), "{e}");
        }
        match classify(
            "multipass launch",
            Some(2),
            "launch failed: Invalid disk size value supplied: 0G.",
        ) {
            ProviderError::InvalidSpec { field, .. } => assert_eq!(field, "disk_gib"),
            other => panic!("{other:?}"),
        }
    }
}
