//! The agent's crash-safety promises where a real process dies or is cut off: a failed
//! post-provision command stays the outcome across a crash in its cleanup, a command cut off by
//! kill -9 is never run again, an outcome larger than the control plane accepts is fitted to it,
//! and an agent cut off from the control plane longer than its lease stops driving the backend.

mod common;
mod stack;

use std::time::{Duration, Instant};

use berth_pve_emulator::Timings;
use stack::{Db, Stack};

const LONG: Duration = Duration::from_secs(90);

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < until, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Item 1: the agent dies while it cleans up after a failing command (before the delete, and
/// after it): the restarted agent reports the failure and deletes what is left; it never runs
/// the remaining commands, never makes a second machine, never reports success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_stays_the_outcome_across_a_crash_in_its_cleanup() {
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), "").await.unwrap();
    let tally = s.dir.path().join("tally");
    let never = format!("echo never >> {}", tally.display());
    let offering = s.offering(&["echo fine", "echo broken >&2; exit 3", &never]).await;
    for failpoint in ["before_cleanup", "after_cleanup"] {
        s.spawn_agent_with(&[("BERTH_AGENT_FAILPOINT", failpoint)]);
        s.wait_agent_alive().await;
        let a = s.order(&offering, &failpoint.replace('_', "-")).await;
        assert!(
            !s.agent_exit().await.success(),
            "the failpoint {failpoint} aborts the agent"
        );
        s.spawn_agent();
        let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
        assert_eq!(op.status, "failed", "crash {failpoint}: {op:#?}\n{}", s.agent_log());
        let e = op.error.unwrap();
        assert_eq!(e.code, "post_provision_failed", "{e:?}");
        assert!(e.message.contains("exited 3"), "{e:?}");
        assert!(!tally.exists(), "crash {failpoint}: a command after the failed one ran");
        assert!(
            s.owned_by(&a.instance_id).is_empty(),
            "crash {failpoint}: {:?}",
            s.owned()
        );
        assert_eq!(s.customer.instance(&a.instance_id).await.unwrap().status, "failed");
        s.kill_agent();
    }
    let clones = s.emu.requests().iter().filter(|r| r.path.ends_with("/clone")).count();
    assert_eq!(clones, 2, "one machine per order, none made again");
}

/// Item 3: kill -9 while a command runs in the guest. The restarted agent does not run it
/// again: the order fails (`post_provision_interrupted`) and its machine is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_cut_off_by_a_crash_is_not_run_again() {
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), "").await.unwrap();
    let tally = s.dir.path().join("tally");
    let command = format!("echo ran >> {}; sleep 2", tally.display());
    let offering = s.offering(&[&command]).await;
    s.spawn_agent();
    s.wait_agent_alive().await;
    let a = s.order(&offering, "web1").await;
    wait_for("the command's start", LONG, || tally.exists()).await;
    s.kill_agent();
    s.spawn_agent();
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "failed", "{op:#?}\n{}", s.agent_log());
    let e = op.error.unwrap();
    assert_eq!(e.code, "post_provision_interrupted", "{e:?}");
    assert!(e.message.contains("not run twice"), "{e:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        std::fs::read_to_string(&tally).unwrap(),
        "ran\n",
        "the command ran once"
    );
    assert!(s.owned_by(&a.instance_id).is_empty(), "{:?}", s.owned());
}

/// Item 2: a command's output far beyond the control plane's 64 KiB request limit: the
/// completion is fitted (the tail cut, its end kept) and the order ends instead of looping on
/// refused completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_larger_than_the_control_plane_accepts_is_fitted() {
    let extra = "[post_provision]\noutput_tail_bytes = 1048576\n";
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), extra).await.unwrap();
    let offering = s
        .offering(&["head -c 200000 /dev/zero | tr '\\0' x; printf '\\033[31mend\\033[0m'"])
        .await;
    s.spawn_agent();
    s.wait_agent_alive().await;
    let a = s.order(&offering, "web1").await;
    let op = s
        .finished(a.operation_id.as_deref().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(op.status, "succeeded", "{op:#?}\n{}", s.agent_log());
    let tail = &op.result.unwrap().commands[0].output_tail;
    assert!(tail.len() < 64 * 1024 && tail.len() > 32 * 1024, "{}", tail.len());
    assert!(tail.ends_with("\u{1b}[31mend\u{1b}[0m"), "the end is kept");
    assert_eq!(s.owned_by(&a.instance_id).len(), 1);
}

