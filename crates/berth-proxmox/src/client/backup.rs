//! Backup jobs (`/cluster/backup`), the guests no job covers, and one-off backups (`vzdump`).
//! A job is always created with its id: without one PVE names it with a UUID and answers null,
//! so the job could never be found again.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::error::PveError;
use super::http::{Method, PveClient};
use super::params::{Params, path_segment};
use super::propstring::PruneBackups;
use super::task::Upid;
use super::types::{de_string, de_u32, lenient_bool, lenient_string, lenient_u64};

/// One job of `jobs.cfg` as PVE shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct BackupJob {
    pub id: String,
    /// A systemd-like calendar event (`21:00`, `sat 02:30`).
    pub schedule: Option<String>,
    pub enabled: bool,
    pub storage: Option<String>,
    /// `snapshot`, `suspend` or `stop`.
    pub mode: Option<String>,
    /// `0`, `1`, `gzip`, `lzo`, `zstd`.
    pub compress: Option<String>,
    /// Every guest, less `exclude`.
    pub all: bool,
    pub vmid: Vec<u32>,
    pub pool: Option<String>,
    pub exclude: Vec<u32>,
    #[serde(rename = "prune-backups")]
    pub prune_backups: Option<PruneBackups>,
    pub comment: Option<String>,
    /// Runs only on this node.
    pub node: Option<String>,
    /// Unix time of the next run (enabled jobs with a schedule PVE can compute).
    #[serde(rename = "next-run")]
    pub next_run: Option<u64>,
    /// Every other option, as text.
    pub options: BTreeMap<String, String>,
}

/// A property string PVE may answer as text or, decoded, as an object (`prune-backups`,
/// `fleecing`, `performance` of a job: pve-guest-common `JobBase::decode_value`).
fn prop_text(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => Some(
            m.iter()
                .filter_map(|(k, v)| lenient_string(v).map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(","),
        ),
        v => lenient_string(v),
    }
}

fn ids(v: Option<Value>) -> Vec<u32> {
    v.as_ref()
        .and_then(lenient_string)
        .map(|s| s.split([',', ';', ' ']).filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default()
}

impl<'de> Deserialize<'de> for BackupJob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = BTreeMap::<String, Value>::deserialize(d)?;
        let raw_prune = m.remove("prune-backups").as_ref().and_then(prop_text);
        let mut text = |k: &str| m.remove(k).as_ref().and_then(lenient_string);
        let (id, schedule, storage, mode) = (
            text("id").unwrap_or_default(),
            text("schedule"),
            text("storage"),
            text("mode"),
        );
        let (compress, pool, comment, node) = (text("compress"), text("pool"), text("comment"), text("node"));
        text("type");
        let enabled = m.remove("enabled").as_ref().is_none_or(lenient_bool);
        let all = m.remove("all").as_ref().is_some_and(lenient_bool);
        let next_run = m.remove("next-run").as_ref().and_then(lenient_u64);
        let (vmid, exclude) = (ids(m.remove("vmid")), ids(m.remove("exclude")));
        let mut options: BTreeMap<String, String> = m
            .into_iter()
            .filter_map(|(k, v)| prop_text(&v).map(|s| (k, s)))
            .collect();
        let prune_backups = raw_prune.and_then(|p| match PruneBackups::parse(&p) {
            Ok(v) => Some(v),
            Err(_) => {
                options.insert("prune-backups".into(), p);
                None
            }
        });
        Ok(BackupJob {
            id,
            schedule,
            enabled,
            storage,
            mode,
            compress,
            all,
            vmid,
            pool,
            exclude,
            prune_backups,
            comment,
            node,
            next_run,
            options,
        })
    }
}

