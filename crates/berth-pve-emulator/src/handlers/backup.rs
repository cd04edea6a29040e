//! Backup jobs (`/cluster/backup[/{id}]`, kept in `jobs.cfg`), the guests no job covers
//! (`/cluster/backup-info/not-backed-up`) and one-off backups (`POST /nodes/{node}/vzdump`, a
//! task that writes a backup volume per guest), worded as pve-manager's `API2::Backup` and
//! `VZDump` word them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::actions::TaskAction;
use crate::api::{ApiError, ApiResult, Ctx, Reply};
use crate::state::{Kind, World, unix_now};
use crate::tasks::TaskSpec;

pub(crate) type Job = BTreeMap<String, String>;

const ALL_DAYS: &str = "mon,tue,wed,thu,fri,sat,sun";
const INTEGER: &[&str] = &[
    "all",
    "enabled",
    "bwlimit",
    "repeat-missed",
    "protected",
    "remove",
    "stop",
];
/// Parameters only root@pam may set.
const ROOT_ONLY: &[&str] = &["tmpdir", "dumpdir", "script"];

fn lock_err(file: &str, msg: String) -> ApiError {
    ApiError::fail(format!("error with cfs lock 'file-{file}': {msg}"))
}

fn vmids(v: Option<&String>) -> Vec<u32> {
    v.map(|s| s.split([',', ';', ' ']).filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The guests a job (or a vzdump call) selects: `all` minus `exclude`, a `pool`, or `vmid`.
fn selected(world: &World, sel: &Job) -> Vec<u32> {
    // A job bound to a node backs up only the guests there.
    let here = |id: &u32| {
        sel.get("node")
            .is_none_or(|n| world.guests.get(id).is_some_and(|g| g.node == *n))
    };
    if sel.get("all").is_some_and(|a| a == "1") {
        let ex = vmids(sel.get("exclude"));
        return world
            .guests
            .keys()
            .copied()
            .filter(|id| !ex.contains(id) && here(id))
            .collect();
    }
    if let Some(pool) = sel.get("pool") {
        return world
            .pools
            .get(pool)
            .map(|p| p.vms.iter().copied().collect())
            .unwrap_or_default();
    }
    vmids(sel.get("vmid")).into_iter().filter(here).collect()
}

/// `remove_vmid_from_backup_jobs`: a purged guest leaves every job's `vmid` and `exclude` list;
/// a job left selecting nothing goes.
pub(crate) fn remove_vmid(world: &mut World, vmid: u32) {
    world.backup_jobs.retain(|_, job| {
        for key in ["vmid", "exclude"] {
            if let Some(list) = job.get(key) {
                let kept: Vec<String> = vmids(Some(list))
                    .into_iter()
                    .filter(|v| *v != vmid)
                    .map(|v| v.to_string())
                    .collect();
                match kept.is_empty() {
                    true => job.remove(key),
                    false => job.insert(key.to_string(), kept.join(",")),
                };
            }
        }
        verify(&mut job.clone(), true).is_ok()
    });
}

/// `verify_vzdump_parameters`: selection options that contradict each other, or none at all.
fn verify(p: &mut Job, check_missing: bool) -> Result<(), ApiError> {
    // `exclude` implies `all` (VZDump.pm `verify_vzdump_parameters`).
    if p.contains_key("exclude") {
        p.insert("all".into(), "1".into());
    }
    let all = p.get("all").is_some_and(|a| a == "1");
    if all && p.contains_key("vmid") {
        return Err(ApiError::param("all", "option conflicts with option 'vmid'"));
    }
    if p.contains_key("pool") && p.contains_key("vmid") {
        return Err(ApiError::param("pool", "option conflicts with option 'vmid'"));
    }
    if check_missing && !(all || p.contains_key("pool") || p.contains_key("stop")) && !p.contains_key("vmid") {
        return Err(ApiError::param("vmid", "property is missing"));
    }
    Ok(())
}

/// A job runs on `schedule` or (the old way) `starttime`, not both and not neither.
fn check_schedule(p: &Job, create: bool) -> Result<(), ApiError> {
    match (p.contains_key("schedule"), p.contains_key("starttime")) {
        (true, true) => Err(ApiError::param(
            "schedule",
            "'starttime' and 'schedule' cannot both be set",
        )),
        (false, false) if create => Err(ApiError::param(
            "schedule",
            "neither 'starttime' nor 'schedule' were set",
        )),
        _ => Ok(()),
    }
}

/// `starttime`/`dow` become `schedule`, as `convert_to_schedule` does.
fn convert_schedule(p: &mut Job) {
    let dow = p.remove("dow");
    if let Some(start) = p.remove("starttime") {
        let schedule = match dow.as_deref() {
            None | Some(ALL_DAYS) => start,
            Some(d) => format!("{d} {start}"),
        };
        p.insert("schedule".into(), schedule);
    }
}

fn params(ctx: &Ctx, skip: &[&str]) -> Result<Job, ApiError> {
    let mut p = Job::new();
    for (k, v) in ctx.params.without(skip) {
        if ROOT_ONLY.contains(&k.as_str()) && ctx.token.user() != "root@pam" {
            return Err(ApiError::param(&k, "Only root may set this option."));
        }
        let v = match INTEGER.contains(&k.as_str()) && matches!(v.as_str(), "true" | "yes" | "on") {
            true => "1".to_string(),
            false => v,
        };
        p.insert(k, v);
    }
    Ok(p)
}

fn job_json(id: &str, job: &Job) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(id));
    m.insert("type".into(), json!("vzdump"));
    for (k, v) in job {
        let value = match (INTEGER.contains(&k.as_str()), k.as_str()) {
            (true, _) => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(v)),
            // Decoded into an object on read (JobBase::decode_value).
            (false, "prune-backups" | "fleecing" | "performance") => Value::Object(
                v.split(',')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, n)| {
                        (
                            k.to_string(),
                            n.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(n)),
                        )
                    })
                    .collect(),
            ),
            (false, _) => json!(v),
        };
        m.insert(k.clone(), value);
    }
    if job.get("enabled").is_none_or(|e| e == "1")
        && let Some(next) = job.get("schedule").and_then(|s| next_run(s, unix_now()))
    {
        m.insert("next-run".into(), json!(next));
    }
    Value::Object(m)
}

