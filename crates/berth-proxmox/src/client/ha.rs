//! HA (`/cluster/ha`): resources, node/resource-affinity rules (PVE 9) or groups (PVE 8), and
//! the manager's status. An HA resource's requested `state` is its guest's power state: PVE
//! turns start and stop of such a guest into HA requests (`hastart`/`hastop` tasks).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::PveError;
use super::http::{Method, PveClient};
use super::params::{Params, path_segment};
use super::types::{de_bool, de_string, de_u32};

/// One HA resource (`vm:100`, `ct:101`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
pub struct HaResource {
    #[serde(deserialize_with = "de_string", default)]
    pub sid: Option<String>,
    /// `started`, `stopped`, `enabled`, `disabled`, `ignored`.
    #[serde(deserialize_with = "de_string", default)]
    pub state: Option<String>,
    #[serde(deserialize_with = "de_u32", default)]
    pub max_restart: Option<u32>,
    #[serde(deserialize_with = "de_u32", default)]
    pub max_relocate: Option<u32>,
    /// PVE 8 only.
    #[serde(deserialize_with = "de_string", default)]
    pub group: Option<String>,
    #[serde(deserialize_with = "de_string", default)]
    pub comment: Option<String>,
    #[serde(deserialize_with = "de_string", default, skip_serializing)]
    pub digest: Option<String>,
}

impl HaResource {
    fn to_params(&self) -> Params {
        let mut p = Params::new()
            .opt_str("state", self.state.clone())
            .opt_str("group", self.group.clone())
            .opt_str("comment", self.comment.clone());
        if let Some(n) = self.max_restart {
            p = p.int("max_restart", n);
        }
        if let Some(n) = self.max_relocate {
            p = p.int("max_relocate", n);
        }
        p
    }
}

/// A PVE 9 rule: `node-affinity` (resources prefer or are bound to `nodes`) or
/// `resource-affinity` (resources kept together or apart).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
pub struct HaRule {
    #[serde(deserialize_with = "de_string", default)]
    pub rule: Option<String>,
    #[serde(rename = "type", deserialize_with = "de_string", default)]
    pub kind: Option<String>,
    /// `vm:100,ct:101`.
    #[serde(deserialize_with = "de_string", default)]
    pub resources: Option<String>,
    /// `pve1:2,pve2` (node-affinity).
    #[serde(deserialize_with = "de_string", default)]
    pub nodes: Option<String>,
    #[serde(deserialize_with = "de_bool", default)]
    pub strict: bool,
    /// `positive` or `negative` (resource-affinity).
    #[serde(deserialize_with = "de_string", default)]
    pub affinity: Option<String>,
    #[serde(deserialize_with = "de_bool", default)]
    pub disable: bool,
    #[serde(deserialize_with = "de_string", default)]
    pub comment: Option<String>,
    #[serde(deserialize_with = "de_string", default, skip_serializing)]
    pub digest: Option<String>,
}

impl HaRule {
    fn to_params(&self) -> Params {
        let mut p = Params::new()
            .opt_str("type", self.kind.clone())
            .opt_str("resources", self.resources.clone())
            .opt_str("nodes", self.nodes.clone())
            .opt_str("affinity", self.affinity.clone())
            .opt_str("comment", self.comment.clone());
        if self.kind.as_deref() == Some("node-affinity") {
            p = p.bool("strict", self.strict);
        }
        if self.disable {
            p = p.bool("disable", true);
        }
        p
    }
}

/// A PVE 8 group: nodes with priorities a resource may run on.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
pub struct HaGroup {
    #[serde(deserialize_with = "de_string", default)]
    pub group: Option<String>,
    #[serde(deserialize_with = "de_string", default)]
    pub nodes: Option<String>,
    #[serde(deserialize_with = "de_bool", default)]
    pub restricted: bool,
    #[serde(deserialize_with = "de_bool", default)]
    pub nofailback: bool,
    #[serde(deserialize_with = "de_string", default)]
    pub comment: Option<String>,
    #[serde(deserialize_with = "de_string", default, skip_serializing)]
    pub digest: Option<String>,
}

/// One line of `status/current`: quorum, manager, a node's LRM, or a resource.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HaStatus {
    #[serde(deserialize_with = "de_string", default)]
    pub id: Option<String>,
    #[serde(rename = "type", deserialize_with = "de_string", default)]
    pub kind: Option<String>,
    #[serde(deserialize_with = "de_string", default)]
    pub node: Option<String>,
    #[serde(deserialize_with = "de_string", default)]
    pub sid: Option<String>,
    #[serde(deserialize_with = "de_string", default)]
    pub state: Option<String>,
    #[serde(deserialize_with = "de_string", default)]
    pub request_state: Option<String>,
    #[serde(deserialize_with = "de_string", default)]
    pub status: Option<String>,
}

