//! PVE tasks: UPID parsing and waiting for a task at the node named in its UPID, with a short
//! first poll interval that grows. `WARNINGS: n` is success (the WARN lines are surfaced); any
//! other exit status is a failure carrying the tail of the task log.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use super::error::PveError;
use super::http::{Method, PveClient};
use super::params::{Params, path_segment};
use super::types::{TaskListEntry, TaskLogLine, TaskStatus};

static UPID_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$",
    )
    .expect("UPID regex")
});

static WARNINGS_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^WARNINGS: \d+$").expect("warnings regex"));

/// How long a fresh UPID may answer `400 no such task` before that counts as an error.
const NO_SUCH_TASK_GRACE: Duration = Duration::from_secs(10);
/// Consecutive transient failures of the status poll tolerated before giving up.
const MAX_POLL_FAILURES: u32 = 10;
/// Lines of log attached to a failed task.
const TAIL_LINES: u64 = 10;

/// A parsed task ID: `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    raw: String,
    node: String,
    task_type: String,
    id: String,
    user: String,
}

impl Upid {
    pub fn parse(s: &str) -> Result<Self, PveError> {
        let s = s.trim();
        let c = UPID_RE
            .captures(s)
            .ok_or_else(|| PveError::InvalidUpid { upid: s.to_owned() })?;
        Ok(Upid {
            raw: s.to_owned(),
            node: c[1].to_owned(),
            task_type: c[6].to_owned(),
            id: c[7].to_owned(),
            user: c[8].to_owned(),
        })
    }
    /// The node the task runs on (poll there, not where the request was sent).
    pub fn node(&self) -> &str {
        &self.node
    }
    /// `qmclone`, `qmstart`, `vzcreate`, …
    /// What kind of wait this task is, for learning its duration: the node and task type, and
    /// for clones the source guest (clones of one template take similar times).
    pub fn wait_key(&self) -> String {
        match self.task_type.as_str() {
            "qmclone" | "vzclone" => format!("{}/{}/{}", self.node, self.task_type, self.id),
            t => format!("{}/{t}", self.node),
        }
    }