pub(super) fn list(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let world = ctx.world();
    let list: Vec<Value> = world.backup_jobs.iter().map(|(id, j)| job_json(id, j)).collect();
    Reply::data(Value::Array(list))
}

pub(super) fn get(ctx: &mut Ctx, id: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let world = ctx.world();
    let job = world
        .backup_jobs
        .get(id)
        .ok_or_else(|| ApiError::param("id", format!("No such job '{id}'")))?;
    Reply::data(job_json(id, job))
}

/// `POST /cluster/backup`: without `id`, PVE names the job with a UUID and answers null, so the
/// caller cannot find it again.
pub(super) fn create(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Modify"], false)?;
    let mut p = params(ctx, &["id"])?;
    let id = match ctx.params.get("id") {
        Some(id) => id.to_string(),
        None => uuid(),
    };
    if let Some(pool) = p.get("pool").cloned() {
        if !ctx.world().pools.contains_key(&pool) {
            return Err(ApiError::fail(format!("pool '{pool}' does not exist")));
        }
        ctx.token.check(&format!("/pool/{pool}"), &["VM.Backup"], false)?;
    }
    p.entry("enabled".into()).or_insert_with(|| "1".into());
    verify(&mut p, true)?;
    check_schedule(&p, true)?;
    convert_schedule(&mut p);
    let mut world = ctx.world();
    if world.backup_jobs.contains_key(&id) {
        return Err(lock_err("jobs_cfg", format!("Job '{id}' already exists")));
    }
    if let Some(s) = p.get("storage")
        && world.storage(s).is_none()
    {
        return Err(lock_err("jobs_cfg", format!("storage '{s}' does not exist")));
    }
    world.backup_jobs.insert(id, p);
    Reply::null()
}

