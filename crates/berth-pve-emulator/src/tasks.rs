//! Worker tasks: UPIDs, the running → stopped lifecycle on tokio timers, exit statuses and logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::actions::{self, TaskAction};
use crate::api::TaskFault;
use crate::server::Shared;
use crate::state::{World, unix_now};

pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub kind: String,
    pub id: String,
    /// `user@realm!tokenid` as it appears in the UPID.
    pub user: String,
    pub created: Instant,
    pub running: bool,
    pub exitstatus: Option<String>,
    pub endtime: Option<u64>,
    pub log: Vec<String>,
    action: Option<TaskAction>,
    fault: Option<TaskFault>,
}

/// What a handler wants to run as a worker.
pub(crate) struct TaskSpec {
    pub node: String,
    pub kind: &'static str,
    pub id: String,
    pub user: String,
    pub duration: Duration,
    pub action: TaskAction,
    pub fault: Option<TaskFault>,
    pub log: Vec<String>,
}

impl Task {
    /// `user` and `tokenid` split the way `PVE::Tools::upid_decode` does.
    fn user_and_token(&self) -> (&str, Option<&str>) {
        match self.user.split_once('!') {
            Some((u, t)) => (u, Some(t)),
            None => (&self.user, None),
        }
    }

    /// The fields the status view and the task list share.
    fn base_json(&self) -> Value {
        let (user, tokenid) = self.user_and_token();
        let mut v = json!({
            "upid": self.upid,
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.kind,
            "id": self.id,
            "user": user,
        });
        if let Some(t) = tokenid {
            v["tokenid"] = json!(t);
        }
        v
    }

    /// `GET .../tasks/{upid}/status`: `status` is running/stopped, the exit status is its own field.
    pub fn status_json(&self) -> Value {
        let mut v = self.base_json();
        v["status"] = json!(if self.running { "running" } else { "stopped" });
        if let Some(e) = &self.exitstatus {
            v["exitstatus"] = json!(e);
        }
        v
    }

    /// `GET .../tasks`: `status` is the exit status (absent while running), with `endtime`.
    pub fn list_json(&self) -> Value {
        let mut v = self.base_json();
        if let Some(e) = &self.exitstatus {
            v["status"] = json!(e);
        }
        if let Some(t) = self.endtime {
            v["endtime"] = json!(t);
        }
        v
    }

    /// `!(OK || WARNINGS: n)`, like `PVE::Tools::upid_status_is_error`.
    pub fn is_error(&self) -> bool {
        self.exitstatus
            .as_deref()
            .is_some_and(|s| s != "OK" && !s.starts_with("WARNINGS: "))
    }
}

/// Registers a worker, arms its timer and returns the UPID.
pub(crate) fn start(shared: &Arc<Shared>, world: &mut World, spec: TaskSpec) -> String {
    let pid = world.next_pid;
    world.next_pid = world.next_pid.wrapping_add(rand::random_range(1..40));
    // Clock ticks (100 Hz) since the node booted; the node pretends to be up for a while already.
    let pstart = 360_000 + (world.boot.elapsed().as_millis() / 10) as u64;
    let starttime = unix_now();
    let upid = format!(
        "UPID:{}:{pid:08X}:{pstart:08X}:{starttime:08X}:{}:{}:{}:",
        spec.node, spec.kind, spec.id, spec.user
    );
    let task = Task {
        upid: upid.clone(),
        node: spec.node,
        pid,
        pstart,
        starttime,
        kind: spec.kind.to_string(),
        id: spec.id,
        user: spec.user,
        created: Instant::now(),
        running: true,
        exitstatus: None,
        endtime: None,
        log: spec.log,
        action: Some(spec.action),
        fault: spec.fault,
    };
    world.tasks.insert(upid.clone(), task);
    world.task_order.push(upid.clone());
    prune(world);
    let shared2 = shared.clone();
    let upid2 = upid.clone();
    let duration = spec.duration;
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        let mut world = shared2.world();
        finish(&mut world, &upid2);
    });
    upid
}

