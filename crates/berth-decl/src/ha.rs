//! HA in a site file, on the guest it protects: `ha = { state = "started", nodes = ["pve1:2",
//! "pve2"] }` on a VM or a container. The resource `ha.vm:N` (`ha.ct:N`) carries its state and
//! restart limits; its nodes become a node-affinity rule `berth-vm-N` (`berth-ct-N`) on PVE 9 and a
//! group of that name on PVE 8, where groups still exist.

use std::collections::BTreeMap;

use berth_proxmox::client::ha::{HaGroup, HaResource, HaRule};
use berth_proxmox::client::{PveClient, PveError};

use crate::apply::{ApplyError, pve};
use crate::model::{Kind, Object};
use crate::plan::{Action, Change};

/// The rule or group Berth keeps a resource's nodes in.
pub(crate) fn placement_id(sid: &str) -> String {
    format!("berth-{}", sid.replace(':', "-"))
}

/// `pve2:1,pve1:2` → `pve1:2,pve2:1`.
pub(crate) fn nodes(list: &str) -> String {
    let mut v: Vec<&str> = list.split([',', ';', ' ']).filter(|s| !s.is_empty()).collect();
    v.sort_unstable();
    v.join(",")
}

/// The HA objects as the cluster has them (PVE 9: rules; PVE 8: groups).
pub(crate) async fn observe(c: &PveClient, pve_major: u32) -> Result<Vec<Object>, PveError> {
    let resources = c.ha_resources().await?;
    let placements: BTreeMap<String, String> = if pve_major >= 9 {
        c.ha_rules()
            .await?
            .into_iter()
            .filter(|r| r.kind.as_deref() == Some("node-affinity"))
            .flat_map(|r| {
                let n = nodes(r.nodes.as_deref().unwrap_or_default());
                let sids: Vec<String> = r.resources.unwrap_or_default().split(',').map(str::to_owned).collect();
                sids.into_iter().map(move |s| (s, n.clone()))
            })
            .collect()
    } else {
        let groups: BTreeMap<String, String> = c
            .ha_groups()
            .await?
            .into_iter()
            .filter_map(|g| Some((g.group?, nodes(g.nodes.as_deref().unwrap_or_default()))))
            .collect();
        resources
            .iter()
            .filter_map(|r| Some((r.sid.clone()?, groups.get(r.group.as_ref()?)?.clone())))
            .collect()
    };
    Ok(resources
        .into_iter()
        .filter_map(|r| {
            let sid = r.sid?;
            let mut o = Object::new(Kind::Ha, format!("ha.{sid}"));
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    o.fields.insert(k.to_owned(), v);
                }
            };
            put("state", r.state);
            put("max_restart", r.max_restart.map(|n| n.to_string()));
            put("max_relocate", r.max_relocate.map(|n| n.to_string()));
            put("comment", r.comment);
            put("nodes", placements.get(&sid).cloned());
            Some(o)
        })
        .collect())
}

fn resource(f: &BTreeMap<String, String>, group: Option<String>) -> HaResource {
    HaResource {
        sid: None,
        state: f.get("state").cloned(),
        max_restart: f.get("max_restart").and_then(|v| v.parse().ok()),
        max_relocate: f.get("max_relocate").and_then(|v| v.parse().ok()),
        group,
        comment: f.get("comment").cloned(),
        digest: None,
    }
}

/// Applies one HA change; `nine`: the cluster runs PVE 9 (rules) rather than 8 (groups).
pub(crate) async fn apply(c: &PveClient, ch: &Change, nine: bool) -> Result<(), ApplyError> {
    let sid = ch.addr.trim_start_matches("ha.");
    let pid = placement_id(sid);
    let want_nodes = ch.after.get("nodes").cloned();
    let had_nodes = ch.before.as_ref().and_then(|b| b.get("nodes")).is_some();
    match &ch.action {
        Action::Delete => {
            c.delete_ha_resource(sid, true).await.map_err(pve(&ch.addr, "delete"))?;
            if !nine && had_nodes {
                c.delete_ha_group(&pid).await.map_err(pve(&ch.addr, "delete group"))?;
            }
            Ok(())
        }
        Action::Create
        | Action::Update
        | Action::UpdateRestart { .. }
        | Action::Move { .. }
        | Action::Replace { .. } => {
            let creating = ch.action == Action::Create;
            // PVE 8: the group first (a resource names it); PVE 9: the rule after (it names the resource).
            if !nine && let Some(n) = &want_nodes {
                let g = HaGroup {
                    group: Some(pid.clone()),
                    nodes: Some(n.clone()),
                    ..HaGroup::default()
                };
                if had_nodes {
                    c.update_ha_group(&g).await.map_err(pve(&ch.addr, "update group"))?;
                } else {
                    c.create_ha_group(&g).await.map_err(pve(&ch.addr, "create group"))?;
                }
            }
            let group = (!nine).then(|| want_nodes.as_ref().map(|_| pid.clone())).flatten();
            let r = resource(&ch.after, group);
            if creating {
                c.create_ha_resource(sid, &r).await.map_err(pve(&ch.addr, "create"))?;
            } else {
                c.update_ha_resource(sid, &r, &[], None)
                    .await
                    .map_err(pve(&ch.addr, "update"))?;
            }
            if nine && let Some(n) = &want_nodes {
                let rule = HaRule {
                    kind: Some("node-affinity".into()),
                    resources: Some(sid.to_owned()),
                    nodes: Some(n.clone()),
                    ..HaRule::default()
                };
                if had_nodes {
                    c.update_ha_rule(&pid, &rule, &[], None)
                        .await
                        .map_err(pve(&ch.addr, "update rule"))?;
                } else {
                    c.create_ha_rule(&pid, &rule)
                        .await
                        .map_err(pve(&ch.addr, "create rule"))?;
                }
            }
            Ok(())
        }
        Action::Impossible { .. } => Ok(()),
    }
}