pub(super) fn update(ctx: &mut Ctx, id: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Modify"], false)?;
    let p = params(ctx, &["id", "delete"])?;
    let delete: Vec<String> = ctx.params.split_list("delete");
    let mut world = ctx.world();
    let mut job = world
        .backup_jobs
        .get(id)
        .cloned()
        .ok_or_else(|| lock_err("jobs_cfg", format!("job '{id}' not found")))?;
    for k in &delete {
        if matches!(k.as_str(), "id" | "type") {
            return Err(ApiError::param("delete", format!("unknown option '{k}'")));
        }
        job.remove(k);
    }
    // A new selection replaces the old one (Backup.pm update_job).
    let drop: &[&str] = if p.contains_key("vmid") {
        &["all", "exclude", "pool"]
    } else if p.contains_key("pool") {
        &["all", "exclude", "vmid"]
    } else if p.contains_key("all") || p.contains_key("exclude") {
        &["vmid", "pool"]
    } else {
        &[]
    };
    for k in drop {
        job.remove(*k);
    }
    if p.contains_key("starttime") {
        job.remove("schedule");
    }
    check_schedule(&p, false)?;
    job.extend(p);
    verify(&mut job, true)?;
    convert_schedule(&mut job);
    world.backup_jobs.insert(id.to_string(), job);
    Reply::null()
}

pub(super) fn delete(ctx: &mut Ctx, id: &str) -> ApiResult {
    ctx.token.check("/", &["Sys.Modify"], false)?;
    let mut world = ctx.world();
    if world.backup_jobs.remove(id).is_none() {
        return Err(ApiError::param("id", format!("No such job '{id}'")));
    }
    Reply::null()
}

