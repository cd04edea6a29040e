//! Backup jobs against the emulator: created with their id and a schedule (legacy start time
//! converted), changed whole, removed; the guests no job covers; one-off backups as vzdump
//! tasks; PVE's UUID-named job when no id is sent reproduced; refusals named, nothing changed.

mod common;

use std::time::Duration;

use berth_core::{GuestKind, Provider};
use berth_proxmox::client::backup::BackupJob;
use berth_proxmox::client::propstring::PruneBackups;
use berth_proxmox::client::{Method, Params, PveError};
use common::*;

fn says(e: PveError) -> String {
    e.to_string()
}

fn nightly() -> BackupJob {
    BackupJob {
        id: "nightly".into(),
        schedule: Some("21:00".into()),
        enabled: true,
        storage: Some("local".into()),
        mode: Some("snapshot".into()),
        compress: Some("zstd".into()),
        all: true,
        exclude: vec![9000],
        prune_backups: Some(PruneBackups {
            keep_last: Some(7),
            ..Default::default()
        }),
        comment: Some("every guest, every night".into()),
        ..Default::default()
    }
}

async fn make_vm(emu: &berth_pve_emulator::EmulatorHandle, tag: &str) -> u32 {
    provider(emu)
        .create(&spec(GuestKind::Vm, tag), &Events::default())
        .await
        .unwrap()
        .backend_id
        .parse()
        .unwrap()
}

#[tokio::test]
async fn jobs_are_created_changed_and_removed_and_cover_guests() {
    let emu = emulator().await;
    let c = client(&emu);
    let vmid = make_vm(&emu, "covered").await;
    let uncovered = c.not_backed_up().await.unwrap();
    assert!(
        uncovered
            .iter()
            .any(|g| g.vmid == Some(vmid) && g.kind.as_deref() == Some("qemu")),
        "{uncovered:?}"
    );
    assert!(
        uncovered.iter().any(|g| g.vmid == Some(9000)),
        "templates are listed too, as PVE does"
    );

    c.create_backup_job(&nightly()).await.unwrap();
    let job = c.backup_job("nightly").await.unwrap();
    assert!(job.next_run.is_some(), "{job:?}");
    assert_eq!(
        BackupJob {
            next_run: None,
            ..job.clone()
        },
        nightly()
    );
    assert!(c.not_backed_up().await.unwrap().iter().all(|g| g.vmid != Some(vmid)));

    // The legacy start time and days become a schedule.
    let legacy = Params::new()
        .str("id", "weekly")
        .str("vmid", vmid.to_string())
        .str("starttime", "02:30")
        .str("dow", "sat");
    c.write::<serde_json::Value>(Method::Post, "/cluster/backup", &legacy)
        .await
        .unwrap();
    assert_eq!(
        c.backup_job("weekly").await.unwrap().schedule.as_deref(),
        Some("sat 02:30")
    );

    // Changed whole: disabled jobs have no next run; a removed comment is gone.
    let off = BackupJob {
        enabled: false,
        comment: None,
        ..nightly()
    };
    c.update_backup_job(&off, &["comment"]).await.unwrap();
    let job = c.backup_job("nightly").await.unwrap();
    assert!(
        !job.enabled && job.next_run.is_none() && job.comment.is_none(),
        "{job:?}"
    );

    // Without an id PVE names the job with a UUID; the client refuses to send such a job.
    let e = c
        .create_backup_job(&BackupJob {
            id: String::new(),
            ..nightly()
        })
        .await
        .unwrap_err();
    assert!(says(e).contains("id: a backup job needs an id"));
    let anon = Params::new().str("schedule", "22:00").str("vmid", vmid.to_string());
    c.write::<serde_json::Value>(Method::Post, "/cluster/backup", &anon)
        .await
        .unwrap();
    let all = c.backup_jobs().await.unwrap();
    let named: Vec<&str> = all
        .iter()
        .map(|j| j.id.as_str())
        .filter(|id| *id != "nightly" && *id != "weekly")
        .collect();
    assert!(
        named.len() == 1 && named[0].len() == 36 && named[0].matches('-').count() == 4,
        "{named:?}"
    );

    for id in ["nightly", "weekly", named[0]] {
        c.delete_backup_job(id).await.unwrap();
    }
    assert!(c.backup_jobs().await.unwrap().is_empty());
    let e = c.delete_backup_job("nightly").await.unwrap_err();
    assert!(says(e).contains("id: No such job 'nightly'"));
    let e = c.backup_job("nightly").await.unwrap_err();
    assert!(says(e).contains("id: No such job 'nightly'"));
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn bad_jobs_name_the_field_and_change_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    c.create_backup_job(&nightly()).await.unwrap();
    let before = c.backup_jobs().await.unwrap();
    let cases: Vec<(BackupJob, &str)> = vec![
        (nightly(), "Job 'nightly' already exists"),
        (
            BackupJob {
                id: "job-a".into(),
                vmid: vec![100],
                ..nightly()
            },
            "all: option conflicts with option 'vmid'",
        ),
        (
            BackupJob {
                id: "job-b".into(),
                all: false,
                exclude: vec![],
                pool: Some("berth".into()),
                vmid: vec![100],
                ..nightly()
            },
            "pool: option conflicts with option 'vmid'",
        ),
        (
            BackupJob {
                id: "job-c".into(),
                all: false,
                exclude: vec![],
                ..nightly()
            },
            "vmid: property is missing",
        ),
        (
            BackupJob {
                id: "job-d".into(),
                storage: Some("nope".into()),
                ..nightly()
            },
            "storage 'nope' does not exist",
        ),
        (
            BackupJob {
                id: "job-e".into(),
                compress: Some("bzip9".into()),
                ..nightly()
            },
            "compress: value 'bzip9' does not have a value in the enumeration",
        ),
        (
            BackupJob {
                id: "job-f".into(),
                mode: Some("hibernate".into()),
                ..nightly()
            },
            "mode: value 'hibernate' does not have a value",
        ),
        (
            BackupJob {
                id: "job-g".into(),
                schedule: None,
                ..nightly()
            },
            "schedule: neither 'starttime' nor 'schedule' were set",
        ),
        (
            BackupJob {
                id: "bad id".into(),
                ..nightly()
            },
            "id: invalid format",
        ),
    ];
    for (job, expect) in cases {
        let e = says(c.create_backup_job(&job).await.unwrap_err());
        assert!(e.contains(expect), "{expect}: {e}");
    }
    let zero = Params::new()
        .str("id", "z")
        .str("schedule", "21:00")
        .bool("all", true)
        .str("prune-backups", "keep-last=0");
    let e = says(
        c.write::<serde_json::Value>(Method::Post, "/cluster/backup", &zero)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("prune-backups"), "{e}");
    let e = says(
        c.update_backup_job(
            &BackupJob {
                id: "ghost".into(),
                ..nightly()
            },
            &[],
        )
        .await
        .unwrap_err(),
    );
    assert!(e.contains("job 'ghost' not found"), "{e}");
    assert_eq!(c.backup_jobs().await.unwrap(), before, "nothing changed");

    // Sys.Modify on / is needed to change jobs.
    emu.add_token(
        "berth@pve!audit",
        "audit-secret",
        vec![("/".into(), vec!["Sys.Audit".into()])],
    );
    let ro = client_as(&emu, "berth@pve!audit", "audit-secret");
    assert_eq!(ro.backup_jobs().await.unwrap().len(), 1);
    let e = says(
        ro.create_backup_job(&BackupJob {
            id: "mine".into(),
            ..nightly()
        })
        .await
        .unwrap_err(),
    );
    assert!(e.contains("Permission check failed (/, Sys.Modify)"), "{e}");
}

