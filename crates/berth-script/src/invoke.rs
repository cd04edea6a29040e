//! One script call: write the request, run the executable through `berth-exec`, forward stage
//! lines, and turn the outcome — or whatever went wrong — into a response or a `ProviderError`
//! naming the script, the action and the problem.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_core::{ErrorCode, ProgressSink, ProviderError};
use berth_exec::{ExecError, ExecSpec, redact_secrets};

use crate::config::Action;
use crate::protocol::{PROTOCOL_VERSION, Request, Response, parse_stage_line, snippet};

/// Everything needed to run one action's executable.
pub(crate) struct Runner {
    pub scripts: BTreeMap<Action, PathBuf>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub max_output: usize,
    pub base_dir: PathBuf,
}

impl Runner {
    fn label(&self, action: Action) -> String {
        self.scripts
            .get(&action)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<none>".into())
    }

    /// Runs `request` and returns the script's successful response; failures, including the
    /// script's own `success: false`, are errors.
    pub async fn call(
        &self,
        request: &Request<'_>,
        sink: Option<&dyn ProgressSink>,
    ) -> Result<Response, ProviderError> {
        let action = request.action;
        let label = self.label(action);
        let ctx = |what: String| format!("script {label} action {action}: {what}");
        let Some(program) = self.scripts.get(&action) else {
            return Err(ProviderError::unsupported(format!(
                "action {action}: no executable is configured for it"
            )));
        };
        let body = serde_json::to_vec(request)
            .map_err(|e| ProviderError::internal(ctx(format!("cannot encode the request: {e}"))))?;
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| label.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let spec = ExecSpec::new(program, self.timeout)
            .envs(self.env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .env("BERTH_PROTOCOL", PROTOCOL_VERSION.to_string())
            .env("BERTH_ACTION", action.as_str())
            .stdin(body)
            .max_stdout(self.max_output)
            .name(format!("{name} {action}"))
            .current_dir(&self.base_dir)
            .stderr_lines(tx);
        let started = Instant::now();
        let forward = async {
            while let Some(line) = rx.recv().await {
                match parse_stage_line(&line) {
                    None => {}
                    Some(Ok(event)) => {
                        if let Some(sink) = sink {
                            sink.event(event);
                        }
                    }
                    Some(Err(why)) => {
                        let why = redact_secrets(&why);
                        tracing::warn!(script = %label, %action, "ignoring a bad stage line: {why}")
                    }
                }
            }
        };
        let (result, ()) = tokio::join!(berth_exec::run(spec), forward);
        let elapsed = started.elapsed();
        let output = result.map_err(|e| exec_error(e, action, &label))?;
        let text = output
            .stdout_utf8()
            .map_err(|e| ProviderError::internal(ctx(format!("{e}"))))?;
        let tail = if output.stderr_tail.trim().is_empty() {
            String::new()
        } else {
            format!("; stderr tail: {}", output.stderr_tail.trim_end())
        };
        if text.trim().is_empty() {
            return Err(ProviderError::internal(ctx(format!(
                "printed nothing on stdout (exit {}); expected one JSON response{tail}",
                output.status
            ))));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            ProviderError::internal(ctx(format!(
                "output is not JSON ({}); output starts with {}{tail}",
                berth_exec::redact_secrets(&e.to_string()),
                snippet(text)
            )))
        })?;
        let response: Response = serde_json::from_value(value).map_err(|e| {
            ProviderError::internal(ctx(format!(
                "output is not a protocol-1 response ({}); output starts with {}",
                berth_exec::redact_secrets(&e.to_string()),
                snippet(text)
            )))
        })?;
        if let Some(p) = response.protocol
            && p != PROTOCOL_VERSION
        {
            return Err(ProviderError::internal(ctx(format!(
                "answered with protocol {p}, but Berth asked in protocol {PROTOCOL_VERSION}"
            ))));
        }
        if output.status.success() != response.success {
            return Err(ProviderError::internal(ctx(format!(
                "exit status and response disagree: exit {} but \"success\": {}; output starts with {}{tail}",
                output.status,
                response.success,
                snippet(text)
            ))));
        }
        if !response.success {
            return Err(script_failure(&response, &ctx, elapsed));
        }
        let missing = match action {
            Action::Provision | Action::Status if response.instance.is_none() => Some("instance"),
            Action::List if response.instances.is_none() => Some("instances"),
            _ => None,
        };
        if let Some(field) = missing {
            return Err(ProviderError::internal(ctx(format!(
                "\"success\": true but no \"{field}\" in the response; output starts with {}",
                snippet(text)
            ))));
        }
        tracing::debug!(script = %label, %action, elapsed_ms = elapsed.as_millis() as u64, "script succeeded");
        Ok(response)
    }
}

/// The script said `success: false`: its `code` picks the error class, and `retry_possible`,
/// when given, decides retryability (a retryable answer with a non-retryable code becomes
/// `unavailable`; a non-retryable answer with a retryable code becomes `internal`).
fn script_failure(r: &Response, ctx: &dyn Fn(String) -> String, elapsed: Duration) -> ProviderError {
    // The script's own text may quote secrets (a password it failed to set): redact it.
    let msg = ctx(r
        .error
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .map(redact_secrets)
        .unwrap_or_else(|| "failed without an error message".into()));
    let code = r.code.unwrap_or(if r.retry_possible == Some(true) {
        ErrorCode::Unavailable
    } else {
        ErrorCode::Internal
    });
    let err = match code {
        ErrorCode::NotFound => ProviderError::not_found(msg),
        ErrorCode::InvalidSpec => ProviderError::invalid(r.field.clone().unwrap_or_else(|| "spec".into()), msg),
        ErrorCode::Unauthorized => ProviderError::unauthorized(msg),
        ErrorCode::Unsupported => ProviderError::unsupported(msg),
        ErrorCode::Conflict => ProviderError::conflict(msg),
        ErrorCode::QuotaExceeded => ProviderError::QuotaExceeded { message: msg },
        ErrorCode::RateLimited => ProviderError::RateLimited {
            retry_after: r.retry_after_seconds.map(Duration::from_secs),
        },
        ErrorCode::Timeout => ProviderError::Timeout {
            what: msg,
            after: elapsed,
        },
        ErrorCode::Unavailable => ProviderError::unavailable(msg),
        ErrorCode::Internal => ProviderError::internal(msg),
    };
    match r.retry_possible {
        Some(true) if !err.is_retryable() => ProviderError::unavailable(format!("{err} (code {code}, retry possible)")),
        Some(false) if err.is_retryable() => {
            ProviderError::internal(format!("{err} (code {code}, retry not possible)"))
        }
        _ => err,
    }
}

fn exec_error(e: ExecError, action: Action, label: &str) -> ProviderError {
    let ctx = format!("script {label} action {action}");
    match e {
        ExecError::Timeout { after, .. } => ProviderError::Timeout {
            what: format!("{ctx} (its process group was killed): {e}"),
            after,
        },
        ExecError::OutputTooLarge { limit, .. } => ProviderError::internal(format!(
            "{ctx}: output larger than {limit} bytes (max_output_bytes) was refused and the script killed"
        )),
        ExecError::Spawn { ref source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            ProviderError::internal(format!("{ctx}: {e} (check that it exists and is executable)"))
        }
        ExecError::Spawn { .. } | ExecError::Io { .. } => ProviderError::unavailable(format!("{ctx}: {e}")),
        ExecError::NotUtf8 { .. } | ExecError::Failed { .. } => ProviderError::internal(format!("{ctx}: {e}")),
    }
}