/// `GET /cluster/backup-info/not-backed-up`: guests no job selects.
pub(super) fn not_backed_up(ctx: &mut Ctx) -> ApiResult {
    ctx.token.check("/", &["Sys.Audit"], false)?;
    let world = ctx.world();
    let covered: Vec<u32> = world.backup_jobs.values().flat_map(|j| selected(&world, j)).collect();
    let list: Vec<Value> = world
        .guests
        .values()
        .filter(|g| !covered.contains(&g.vmid))
        .filter(|g| ctx.token.check_vm(&world, g.vmid, &["VM.Audit"], false).is_ok())
        .map(|g| {
            let name_key = if g.kind == Kind::Qemu { "name" } else { "hostname" };
            let mut v = json!({ "vmid": g.vmid, "type": g.kind.as_str() });
            if let Some(n) = g.config.get(name_key) {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    Reply::data(Value::Array(list))
}

/// `POST /nodes/{node}/vzdump`: a `vzdump` task writing one backup per selected guest on this
/// node to a storage that holds backups.
pub(super) fn vzdump(ctx: &mut Ctx, node: &str) -> ApiResult {
    let mut p = params(ctx, &["node"])?;
    verify(&mut p, true)?;
    let storage = p.get("storage").cloned().unwrap_or_else(|| "local".into());
    let fault = ctx.task_fault.take();
    let shared = ctx.shared.clone();
    let mut world = shared.world();
    let st = world.storage_for_alloc(&storage, node).map_err(ApiError::fail)?;
    if !st.supports("backup") {
        return Err(ApiError::fail(format!("storage '{storage}' does not support backups")));
    }
    ctx.token
        .check(&format!("/storage/{storage}"), &["Datastore.AllocateSpace"], false)?;
    let guests = selected(&world, &p);
    for vmid in &guests {
        ctx.token.check(&format!("/vms/{vmid}"), &["VM.Backup"], false)?;
    }
    let mode = p.get("mode").cloned().unwrap_or_else(|| "snapshot".into());
    let id = if guests.len() == 1 {
        guests[0].to_string()
    } else {
        String::new()
    };
    let spec = TaskSpec {
        node: node.to_string(),
        kind: "vzdump",
        id,
        user: ctx.token.tokenid.clone(),
        duration: world.timings.resize,
        action: TaskAction::Vzdump {
            node: node.to_string(),
            storage,
            vmids: guests,
            mode,
        },
        fault,
        log: Vec::new(),
    };
    let upid = crate::tasks::start(&shared, &mut world, spec);
    Reply::data(json!(upid))
}

/// The vzdump task's effect: a backup volume per guest that lives on the node.
pub(crate) fn run_vzdump(
    world: &mut World,
    node: &str,
    storage: &str,
    vmids: &[u32],
    mode: &str,
) -> Result<Vec<String>, String> {
    let mut log = Vec::new();
    let mut failed = false;
    for &vmid in vmids {
        let Some(g) = world.guests.get(&vmid) else {
            log.push(format!(
                "ERROR: Backup of VM {vmid} failed - unable to find configuration file for VM {vmid}"
            ));
            failed = true;
            continue;
        };
        if g.node != node {
            log.push(format!("skip external VMs: {vmid}"));
            continue;
        }
        let kind = g.kind.as_str();
        let ext = if g.kind == Kind::Qemu { "vma.zst" } else { "tar.zst" };
        let stamp = stamp(unix_now());
        let vol = crate::state::Volume {
            storage: storage.to_string(),
            volname: format!("backup/vzdump-{kind}-{vmid}-{stamp}.{ext}"),
            size: 1 << 30,
            format: ext.to_string(),
            content: "backup".into(),
            vmid: Some(vmid),
            ctime: unix_now(),
            parent: None,
        };
        log.push(format!("INFO: Starting Backup of VM {vmid} ({kind})"));
        log.push(format!("INFO: Backup started at {stamp}, mode {mode}"));
        // The archive holds the config and the guest's own volumes (a restore makes them anew);
        // not unused disks.
        let volumes = g
            .config
            .iter()
            .filter(|(k, v)| {
                crate::propstr::is_disk_key(k) && !crate::propstr::is_cdrom(v) && !crate::propstr::is_cloudinit(v)
            })
            .filter_map(|(_, v)| crate::propstr::drive_volume(v))
            .filter_map(|volid| world.volume(node, &volid).filter(|v| v.vmid == Some(vmid)).cloned())
            .collect();
        let image = crate::state::BackupImage {
            kind: g.kind,
            config: g.config.clone(),
            volumes,
        };
        let volid = world.insert_volume(node, vol);
        world.backups.insert(volid, image);
        log.push(format!("INFO: Finished Backup of VM {vmid}"));
    }
    if failed { Err("job errors".into()) } else { Ok(log) }
}

/// `YYYY_MM_DD-HH_MM_SS` (UTC), as vzdump names its files.
fn stamp(t: u64) -> String {
    // Days to civil date (Howard Hinnant's algorithm).
    let z = (t / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = t % 86_400;
    format!("{y:04}_{m:02}_{d:02}-{:02}_{:02}_{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The next time (unix seconds, UTC) a simple calendar event fires: `HH:MM`, `DAYS HH:MM`
/// (`sat`, `mon..fri`, `mon,wed`), `daily`, `weekly`. Other events get no `next-run`.
pub(crate) fn next_run(schedule: &str, now: u64) -> Option<u64> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let (days, time) = match schedule.trim() {
        "daily" => ("", "00:00"),
        "weekly" => ("mon", "00:00"),
        s => match s.rsplit_once(' ') {
            Some((d, t)) => (d, t),
            None => ("", s),
        },
    };
    let (h, m) = time.split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok().filter(|h| *h < 24)?, m.parse().ok().filter(|m| *m < 60)?);
    let mut allowed = [days.is_empty(); 7];
    for part in days.split(',').filter(|p| !p.is_empty()) {
        let idx = |d: &str| DAYS.iter().position(|x| *x == d);
        match part.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (idx(a)?, idx(b)?);
                allowed.iter_mut().take(b + 1).skip(a).for_each(|d| *d = true);
            }
            None => allowed[idx(part)?] = true,
        }
    }
    let day0 = now - now % 86_400;
    (0..8u64).map(|d| day0 + d * 86_400 + h * 3600 + m * 60).find(|t| {
        // 1970-01-01 was a Thursday (index 3).
        let weekday = ((t / 86_400 + 3) % 7) as usize;
        *t > now && allowed[weekday]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_calendar_events_have_a_next_run() {
        // 2026-12-06 (a Sunday) 12:00 UTC.
        let now = 1_796_558_400;
        assert_eq!(next_run("21:00", now), Some(now + 9 * 3600));
        assert_eq!(
            next_run("sat 02:30", now),
            Some(now - 12 * 3600 + 6 * 86_400 + 2 * 3600 + 1800)
        );
        assert_eq!(next_run("mon..fri 01:00", now), Some(now + 13 * 3600));
        assert_eq!(next_run("*-*-1 00:00", now), None);
        assert_eq!(stamp(now + 5), "2026_12_06-12_00_05");
    }
}