#[tokio::test]
async fn vzdump_writes_a_backup_volume_as_a_task() {
    let emu = emulator().await;
    let c = client(&emu);
    let vmid = make_vm(&emu, "dumped").await;
    let params = Params::new()
        .str("vmid", vmid.to_string())
        .str("storage", "local")
        .str("mode", "snapshot");
    let upid = c.vzdump("pve1", &params).await.unwrap();
    assert!(upid.to_string().contains(&format!(":vzdump:{vmid}:")), "{upid}");
    c.wait_task(&upid, Duration::from_secs(10)).await.unwrap();
    let backups = c.storage_content("pve1", "local", Some("backup")).await.unwrap();
    assert!(
        backups
            .iter()
            .any(|v| v.volid.starts_with(&format!("local:backup/vzdump-qemu-{vmid}-"))),
        "{backups:?}"
    );
    let e = says(
        c.vzdump(
            "pve1",
            &Params::new().str("vmid", vmid.to_string()).str("storage", "local-lvm"),
        )
        .await
        .unwrap_err(),
    );
    assert!(e.contains("storage 'local-lvm' does not support backups"), "{e}");
    // A guest that does not exist fails the task with PVE's "job errors".
    let upid = c
        .vzdump("pve1", &Params::new().str("vmid", "4242").str("storage", "local"))
        .await
        .unwrap();
    let e = says(c.wait_task(&upid, Duration::from_secs(10)).await.unwrap_err());
    assert!(e.contains("job errors"), "{e}");
}
