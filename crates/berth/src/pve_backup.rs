//! `berth pve backup`: the cluster's backup jobs, what each selects and when it runs next, and
//! the guests no job covers.

use berth_proxmox::client::backup::{BackupJob, UncoveredGuest};
use serde::Serialize;

/// `pve backup list`: every job, and every guest none of them selects.
#[derive(Serialize)]
pub struct BackupOverview {
    pub jobs: Vec<BackupJob>,
    pub not_backed_up: Vec<UncoveredGuest>,
}

fn ids(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn selection(j: &BackupJob) -> String {
    match (j.all, &j.pool) {
        (true, _) if j.exclude.is_empty() => "all guests".into(),
        (true, _) => format!("all but {}", ids(&j.exclude)),
        (false, Some(p)) => format!("pool {p}"),
        (false, None) => format!("guests {}", ids(&j.vmid)),
    }
}

fn next(j: &BackupJob) -> String {
    match (j.enabled, j.next_run) {
        (false, _) => "disabled".into(),
        (true, Some(t)) => berth_core::utc(t as i64 * 1000),
        (true, None) => "-".into(),
    }
}

fn guest(g: &UncoveredGuest) -> String {
    let kind = if g.kind.as_deref() == Some("lxc") { "CT" } else { "VM" };
    let id = g.vmid.map_or_else(|| "?".into(), |v| v.to_string());
    match &g.name {
        Some(n) => format!("{kind} {id} ({n})"),
        None => format!("{kind} {id}"),
    }
}

pub fn table(o: &BackupOverview) -> String {
    let row =
        |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str| format!("{a:<16} {b:<16} {c:<21} {d:<10} {e:<9} {f}");
    let mut lines = if o.jobs.is_empty() {
        vec!["no backup jobs".to_owned()]
    } else {
        std::iter::once(row("JOB", "SCHEDULE", "NEXT RUN", "STORAGE", "MODE", "SELECTS"))
            .chain(o.jobs.iter().map(|j| {
                row(
                    &j.id,
                    j.schedule.as_deref().unwrap_or("-"),
                    &next(j),
                    j.storage.as_deref().unwrap_or("-"),
                    j.mode.as_deref().unwrap_or("snapshot"),
                    &selection(j),
                )
            }))
            .collect()
    };
    lines.push(String::new());
    lines.push(match o.not_backed_up.len() {
        0 => "every guest is covered by a backup job".to_owned(),
        _ => format!(
            "not covered by any backup job: {}",
            o.not_backed_up.iter().map(guest).collect::<Vec<_>>().join(", ")
        ),
    });
    lines.join("\n")
}

pub fn detail(j: &BackupJob) -> String {
    let mut lines = vec![
        ("job", j.id.clone()),
        ("schedule", j.schedule.clone().unwrap_or_else(|| "-".into())),
        ("next run", next(j)),
        ("selects", selection(j)),
        ("storage", j.storage.clone().unwrap_or_else(|| "-".into())),
        ("mode", j.mode.clone().unwrap_or_else(|| "snapshot".into())),
        ("compress", j.compress.clone().unwrap_or_else(|| "0".into())),
    ];
    if let Some(p) = &j.prune_backups {
        lines.push(("retention", p.to_string()));
    }
    if let Some(n) = &j.node {
        lines.push(("node", n.clone()));
    }
    if let Some(c) = &j.comment {
        lines.push(("comment", c.clone()));
    }
    let mut out: Vec<String> = lines.into_iter().map(|(k, v)| format!("{k:<12} {v}")).collect();
    out.extend(j.options.iter().map(|(k, v)| format!("{k:<12} {v}")));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: jobs with their selections, the uncovered guests, one job in detail.
    #[test]
    fn jobs_read_as_a_table_and_a_detail() {
        let jobs: Vec<BackupJob> = serde_json::from_value(serde_json::json!([
            {"id": "nightly", "schedule": "21:00", "next-run": 1_796_590_800, "storage": "pbs",
             "all": 1, "exclude": "9000", "prune-backups": "keep-last=7", "compress": "zstd"},
            {"id": "web", "schedule": "sat 02:30", "enabled": 0, "storage": "local", "pool": "web",
             "mode": "stop"}
        ]))
        .unwrap();
        let not_backed_up = serde_json::from_value(serde_json::json!([
            {"vmid": 101, "type": "qemu", "name": "db1"}, {"vmid": 102, "type": "lxc"}
        ]))
        .unwrap();
        let o = BackupOverview {
            jobs: jobs.clone(),
            not_backed_up,
        };
        assert_eq!(
            table(&o),
            "\
JOB              SCHEDULE         NEXT RUN              STORAGE    MODE      SELECTS
nightly          21:00            2026-12-06T21:00:00Z  pbs        snapshot  all but 9000
web              sat 02:30        disabled              local      stop      pool web

not covered by any backup job: VM 101 (db1), CT 102"
        );
        assert_eq!(
            detail(&jobs[0]),
            "\
job          nightly
schedule     21:00
next run     2026-12-06T21:00:00Z
selects      all but 9000
storage      pbs
mode         snapshot
compress     zstd
retention    keep-last=7"
        );
    }
}
