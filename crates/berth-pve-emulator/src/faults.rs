//! Fault injection: per-request rules (consumed as they match) and a random transient-failure rate.

use std::time::Duration;

use crate::api::{ApiError, Ctx, TaskFault};
use crate::handlers::Route;
use crate::state::Kind;

/// Makes matching requests fail the way real PVE fails.
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// None = any method.
    pub method: Option<String>,
    /// Substring of the path after /api2/json, e.g. "/clone", "/status/start", "/cluster/nextid".
    pub path_contains: String,
    pub fault: Fault,
    /// How many matching requests it applies to.
    pub times: u32,
}

/// What happens to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// e.g. 500, 595 "Connection refused", 596 "tls_process_server_certificate: certificate verify failed",
    /// 599 "Too many redirections".
    Http { status: u16, message: String },
    /// Sync 500 "can't lock file '/var/lock/qemu-server/lock-<vmid>.conf' - got timeout".
    LockTimeout,
    /// The task this request starts ends with exitstatus = message.
    TaskFailure { message: String },
    /// The task ends "WARNINGS: n" (log lines "WARN: ...").
    TaskWarnings { count: u32 },
    /// A foreign VM takes this request's newid/vmid just before it is handled.
    NextIdRace,
    /// Answer after this long.
    Delay(Duration),
    /// Sync 500 "got no worker upid - start worker failed".
    NoWorkerUpid,
}

/// Takes the first rule matching this request (decrementing it), else maybe a random fault.
fn pick(ctx: &Ctx, method: &str, raw_path: &str, path: &str) -> Option<Fault> {
    let mut world = ctx.world();
    let idx = world.faults.iter().position(|r| {
        r.times > 0
            && r.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && (path.contains(&r.path_contains) || raw_path.contains(&r.path_contains))
    });
    if let Some(i) = idx {
        let fault = world.faults[i].fault.clone();
        world.faults[i].times -= 1;
        if world.faults[i].times == 0 {
            world.faults.remove(i);
        }
        return Some(fault);
    }
    let rate = world.fault_rate;
    drop(world);
    if rate <= 0.0 || rand::random::<f64>() >= rate {
        return None;
    }
    random_fault(method, path)
}

/// The transient failures a busy real cluster produces.
fn random_fault(method: &str, path: &str) -> Option<Fault> {
    match method {
        "PUT" if path.ends_with("/config") => Some(Fault::LockTimeout),
        "GET" => Some(Fault::Http {
            status: 595,
            message: "Connection refused".to_string(),
        }),
        "POST" if path.ends_with("/clone") => Some(Fault::TaskFailure {
            message: "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
                .to_string(),
        }),
        _ => None,
    }
}

/// The guest a request is about, for lock-file names and races: (kind, vmid, node).
fn subject(ctx: &Ctx, route: &Route) -> (Kind, Option<u32>) {
    let kind = route.kind.unwrap_or(Kind::Qemu);
    let from_param = |name: &str| ctx.params.get(name).and_then(|v| v.parse::<u32>().ok());
    let vmid = from_param("newid")
        .or_else(|| route.vmid.as_deref().and_then(|v| v.parse().ok()))
        .or_else(|| from_param("vmid"));
    (kind, vmid)
}

/// Applies the fault (if any) for this request: errors out, delays, arms a task fault or races a VMID.
pub(crate) async fn apply(
    ctx: &mut Ctx,
    method: &str,
    raw_path: &str,
    path: &str,
    route: &Route,
) -> Result<(), ApiError> {
    let Some(fault) = pick(ctx, method, raw_path, path) else {
        return Ok(());
    };
    tracing::debug!(?fault, method, path, "injecting fault");
    match fault {
        Fault::Http { status, message } => Err(if status == 500 {
            ApiError::Fail(message)
        } else {
            ApiError::Status(status, message)
        }),
        Fault::LockTimeout => {
            let (kind, vmid) = subject(ctx, route);
            let kind = if path.ends_with("/clone") { Kind::Qemu } else { kind };
            Err(ApiError::fail(format!(
                "can't lock file '{}' - got timeout",
                kind.lock_file(vmid.unwrap_or(0))
            )))
        }
        Fault::TaskFailure { message } => {
            ctx.task_fault = Some(TaskFault::Failure(message));
            Ok(())
        }
        Fault::TaskWarnings { count } => {
            ctx.task_fault = Some(TaskFault::Warnings(count));
            Ok(())
        }
        Fault::NextIdRace => {
            let (_, vmid) = subject(ctx, route);
            if let Some(vmid) = vmid {
                let mut world = ctx.world();
                let node = route
                    .node
                    .clone()
                    .or_else(|| world.nodes.first().map(|n| n.name.clone()));
                if let Some(node) = node
                    && !world.guests.contains_key(&vmid)
                {
                    crate::seed::add_foreign_vm(&mut world, &node, vmid, &format!("foreign-{vmid}"));
                }
            }
            Ok(())
        }
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Fault::NoWorkerUpid => Err(ApiError::fail("got no worker upid - start worker failed")),
    }
}
