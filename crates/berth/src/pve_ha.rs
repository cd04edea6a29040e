//! `berth pve ha`: HA resources with the state each asks for and has, and the rules (PVE 9) or
//! groups (PVE 8) that place them.

use berth_proxmox::client::ha::{HaGroup, HaResource, HaRule, HaStatus};
use serde::Serialize;

/// `pve ha list`: resources, placement (rules or groups, whichever the cluster has) and status.
#[derive(Serialize)]
pub struct HaOverview {
    pub resources: Vec<HaResource>,
    pub rules: Option<Vec<HaRule>>,
    pub groups: Option<Vec<HaGroup>>,
    pub status: Vec<HaStatus>,
}

fn dash(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("-")
}

fn running_state<'a>(status: &'a [HaStatus], sid: &str) -> (&'a str, &'a str) {
    status
        .iter()
        .find(|s| s.sid.as_deref() == Some(sid))
        .map_or(("-", "-"), |s| (dash(s.state.as_deref()), dash(s.node.as_deref())))
}

pub fn table(o: &HaOverview) -> String {
    let mut lines = Vec::new();
    if o.resources.is_empty() {
        lines.push("no HA resources".to_owned());
    } else {
        let row = |a: &str, b: &str, c: &str, d: &str, e: &str| format!("{a:<12} {b:<10} {c:<10} {d:<8} {e}");
        lines.push(row("RESOURCE", "REQUESTED", "STATE", "NODE", "GROUP"));
        for r in &o.resources {
            let sid = dash(r.sid.as_deref());
            let (state, node) = running_state(&o.status, sid);
            lines.push(
                row(sid, dash(r.state.as_deref()), state, node, dash(r.group.as_deref()))
                    .trim_end()
                    .to_owned(),
            );
        }
    }
    if let Some(rules) = &o.rules {
        lines.push(String::new());
        if rules.is_empty() {
            lines.push("no HA rules".into());
        }
        for r in rules {
            let how = match r.kind.as_deref() {
                Some("node-affinity") => format!(
                    "on {}{}",
                    dash(r.nodes.as_deref()),
                    if r.strict { " (strict)" } else { "" }
                ),
                _ => format!("{} affinity", dash(r.affinity.as_deref())),
            };
            let off = if r.disable { ", disabled" } else { "" };
            lines.push(format!(
                "rule {}: {} {how}{off}",
                dash(r.rule.as_deref()),
                dash(r.resources.as_deref())
            ));
        }
    }
    if let Some(groups) = &o.groups {
        lines.push(String::new());
        if groups.is_empty() {
            lines.push("no HA groups".into());
        }
        for g in groups {
            let restricted = if g.restricted { ", restricted" } else { "" };
            lines.push(format!(
                "group {}: {}{restricted}",
                dash(g.group.as_deref()),
                dash(g.nodes.as_deref())
            ));
        }
    }
    lines.join("\n")
}

pub fn detail(r: &HaResource) -> String {
    let mut lines = vec![
        format!("resource     {}", dash(r.sid.as_deref())),
        format!("requested    {}", dash(r.state.as_deref())),
        format!("max restart  {}", r.max_restart.map_or("1".into(), |n| n.to_string())),
        format!("max relocate {}", r.max_relocate.map_or("1".into(), |n| n.to_string())),
    ];
    if let Some(g) = &r.group {
        lines.push(format!("group        {g}"));
    }
    if let Some(c) = &r.comment {
        lines.push(format!("comment      {c}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: resources with their requested and actual state, and the rules.
    #[test]
    fn ha_reads_as_a_table() {
        let o = HaOverview {
            resources: serde_json::from_value(serde_json::json!([
                {"sid": "vm:101", "state": "started"}, {"sid": "ct:102", "state": "stopped"}
            ]))
            .unwrap(),
            rules: Some(
                serde_json::from_value(serde_json::json!([
                    {"rule": "db-on-pve1", "type": "node-affinity", "resources": "vm:101", "nodes": "pve1:2,pve2", "strict": 1},
                    {"rule": "apart", "type": "resource-affinity", "resources": "vm:101,ct:102", "affinity": "negative"}
                ]))
                .unwrap(),
            ),
            groups: None,
            status: serde_json::from_value(serde_json::json!([
                {"id": "service:vm:101", "type": "service", "sid": "vm:101", "node": "pve1", "state": "started"}
            ]))
            .unwrap(),
        };
        assert_eq!(
            table(&o),
            "\
RESOURCE     REQUESTED  STATE      NODE     GROUP
vm:101       started    started    pve1     -
ct:102       stopped    -          -        -

rule db-on-pve1: vm:101 on pve1:2,pve2 (strict)
rule apart: vm:101,ct:102 negative affinity"
        );
        assert_eq!(
            detail(&o.resources[0]),
            "resource     vm:101\nrequested    started\nmax restart  1\nmax relocate 1"
        );
    }
}
