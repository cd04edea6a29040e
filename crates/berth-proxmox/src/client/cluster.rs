//! The cluster Berth asserts but never changes: membership and quorum (`/cluster/status`),
//! corosync's node list (`/cluster/config/nodes`) and `datacenter.cfg` (`/cluster/options`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::PveError;
use super::http::PveClient;
use super::params::Params;
use super::types::{de_bool, de_string, de_u32, lenient_string};

/// One line of `/cluster/status`: the cluster itself or a node.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClusterMember {
    #[serde(rename = "type", default, deserialize_with = "de_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_u32")]
    pub nodeid: Option<u32>,
    #[serde(default, deserialize_with = "de_string")]
    pub ip: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    pub online: bool,
    #[serde(default, deserialize_with = "de_bool")]
    pub local: bool,
    /// The cluster line: quorum and member count.
    #[serde(default, deserialize_with = "de_bool")]
    pub quorate: bool,
    #[serde(default, deserialize_with = "de_u32")]
    pub nodes: Option<u32>,
}

/// One node of corosync's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CorosyncNode {
    #[serde(default, deserialize_with = "de_string")]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "de_u32")]
    pub nodeid: Option<u32>,
    #[serde(default, deserialize_with = "de_string")]
    pub ring0_addr: Option<String>,
}

/// `datacenter.cfg` as far as Berth reads it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClusterOptions {
    /// Prefix of generated MAC addresses (`BC:24:11`).
    pub mac_prefix: Option<String>,
    /// The range new VMIDs come from.
    pub next_id_lower: Option<u32>,
    pub next_id_upper: Option<u32>,
    /// Every other option, as text.
    pub options: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for ClusterOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = BTreeMap::<String, Value>::deserialize(d)?;
        let mac_prefix = m.remove("mac_prefix").as_ref().and_then(lenient_string);
        let next = m.remove("next-id");
        let bound = |k: &str| {
            next.as_ref()
                .and_then(|n| n.get(k))
                .and_then(lenient_string)
                .and_then(|s| s.parse().ok())
        };
        let (next_id_lower, next_id_upper) = (bound("lower"), bound("upper"));
        let options = m
            .into_iter()
            .map(|(k, v)| (k, lenient_string(&v).unwrap_or_else(|| v.to_string())))
            .collect();
        Ok(ClusterOptions {
            mac_prefix,
            next_id_lower,
            next_id_upper,
            options,
        })
    }
}

impl PveClient {
    pub async fn cluster_status(&self) -> Result<Vec<ClusterMember>, PveError> {
        self.get("/cluster/status", &Params::new()).await
    }

    pub async fn corosync_nodes(&self) -> Result<Vec<CorosyncNode>, PveError> {
        self.get("/cluster/config/nodes", &Params::new()).await
    }

    pub async fn cluster_options(&self) -> Result<ClusterOptions, PveError> {
        self.get("/cluster/options", &Params::new()).await
    }
}