/// Item 8: the control plane is out of reach for longer than the lease while a command runs.
/// The agent stops driving the backend once the lease's time is over (another agent could hold
/// it by then); when the control plane is back, the operation is claimed again and fails as
/// interrupted instead of running the command twice, and its machine is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_longer_than_its_lease_stops_driving_the_backend() {
    let mut s = Stack::start(Db::Sqlite, Timings::fast(), "").await.unwrap();
    let tally = s.dir.path().join("tally");
    let command = format!("echo ran >> {}; sleep 15", tally.display());
    let offering = s.offering(&[&command]).await;
    s.spawn_agent();
    s.wait_agent_alive().await;
    let a = s.order(&offering, "web1").await;
    wait_for("the command's start", LONG, || tally.exists()).await;
    let polls = |s: &Stack| {
        s.emu
            .requests()
            .iter()
            .filter(|r| r.path.contains("exec-status"))
            .count()
    };
    s.kill_server().await;
    // The lease is 6 s: the agent acts for at most 6 s less a margin after its last renewal.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let at_fence = polls(&s);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        polls(&s),
        at_fence,
        "the agent still drives the backend past its lease\n{}",
        s.agent_log()
    );
    assert!(s.agent_log().contains("ran out without a renewal"), "{}", s.agent_log());
    s.start_server().await;
    let op = s.finished(a.operation_id.as_deref().unwrap(), LONG).await;
    assert_eq!(op.status, "failed", "{op:#?}\n{}", s.agent_log());
    assert_eq!(op.error.unwrap().code, "post_provision_interrupted");
    assert_eq!(
        std::fs::read_to_string(&tally).unwrap(),
        "ran\n",
        "the command ran once"
    );
    assert!(s.owned_by(&a.instance_id).is_empty(), "{:?}", s.owned());
}

/// Where the matrix kills the agent: inside a backend stage, or right after a command ended.
const KILL_POINTS: [&str; 6] = [
    "clone_template",
    "configure_vm",
    "start_vm",
    "wait_network",
    "after_command_1",
    "after_command_2",
];

/// The agents of one matrix run: each a real `berth agent` process with its own state.
struct Agents {
    tomls: Vec<std::path::PathBuf>,
    procs: Vec<Option<stack::OtherAgent>>,
}

impl Agents {
    fn spawn(&mut self, s: &Stack, i: usize, env: &[(&str, &str)]) {
        self.procs[i] = Some(s.spawn_other_with(&self.tomls[i], env));
    }

    /// Waits until one agent exits on its own (a failpoint) and returns which.
    async fn one_exits(&mut self) -> usize {
        let until = Instant::now() + LONG;
        loop {
            for (i, p) in self.procs.iter_mut().enumerate() {
                if p.as_mut().is_some_and(|p| p.exited()) {
                    self.procs[i] = None;
                    return i;
                }
            }
            assert!(Instant::now() < until, "no agent reached its failpoint");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The crash matrix: kill -9 inside every backend stage and after every post-provision command,
/// then that agent started again at once; alone, or beside a second agent of the same provider
/// (which may be the one that gets the work); on SQLite and PostgreSQL. Every order ends
/// running with one machine, each command ran exactly once, and nothing else is left.
async fn crash_matrix(db: Db, agents: usize) {
    let Some(s) = Stack::start(db, stack::paced(), "").await else {
        eprintln!("skipped: no PostgreSQL here");
        return;
    };
    let mut tomls = vec![s.agent_toml.clone()];
    for n in 1..agents {
        tomls.push(s.enroll_another(&format!("agent{n}")).await);
    }
    let mut all = Agents {
        procs: tomls.iter().map(|_| None).collect(),
        tomls,
    };
    for point in KILL_POINTS {
        let tally = s.dir.path().join(format!("tally-{point}"));
        let one = format!("echo one >> {}", tally.display());
        let two = format!("echo two >> {}", tally.display());
        let offering = s.offering(&[&one, &two]).await;
        let failpoint = point.starts_with("after_command");
        let env: &[(&str, &str)] = if failpoint {
            &[("BERTH_AGENT_FAILPOINT", point)]
        } else {
            &[]
        };
        for i in 0..agents {
            all.spawn(&s, i, env);
        }
        s.wait_agent_alive().await;
        let a = s.order(&offering, &point.replace('_', "-")).await;
        let op = a.operation_id.clone().unwrap();
        let killed = if failpoint {
            all.one_exits().await
        } else {
            s.in_stage(&op, point).await;
            // Every agent is killed: whichever holds the work dies in that stage.
            for p in all.procs.iter_mut() {
                p.take();
            }
            0
        };
        for i in 0..agents {
            if all.procs[i].is_none() {
                all.spawn(&s, i, &[]);
            }
        }
        let done = s.finished(&op, LONG).await;
        assert_eq!(
            done.status, "succeeded",
            "killed at {point} (agent {killed}): {done:#?}"
        );
        assert_eq!(
            s.owned_by(&a.instance_id).len(),
            1,
            "killed at {point}: {:?}",
            s.owned()
        );
        assert_eq!(s.customer.instance(&a.instance_id).await.unwrap().status, "running");
        assert_eq!(
            std::fs::read_to_string(&tally).unwrap_or_default(),
            "one\ntwo\n",
            "killed at {point}: each command once"
        );
        for p in all.procs.iter_mut() {
            p.take();
        }
    }
    assert_eq!(s.owned().len(), KILL_POINTS.len(), "no orphan: {:?}", s.owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_one_agent_on_sqlite() {
    crash_matrix(Db::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_two_agents_on_sqlite() {
    crash_matrix(Db::Sqlite, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_one_agent_on_postgres() {
    crash_matrix(Db::Postgres, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_two_agents_on_postgres() {
    crash_matrix(Db::Postgres, 2).await;
}