fn with_digest(mut p: Params, delete: &[&str], digest: Option<&str>) -> Params {
    if !delete.is_empty() {
        p.push("delete", delete.join(","));
    }
    if let Some(d) = digest {
        p.push("digest", d);
    }
    p
}

impl PveClient {
    async fn write_null(&self, method: Method, path: &str, params: &Params) -> Result<(), PveError> {
        self.write::<Value>(method, path, params).await.map(|_| ())
    }

    pub async fn ha_resources(&self) -> Result<Vec<HaResource>, PveError> {
        self.get("/cluster/ha/resources", &Params::new()).await
    }

    pub async fn ha_resource(&self, sid: &str) -> Result<HaResource, PveError> {
        self.get(&format!("/cluster/ha/resources/{}", path_segment(sid)), &Params::new())
            .await
    }

    /// Adding a guest to HA with the default state `started` starts it.
    pub async fn create_ha_resource(&self, sid: &str, r: &HaResource) -> Result<(), PveError> {
        let mut p = r.to_params();
        p.push("sid", sid);
        self.write_null(Method::Post, "/cluster/ha/resources", &p).await
    }

    pub async fn update_ha_resource(
        &self,
        sid: &str,
        r: &HaResource,
        delete: &[&str],
        digest: Option<&str>,
    ) -> Result<(), PveError> {
        let path = format!("/cluster/ha/resources/{}", path_segment(sid));
        self.write_null(Method::Put, &path, &with_digest(r.to_params(), delete, digest))
            .await
    }

    /// `purge` also takes the resource out of every rule (PVE's default).
    pub async fn delete_ha_resource(&self, sid: &str, purge: bool) -> Result<(), PveError> {
        let path = format!("/cluster/ha/resources/{}", path_segment(sid));
        self.write_null(Method::Delete, &path, &Params::new().bool("purge", purge))
            .await
    }

    pub async fn ha_rules(&self) -> Result<Vec<HaRule>, PveError> {
        self.get("/cluster/ha/rules", &Params::new()).await
    }

    pub async fn create_ha_rule(&self, id: &str, r: &HaRule) -> Result<(), PveError> {
        let mut p = r.to_params();
        p.push("rule", id);
        self.write_null(Method::Post, "/cluster/ha/rules", &p).await
    }

    pub async fn update_ha_rule(
        &self,
        id: &str,
        r: &HaRule,
        delete: &[&str],
        digest: Option<&str>,
    ) -> Result<(), PveError> {
        let path = format!("/cluster/ha/rules/{}", path_segment(id));
        self.write_null(Method::Put, &path, &with_digest(r.to_params(), delete, digest))
            .await
    }

    pub async fn delete_ha_rule(&self, id: &str) -> Result<(), PveError> {
        let path = format!("/cluster/ha/rules/{}", path_segment(id));
        self.write_null(Method::Delete, &path, &Params::new()).await
    }

    /// PVE 8; PVE 9 answers "ha groups have been migrated to rules".
    pub async fn ha_groups(&self) -> Result<Vec<HaGroup>, PveError> {
        self.get("/cluster/ha/groups", &Params::new()).await
    }

    pub async fn create_ha_group(&self, g: &HaGroup) -> Result<(), PveError> {
        let mut p = Params::new()
            .opt_str("group", g.group.clone())
            .opt_str("nodes", g.nodes.clone())
            .opt_str("comment", g.comment.clone());
        if g.restricted {
            p = p.bool("restricted", true);
        }
        if g.nofailback {
            p = p.bool("nofailback", true);
        }
        self.write_null(Method::Post, "/cluster/ha/groups", &p).await
    }

    /// `PUT /cluster/ha/groups/{group}` (PVE 8): its nodes and flags.
    pub async fn update_ha_group(&self, g: &HaGroup) -> Result<(), PveError> {
        let id = g.group.clone().unwrap_or_default();
        let mut p = Params::new()
            .opt_str("nodes", g.nodes.clone())
            .opt_str("comment", g.comment.clone());
        p = p.bool("restricted", g.restricted).bool("nofailback", g.nofailback);
        let path = format!("/cluster/ha/groups/{}", path_segment(&id));
        self.write_null(Method::Put, &path, &p).await
    }

    pub async fn delete_ha_group(&self, id: &str) -> Result<(), PveError> {
        let path = format!("/cluster/ha/groups/{}", path_segment(id));
        self.write_null(Method::Delete, &path, &Params::new()).await
    }

    pub async fn ha_status(&self) -> Result<Vec<HaStatus>, PveError> {
        self.get("/cluster/ha/status/current", &Params::new()).await
    }
}