fn list(ids: &[u32]) -> Option<String> {
    (!ids.is_empty()).then(|| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

impl BackupJob {
    /// The whole job as create/update parameters (without `id`).
    pub fn to_params(&self) -> Params {
        let mut p = Params::new()
            .opt_str("schedule", self.schedule.clone())
            .bool("enabled", self.enabled)
            .opt_str("storage", self.storage.clone())
            .opt_str("mode", self.mode.clone())
            .opt_str("compress", self.compress.clone())
            .opt_str("vmid", list(&self.vmid))
            .opt_str("pool", self.pool.clone())
            .opt_str("exclude", list(&self.exclude))
            .opt_str("prune-backups", self.prune_backups.map(|p| p.to_string()))
            .opt_str("comment", self.comment.clone())
            .opt_str("node", self.node.clone());
        if self.all {
            p = p.bool("all", true);
        }
        for (k, v) in &self.options {
            p.push(k, v.clone());
        }
        p
    }
}

/// A guest no backup job selects.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UncoveredGuest {
    #[serde(deserialize_with = "de_u32")]
    pub vmid: Option<u32>,
    #[serde(rename = "type", default, deserialize_with = "de_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub name: Option<String>,
}

fn job_path(id: &str) -> String {
    format!("/cluster/backup/{}", path_segment(id))
}

impl PveClient {
    pub async fn backup_jobs(&self) -> Result<Vec<BackupJob>, PveError> {
        self.get("/cluster/backup", &Params::new()).await
    }

    pub async fn backup_job(&self, id: &str) -> Result<BackupJob, PveError> {
        self.get(&job_path(id), &Params::new()).await
    }

    /// `POST /cluster/backup` with the job's id (refused here when it has none).
    pub async fn create_backup_job(&self, job: &BackupJob) -> Result<(), PveError> {
        if job.id.is_empty() {
            return Err(PveError::Setup {
                message: "id: a backup job needs an id (without one PVE names it with a UUID nobody can find again)"
                    .into(),
            });
        }
        let mut params = job.to_params();
        params.push("id", job.id.clone());
        self.write::<Value>(Method::Post, "/cluster/backup", &params)
            .await
            .map(|_| ())
    }

    /// `PUT /cluster/backup/{id}` with the whole job, `delete` removing options.
    pub async fn update_backup_job(&self, job: &BackupJob, delete: &[&str]) -> Result<(), PveError> {
        let mut params = job.to_params();
        if !delete.is_empty() {
            params.push("delete", delete.join(","));
        }
        self.write::<Value>(Method::Put, &job_path(&job.id), &params)
            .await
            .map(|_| ())
    }

    pub async fn delete_backup_job(&self, id: &str) -> Result<(), PveError> {
        self.write::<Value>(Method::Delete, &job_path(id), &Params::new())
            .await
            .map(|_| ())
    }

    /// `GET /cluster/backup-info/not-backed-up`.
    pub async fn not_backed_up(&self) -> Result<Vec<UncoveredGuest>, PveError> {
        self.get("/cluster/backup-info/not-backed-up", &Params::new()).await
    }

    /// `POST /nodes/{node}/vzdump`: a backup now (`vmid`, `storage`, `mode`, … in `params`).
    pub async fn vzdump(&self, node: &str, params: &Params) -> Result<Upid, PveError> {
        let path = format!("/nodes/{}/vzdump", path_segment(node));
        match self.write::<Value>(Method::Post, &path, params).await? {
            Value::String(s) => Upid::parse(&s),
            other => Err(PveError::Decode {
                method: "POST",
                path,
                message: format!("expected a task ID (UPID), got {other}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_read_leniently_and_write_whole() {
        let j: BackupJob = serde_json::from_value(serde_json::json!({
            "id": "nightly", "type": "vzdump", "schedule": "21:00", "storage": "local", "all": 1,
            "exclude": "100,101", "prune-backups": {"keep-last": 7}, "next-run": "1796590800",
            "notes-template": "{{guestname}}", "performance": {"max-workers": 2}
        }))
        .unwrap();
        assert!(j.enabled && j.all);
        assert_eq!((j.exclude.clone(), j.next_run), (vec![100, 101], Some(1_796_590_800)));
        assert_eq!(j.options["notes-template"], "{{guestname}}");
        assert_eq!(j.options["performance"], "max-workers=2");
        let p = j.to_params();
        for (k, v) in [
            ("schedule", "21:00"),
            ("all", "1"),
            ("exclude", "100,101"),
            ("enabled", "1"),
            ("prune-backups", "keep-last=7"),
        ] {
            assert_eq!(p.get(k), Some(v), "{k}");
        }
        assert_eq!(p.get("id"), None);
    }
}
