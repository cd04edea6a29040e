//! The operator's answer to a provision that waits for a person (the manual backend): while the
//! backend's create waits, the agent long-polls the control plane for input to this operation
//! (from the dashboard or the API), applies it to the backend's request store exactly as
//! `berth vm complete|fail|cancel` would, and says how that went. The waiting create sees the
//! change on its next look, as it would an operator's command on this host.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use berth_api::client::Client;
use berth_api::wire::OperatorInput;
use berth_core::InstanceId;
use berth_manual::{ManualProvider, OperatorDetails, OperatorError, RequestStatus};
use tokio_util::sync::CancellationToken;

use crate::lease::{is_lease_gone, is_refusal};

/// How long one long-poll for input lasts (the server may cap it lower).
const POLL: Duration = Duration::from_secs(25);

/// The watcher of one provision. Dropped, it stops on the spot; [`Watching::finish`] lets an
/// answer being applied be reported first.
pub struct Watching {
    task: Option<tokio::task::JoinHandle<()>>,
    done: CancellationToken,
}

impl Watching {
    /// Stops waiting for input; an answer already being applied is still reported (for at most
    /// a few seconds), so the control plane hears of it before the operation completes.
    pub async fn finish(mut self) {
        self.done.cancel();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Watches for input to `operation_id` (held under `generation`) until finished, dropped, or
/// `lost` fires.
pub fn watch(
    client: Client,
    operation_id: String,
    generation: i64,
    instance: InstanceId,
    manual: Arc<ManualProvider>,
    lost: CancellationToken,
) -> Watching {
    let done = CancellationToken::new();
    let stop = done.clone();
    let task = tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => return,
                _ = lost.cancelled() => return,
                r = client.wait_input(&operation_id, generation, POLL) => r,
            };
            match got {
                Ok(None) => delay = Duration::from_secs(1),
                Ok(Some(input)) => {
                    let error = apply(&manual, &instance, &input).await.err();
                    match &error {
                        None => {
                            tracing::info!(operation = %operation_id, action = input.action(), "applied the operator's input")
                        }
                        Some(e) => {
                            tracing::warn!(operation = %operation_id, action = input.action(), error = %e, "could not apply the operator's input")
                        }
                    }
                    if !report(&client, &operation_id, generation, error, &lost).await {
                        return;
                    }
                }
                // The lease keeper stops the work; nothing more to watch for.
                Err(e) if is_lease_gone(&e) => return,
                Err(e) => {
                    if is_refusal(&e) {
                        tracing::warn!(operation = %operation_id, error = %e, "cannot ask the control plane for operator input");
                    } else {
                        tracing::debug!(operation = %operation_id, error = %e, "operator input: control plane not reached");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = lost.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    Watching { task: Some(task), done }
}

/// Tells the control plane the input was taken, until it has heard (or will not listen).
async fn report(
    client: &Client,
    operation_id: &str,
    generation: i64,
    error: Option<String>,
    stop: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.take_input(operation_id, generation, error.clone()).await {
            Ok(()) => return true,
            Err(e) if is_lease_gone(&e) => return false,
            Err(e) if is_refusal(&e) => {
                tracing::warn!(operation = %operation_id, error = %e, "the control plane refused the input's receipt");
                return true;
            }
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Applies `input` to the manual request of `instance`. Applied already (this agent took it
/// before a restart, without saying so) counts as applied.
async fn apply(manual: &ManualProvider, instance: &InstanceId, input: &OperatorInput) -> Result<(), String> {
    let (result, done) = match input {
        OperatorInput::Complete {
            ipv4,
            ipv6,
            ssh_port,
            root_password: _,
        } => {
            let details = OperatorDetails {
                ipv4: parse::<Ipv4Addr>("ipv4", ipv4)?,
                ipv6: parse::<Ipv6Addr>("ipv6", ipv6)?,
                ssh_port: *ssh_port,
                // The control plane keeps the password, sealed for the requester.
                root_password: None,
            };
            (
                manual.complete(instance, details).await.map(|_| ()),
                RequestStatus::Completed,
            )
        }
        OperatorInput::Fail { reason } => (manual.fail(instance, reason).await, RequestStatus::Failed),
        OperatorInput::Cancel { reason } => (manual.cancel(instance, reason).await, RequestStatus::Cancelled),
    };
    match result {
        Ok(()) => Ok(()),
        Err(OperatorError::NotPending { status, .. }) if status == done => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse<T: std::str::FromStr>(field: &str, v: &Option<String>) -> Result<Option<T>, String> {
    v.as_deref()
        .map(|s| s.parse::<T>().map_err(|_| format!("{field} {s:?} is not an address")))
        .transpose()
}