    pub fn task_type(&self) -> &str {
        &self.task_type
    }
    /// The task's object ID (for a clone: the source VMID).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// `user@realm` or `user@realm!token`.
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    fn path(&self, tail: &str) -> String {
        format!(
            "/nodes/{}/tasks/{}{tail}",
            path_segment(&self.node),
            path_segment(&self.raw)
        )
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A task that ended well; `warnings` holds its `WARN:` lines when it ended `WARNINGS: n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub upid: Upid,
    pub warnings: Vec<String>,
}

impl PveClient {
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, PveError> {
        self.get_once(&upid.path("/status"), &Params::new()).await
    }

    /// Log lines `start..start+limit` and the log's total line count.
    pub async fn task_log(&self, upid: &Upid, start: u64, limit: u64) -> Result<(Vec<String>, Option<u64>), PveError> {
        let params = Params::new().int("start", start).int("limit", limit);
        let env = self.request(Method::Get, &upid.path("/log"), &params, true).await?;
        let lines: Vec<TaskLogLine> = serde_json::from_value(env.data).map_err(|e| PveError::Decode {
            method: "GET",
            path: upid.path("/log"),
            message: e.to_string(),
        })?;
        Ok((lines.into_iter().filter_map(|l| l.t).collect(), env.total))
    }

    /// The last `n` lines of a task's log.
    pub async fn task_log_tail(&self, upid: &Upid, n: u64) -> Result<Vec<String>, PveError> {
        let (mut lines, total) = self.task_log(upid, 0, 50).await?;
        if let Some(total) = total
            && total > 50
        {
            lines = self.task_log(upid, total.saturating_sub(n), n).await?.0;
        }
        let skip = lines.len().saturating_sub(n as usize);
        Ok(lines.split_off(skip))
    }

    /// The node's most recent tasks (Berth's own, or every task with `Sys.Audit` on the node).
    pub async fn recent_tasks(&self, node: &str, limit: u32) -> Result<Vec<TaskListEntry>, PveError> {
        let path = format!("/nodes/{}/tasks", path_segment(node));
        self.get(&path, &Params::new().int("limit", limit).str("source", "archive"))
            .await
    }

    /// A process that has waited for nothing yet (a fresh `berth vm create`) paces its first
    /// waits by how long the same kinds of task took on `node` lately: the cluster's own
    /// history. PVE keeps whole seconds, so the mean of several tasks is taken, and shortened
    /// by a fifth: looking early costs a request, looking late costs the customer. Once per
    /// node and client; a failure only means no expectations.
    pub async fn learn_from_history(&self, node: &str) {
        if !self.first_history_read(node) {
            return;
        }
        match self.recent_tasks(node, 50).await {
            Ok(tasks) => {
                for (key, took) in typical_durations(&tasks) {
                    self.seed_duration(&key, took.mul_f64(0.8));
                }
            }
            Err(e) => tracing::debug!(node, error = %e, "no task history to pace waits by"),
        }
    }

    /// Asks PVE to stop a running task (`DELETE /nodes/{node}/tasks/{upid}`).
    pub async fn stop_task(&self, upid: &Upid) -> Result<(), PveError> {
        self.write::<serde_json::Value>(Method::Delete, &upid.path(""), &Params::new())
            .await
            .map(|_| ())
    }

    /// Polls the task (on the `Poll` schedule) until it stops or `timeout` passes.
    pub async fn wait_task(&self, upid: &Upid, timeout: Duration) -> Result<TaskOutcome, PveError> {
        let key = upid.wait_key();
        let poll = self.poller(&key);
        let mut failures = 0;
        let mut sent = None;
        loop {
            poll.sleep_after(timeout, sent).await;
            sent = Some(std::time::Instant::now());
            // What is learned is when the look that saw the end was sent, not when its answer
            // came: counting the answer's round trip in would make each next wait look later,
            // and a short task's expectation grow without end against a slow API.
            let looked_at = poll.elapsed();
            match self.task_status(upid).await {
                Ok(st) if st.status.as_deref() == Some("stopped") => {
                    self.learned(&key, looked_at);
                    return self
                        .finish(upid, st.exitstatus.unwrap_or_else(|| "unexpected status".into()))
                        .await;
                }
                Ok(_) => failures = 0,
                Err(e) if e.is_no_such_task() && poll.elapsed() < NO_SUCH_TASK_GRACE => {}
                Err(e) if e.is_transient(true) && failures < MAX_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(upid = %upid, error = %e, "task status poll failed; polling again");
                }
                Err(e) => return Err(e),
            }
            if poll.elapsed() >= timeout {
                return Err(PveError::Timeout {
                    what: format!("task {upid}"),
                    after: timeout,
                });
            }
        }
    }

    async fn finish(&self, upid: &Upid, exitstatus: String) -> Result<TaskOutcome, PveError> {
        if exitstatus == "OK" {
            return Ok(TaskOutcome {
                upid: upid.clone(),
                warnings: Vec::new(),
            });
        }
        if WARNINGS_RE.is_match(&exitstatus) {
            let warnings = match self.task_log(upid, 0, 1000).await {
                Ok((lines, _)) => lines.into_iter().filter(|l| l.contains("WARN:")).collect(),
                Err(e) => vec![format!("{exitstatus} (log unavailable: {e})")],
            };
            for w in &warnings {
                tracing::warn!(upid = %upid, "task warning: {w}");
            }
            return Ok(TaskOutcome {
                upid: upid.clone(),
                warnings,
            });
        }
        let log_tail = match self.task_log_tail(upid, TAIL_LINES + 1).await {
            Ok(lines) => lines.into_iter().filter(|l| !l.starts_with("TASK ERROR:")).collect(),
            Err(e) => {
                tracing::warn!(upid = %upid, error = %e, "cannot read the failed task's log");
                Vec::new()
            }
        };
        Err(PveError::TaskFailed {
            upid: upid.to_string(),
            exitstatus,
            log_tail,
        })
    }
}

/// The mean duration of each kind of wait (`Upid::wait_key`) among tasks that ended `OK`;
/// kinds with fewer than three such tasks, or averaging under a second, are left out.
fn typical_durations(tasks: &[TaskListEntry]) -> Vec<(String, Duration)> {
    let mut sums: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for t in tasks {
        let (Some(start), Some(end), Some("OK")) = (t.starttime, t.endtime, t.status.as_deref()) else {
            continue;
        };
        let Ok(upid) = Upid::parse(&t.upid) else { continue };
        let entry = sums.entry(upid.wait_key()).or_default();
        entry.0 += (end - start).max(0);
        entry.1 += 1;
    }
    sums.into_iter()
        .filter(|(_, (sum, n))| *n >= 3 && *sum >= *n)
        .map(|(key, (sum, n))| (key, Duration::from_secs_f64(sum as f64 / n as f64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_durations_average_ok_tasks_of_each_kind() {
        let task = |kind: &str, id: u32, start: i64, end: i64, status: &str| TaskListEntry {
            upid: format!("UPID:pve1:00001234:00005678:6B160611:{kind}:{id}:berth@pve!agent:"),
            starttime: Some(start),
            endtime: Some(end),
            status: Some(status.into()),
        };
        let tasks = vec![
            task("qmclone", 9000, 100, 102, "OK"),
            task("qmclone", 9000, 200, 203, "OK"),
            task("qmclone", 9000, 300, 302, "OK"),
            task("qmclone", 9000, 400, 460, "clone failed"),
            task("qmclone", 9001, 100, 110, "OK"),
            task("qmstart", 101, 100, 101, "OK"),
            task("qmstart", 102, 100, 102, "OK"),
            task("qmstart", 103, 100, 101, "OK"),
            task("resize", 101, 100, 100, "OK"),
            task("resize", 102, 100, 100, "OK"),
            task("resize", 103, 100, 100, "OK"),
        ];
        let got = typical_durations(&tasks);
        assert_eq!(
            got,
            vec![
                ("pve1/qmclone/9000".to_string(), Duration::from_secs_f64(7.0 / 3.0)),
                ("pve1/qmstart".to_string(), Duration::from_secs_f64(4.0 / 3.0)),
            ],
            "failed tasks, kinds seen fewer than three times and sub-second kinds are left out"
        );
    }

    #[test]
    fn parses_real_upids() {
        let u = Upid::parse("UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:").unwrap();
        assert_eq!(
            (u.node(), u.task_type(), u.id(), u.user()),
            ("dahu-2", "qmstart", "100", "root@pam")
        );
        let u = Upid::parse("UPID:proxmox2:000D7AA2:08D5A17C:63DF62A5:vzclone:200:root@pam!api_token:").unwrap();
        assert_eq!(u.user(), "root@pam!api_token");
        // 9-digit pstart after long uptimes
        assert!(Upid::parse("UPID:pve:00000ACD:100006AE8:679A423B:qmclone:112:capmox@pve!capi:").is_ok());
        for bad in [
            "",
            "UPID:pve:1:2:3:qmstart:100:root@pam:",
            "UPID:pve:00007323:001036A5:6419CAF8:qmstart:100:root@pam",
        ] {
            assert!(matches!(Upid::parse(bad), Err(PveError::InvalidUpid { .. })), "{bad}");
        }
    }

    #[test]
    fn warnings_pattern() {
        assert!(WARNINGS_RE.is_match("WARNINGS: 1"));
        assert!(!WARNINGS_RE.is_match("WARNINGS: one"));
    }
}
