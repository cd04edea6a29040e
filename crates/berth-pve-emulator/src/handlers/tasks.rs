//! `/nodes/{node}/tasks`: list, status, log, stop. A UPID only exists on the node that ran it.

use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::World;
use crate::tasks::{Task, parse_upid};

/// Finds the task as the node's task directory would: on another node, or too fresh, there is no file yet.
fn find<'a>(world: &'a World, node: &str, upid: &str) -> Result<&'a Task, ApiError> {
    let Some((upid_node, ..)) = parse_upid(upid) else {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    };
    let no_such = || ApiError::param("upid", "no such task");
    if upid_node != node {
        return Err(no_such());
    }
    let task = world.tasks.get(upid).ok_or_else(no_such)?;
    if task.created.elapsed() < world.timings.no_such_task_window {
        return Err(no_such());
    }
    Ok(task)
}

fn check_owner(ctx: &Ctx, task: &Task, node: &str, privilege: &str) -> Result<(), ApiError> {
    if task.user == ctx.token.tokenid {
        return Ok(());
    }
    ctx.token.check(&format!("/nodes/{node}"), &[privilege], false)
}

pub(super) fn status(ctx: &mut Ctx, node: &str, upid: &str) -> ApiResult {
    let world = ctx.world();
    let task = find(&world, node, upid)?;
    check_owner(ctx, task, node, "Sys.Audit")?;
    Reply::data(task.status_json())
}

pub(super) fn log(ctx: &mut Ctx, node: &str, upid: &str) -> ApiResult {
    let start = ctx.params.int("start")?.unwrap_or(0).max(0) as usize;
    let limit = ctx.params.int("limit")?.unwrap_or(50).max(0) as usize;
    let world = ctx.world();
    let task = find(&world, node, upid)?;
    check_owner(ctx, task, node, "Sys.Audit")?;
    let lines: Vec<Value> = task
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, t)| json!({ "n": i + 1, "t": t }))
        .collect();
    Ok(Reply {
        data: Value::Array(lines),
        total: Some(task.log.len() as u64),
        changes: None,
    })
}

pub(super) fn stop(ctx: &mut Ctx, node: &str, upid: &str) -> ApiResult {
    let mut world = ctx.world();
    let task = find(&world, node, upid)?;
    check_owner(ctx, task, node, "Sys.Modify")?;
    crate::tasks::stop(&mut world, upid);
    Reply::null()
}

fn status_class(task: &Task) -> &'static str {
    match task.exitstatus.as_deref() {
        None => "running",
        Some("OK") => "ok",
        Some(s) if s.starts_with("WARNINGS: ") => "warning",
        Some("unexpected status") => "unknown",
        Some(_) => "error",
    }
}

pub(super) fn list(ctx: &mut Ctx, node: &str) -> ApiResult {
    let p = &ctx.params;
    let start = p.int("start")?.unwrap_or(0).max(0) as usize;
    let limit = p.int("limit")?.unwrap_or(50).max(0) as usize;
    let vmid = p.int("vmid")?.map(|v| v.to_string());
    let typefilter = p.get("typefilter").map(str::to_string);
    let userfilter = p.get("userfilter").map(str::to_string);
    let statusfilter: Option<Vec<String>> = p
        .get("statusfilter")
        .map(|s| s.split(',').map(str::to_string).collect());
    let errors = p.flag("errors")?;
    let since = p.int("since")?;
    let until = p.int("until")?;
    let source = p.get("source").unwrap_or("archive").to_string();
    if !matches!(source.as_str(), "archive" | "active" | "all") {
        return Err(ApiError::param(
            "source",
            format!("value '{source}' does not have a value in the enumeration 'archive, active, all'"),
        ));
    }
    let audit = ctx.token.allowed(&format!("/nodes/{node}"), &["Sys.Audit"], false);
    let world = ctx.world();
    let matching: Vec<&Task> = world
        .task_order
        .iter()
        .rev()
        .filter_map(|u| world.tasks.get(u))
        .filter(|t| t.node == node)
        .filter(|t| audit || t.user == ctx.token.tokenid)
        .filter(|t| match source.as_str() {
            "archive" => !t.running,
            "active" => t.running,
            _ => true,
        })
        .filter(|t| vmid.as_ref().is_none_or(|v| *v == t.id))
        .filter(|t| typefilter.as_ref().is_none_or(|f| *f == t.kind))
        .filter(|t| userfilter.as_ref().is_none_or(|f| t.user.contains(f.as_str())))
        .filter(|t| {
            statusfilter
                .as_ref()
                .is_none_or(|f| f.iter().any(|s| s == status_class(t)))
        })
        .filter(|t| !errors || t.is_error())
        .filter(|t| since.is_none_or(|s| t.starttime as i64 >= s))
        .filter(|t| until.is_none_or(|u| t.starttime as i64 <= u))
        .collect();
    let total = matching.len() as u64;
    let items: Vec<Value> = matching
        .into_iter()
        .skip(start)
        .take(limit)
        .map(Task::list_json)
        .collect();
    Ok(Reply {
        data: Value::Array(items),
        total: Some(total),
        changes: None,
    })
}