/// Keeps long soak runs bounded: beyond `MAX_TASKS`, the oldest finished tasks are forgotten
/// (like PVE rotating its task archive).
fn prune(world: &mut World) {
    const MAX_TASKS: usize = 50_000;
    if world.task_order.len() <= MAX_TASKS {
        return;
    }
    let excess = world.task_order.len() - MAX_TASKS / 2;
    let mut removed = 0;
    let tasks = &mut world.tasks;
    world.task_order.retain(|u| {
        if removed < excess && tasks.get(u).is_none_or(|t| !t.running) {
            tasks.remove(u);
            removed += 1;
            return false;
        }
        true
    });
}

/// Runs the task's effect and marks it stopped with its exit status.
pub(crate) fn finish(world: &mut World, upid: &str) {
    let Some(task) = world.tasks.get_mut(upid) else { return };
    if !task.running {
        return;
    }
    let action = task.action.take();
    let fault = task.fault.take();
    let result = match &fault {
        Some(TaskFault::Failure(msg)) => {
            if let Some(a) = action {
                actions::abort(world, a);
            }
            Err(msg.clone())
        }
        // A worker that fails on its own cleans up as an interrupted one does.
        _ => match action {
            Some(a) => {
                let undo = a.clone();
                let r = actions::complete(world, a);
                if r.is_err() {
                    actions::abort(world, undo);
                }
                r
            }
            None => Ok(Vec::new()),
        },
    };
    let Some(task) = world.tasks.get_mut(upid) else { return };
    match result {
        Ok(lines) => {
            // A worker's own warnings (`warn` in PVE) end it WARNINGS.
            let own = lines.iter().filter(|l| l.starts_with("WARN: ")).count() as u32;
            task.log.extend(lines);
            let fault = match fault {
                None if own > 0 => {
                    task.log.push(format!("TASK WARNINGS: {own}"));
                    task.exitstatus = Some(format!("WARNINGS: {own}"));
                    task.running = false;
                    task.endtime = Some(unix_now());
                    return;
                }
                f => f,
            };
            match fault {
                Some(TaskFault::Warnings(n)) if n > 0 => {
                    for i in 1..=n {
                        task.log.push(format!("WARN: emulated warning {i} of {n}"));
                    }
                    task.log.push(format!("TASK WARNINGS: {n}"));
                    task.exitstatus = Some(format!("WARNINGS: {n}"));
                }
                _ => {
                    task.log.push("TASK OK".to_string());
                    task.exitstatus = Some("OK".to_string());
                }
            }
        }
        Err(msg) => {
            let msg = msg.trim_end_matches('\n').replace('\n', " ");
            task.log.push(format!("TASK ERROR: {msg}"));
            task.exitstatus = Some(msg);
        }
    }
    task.running = false;
    task.endtime = Some(unix_now());
}

/// `DELETE /nodes/{node}/tasks/{upid}`: the worker is interrupted and cleans up after itself, ending
/// like a worker that failed.
pub(crate) fn stop(world: &mut World, upid: &str) {
    let Some(task) = world.tasks.get_mut(upid) else { return };
    if !task.running {
        return;
    }
    let msg = match &task.action {
        Some(TaskAction::Clone(_)) => "clone failed: received interrupt",
        _ => "received interrupt",
    };
    task.fault = Some(TaskFault::Failure(msg.to_string()));
    finish(world, upid);
}

/// Decodes a UPID: (node, type, id, user); None if it is malformed.
pub(crate) fn parse_upid(upid: &str) -> Option<(String, String, String, String)> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$",
        )
        .expect("static regex")
    });
    let c = RE.captures(upid)?;
    Some((c[1].to_string(), c[6].to_string(), c[7].to_string(), c[8].to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn upid_parse() {
        let (node, kind, id, user) =
            super::parse_upid("UPID:pve1:00007323:001036A5:6419CAF8:qmclone:9000:berth@pve!agent:").unwrap();
        assert_eq!(
            (node.as_str(), kind.as_str(), id.as_str(), user.as_str()),
            ("pve1", "qmclone", "9000", "berth@pve!agent")
        );
        assert!(super::parse_upid("UPID:pve1:xyz").is_none());
    }
}
