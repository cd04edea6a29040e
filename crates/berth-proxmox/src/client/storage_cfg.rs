//! The cluster's storage definitions (`/storage`, `/storage/{storage}`): typed reads, and writes
//! that carry the file's `digest` so that a change made meanwhile by someone else is refused.

use std::collections::BTreeMap;

use berth_core::Secret;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::error::PveError;
use super::http::{Method, PveClient};
use super::params::{Params, path_segment};
use super::propstring::PruneBackups;
use super::types::{lenient_bool, lenient_string};

/// One `storage.cfg` section as `GET /storage[/{storage}]` returns it (secrets never appear).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageConfig {
    pub storage: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: Vec<String>,
    /// The nodes it is restricted to; empty means every node.
    pub nodes: Vec<String>,
    pub shared: bool,
    pub disable: bool,
    #[serde(rename = "prune-backups", skip_serializing_if = "Option::is_none")]
    pub prune_backups: Option<PruneBackups>,
    /// Every other option (`path`, `server`, `export`, `vgname`, …) as text.
    pub options: BTreeMap<String, String>,
    /// Of the whole file: pass it back on an update to refuse a concurrent change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

fn list(v: Option<Value>) -> Vec<String> {
    v.as_ref()
        .and_then(lenient_string)
        .map(|s| {
            s.split([',', ';', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl<'de> Deserialize<'de> for StorageConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = BTreeMap::<String, Value>::deserialize(d)?;
        let mut text = |k: &str| m.remove(k).as_ref().and_then(lenient_string);
        let storage = text("storage").ok_or_else(|| serde::de::Error::missing_field("storage"))?;
        let kind = text("type").ok_or_else(|| serde::de::Error::missing_field("type"))?;
        let digest = text("digest");
        let raw_prune = text("prune-backups");
        let mut options = BTreeMap::new();
        // A retention PVE writes but this client cannot read stays visible as text.
        let prune_backups = raw_prune.and_then(|p| match PruneBackups::parse(&p) {
            Ok(v) => Some(v),
            Err(_) => {
                options.insert("prune-backups".to_owned(), p);
                None
            }
        });
        let content = list(m.remove("content"));
        let nodes = list(m.remove("nodes"));
        let shared = m.remove("shared").as_ref().is_some_and(lenient_bool);
        let disable = m.remove("disable").as_ref().is_some_and(lenient_bool);
        for (k, v) in m {
            if let Some(s) = lenient_string(&v) {
                options.insert(k, s);
            }
        }
        Ok(StorageConfig {
            storage,
            kind,
            content,
            nodes,
            shared,
            disable,
            prune_backups,
            options,
            digest,
        })
    }
}

/// What `POST /storage` answers: the id and type, and an encryption key PVE generated (for a
/// `pbs` storage created with `encryption-key=autogen`), which is shown to nobody but the caller.
#[derive(Debug, Clone)]
pub struct StorageCreated {
    pub storage: String,
    pub kind: String,
    pub encryption_key: Option<Secret>,
}

#[derive(Deserialize)]
struct CreatedWire {
    storage: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: Option<BTreeMap<String, Value>>,
}

impl PveClient {
    /// `GET /storage[?type=]`: every definition the token may audit.
    pub async fn storage_configs(&self, kind: Option<&str>) -> Result<Vec<StorageConfig>, PveError> {
        self.get("/storage", &Params::new().opt_str("type", kind)).await
    }

    /// `GET /storage/{storage}` (needs `Datastore.Allocate`).
    pub async fn storage_config(&self, storage: &str) -> Result<StorageConfig, PveError> {
        self.get(&format!("/storage/{}", path_segment(storage)), &Params::new())
            .await
    }

    /// `POST /storage`: `options` are the type's own (`path`, `server`, `content`, …) and may
    /// hold write-only secrets (`password`), which the client never logs.
    pub async fn create_storage(
        &self,
        storage: &str,
        kind: &str,
        options: &Params,
    ) -> Result<StorageCreated, PveError> {
        let mut params = Params::new().str("storage", storage).str("type", kind);
        for (k, v) in options.pairs() {
            params.push(k, v.clone());
        }
        let wire: CreatedWire = self.write(Method::Post, "/storage", &params).await?;
        let encryption_key = wire
            .config
            .and_then(|mut c| c.remove("encryption-key"))
            .as_ref()
            .and_then(lenient_string)
            .map(Secret::new);
        Ok(StorageCreated {
            storage: wire.storage,
            kind: wire.kind,
            encryption_key,
        })
    }

    /// `PUT /storage/{storage}`: sets `options`, removes `delete`; refused when `digest` is given
    /// and the file changed since it was read.
    pub async fn update_storage(
        &self,
        storage: &str,
        options: &Params,
        delete: &[&str],
        digest: Option<&str>,
    ) -> Result<(), PveError> {
        let mut params = options.clone();
        if !delete.is_empty() {
            params.push("delete", delete.join(","));
        }
        if let Some(d) = digest {
            params.push("digest", d);
        }
        self.write::<Value>(Method::Put, &format!("/storage/{}", path_segment(storage)), &params)
            .await
            .map(|_| ())
    }

    /// `DELETE /storage/{storage}`: the definition only; the data on it stays.
    pub async fn delete_storage(&self, storage: &str) -> Result<(), PveError> {
        self.write::<Value>(
            Method::Delete,
            &format!("/storage/{}", path_segment(storage)),
            &Params::new(),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_configs_read_leniently() {
        let c: StorageConfig = serde_json::from_value(serde_json::json!({
            "storage": "backup", "type": "nfs", "content": "backup,iso", "nodes": "pve1,pve2",
            "disable": "1", "prune-backups": "keep-last=3", "server": "10.0.0.5", "export": "/srv",
            "path": "/mnt/pve/backup", "digest": "abc", "options": "vers=4.2"
        }))
        .unwrap();
        assert_eq!(c.content, ["backup", "iso"]);
        assert_eq!(c.nodes, ["pve1", "pve2"]);
        assert!(c.disable && !c.shared);
        assert_eq!(c.prune_backups.unwrap().keep_last, Some(3));
        assert_eq!(c.options["server"], "10.0.0.5");
        assert_eq!(c.options["options"], "vers=4.2");
        assert_eq!(c.digest.as_deref(), Some("abc"));
        // A retention this client cannot parse is kept as text, not dropped.
        let odd: StorageConfig = serde_json::from_value(serde_json::json!({
            "storage": "x", "type": "dir", "prune-backups": "keep-fortnightly=2"
        }))
        .unwrap();
        assert_eq!(odd.options["prune-backups"], "keep-fortnightly=2");
    }
}
