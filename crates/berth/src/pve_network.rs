//! `berth pve network`: a node's interfaces as tables and detail, with staged edits shown as
//! the diff PVE keeps until the network is reloaded.

use berth_proxmox::client::network::{NetworkInterface, NodeNetwork};

fn or_dash(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("-")
}

fn state(i: &NetworkInterface) -> &'static str {
    if i.active { "active" } else { "inactive" }
}

fn ports(i: &NetworkInterface) -> String {
    let all: Vec<&str> = i.bridge_ports.iter().chain(&i.slaves).map(String::as_str).collect();
    if all.is_empty() { "-".into() } else { all.join(" ") }
}

pub fn table(net: &NodeNetwork) -> String {
    let row = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str, g: &str| {
        format!("{a:<12} {b:<8} {c:<8} {d:<20} {e:<15} {f:<12} {g}")
    };
    let mut lines = vec![row("IFACE", "TYPE", "METHOD", "ADDRESS", "GATEWAY", "PORTS", "STATE")];
    lines.extend(net.interfaces.iter().map(|i| {
        row(
            &i.iface,
            &i.kind,
            or_dash(i.method.as_deref()),
            or_dash(i.cidr.as_deref()),
            or_dash(i.gateway.as_deref()),
            &ports(i),
            state(i),
        )
    }));
    if net.interfaces.is_empty() {
        lines = vec!["no interfaces".into()];
    }
    if let Some(diff) = &net.changes {
        lines.push(String::new());
        lines.push("staged, not applied until the node's network is reloaded:".into());
        lines.extend(diff.lines().map(str::to_owned));
    }
    lines.join("\n")
}

pub fn detail(i: &NetworkInterface) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut lines = vec![
        ("iface", i.iface.clone()),
        ("type", i.kind.clone()),
        ("method", or_dash(i.method.as_deref()).into()),
        ("address", or_dash(i.cidr.as_deref()).into()),
        ("gateway", or_dash(i.gateway.as_deref()).into()),
    ];
    if i.cidr6.is_some() || i.gateway6.is_some() {
        lines.push(("address6", or_dash(i.cidr6.as_deref()).into()));
        lines.push(("gateway6", or_dash(i.gateway6.as_deref()).into()));
    }
    lines.push(("ports", ports(i)));
    if i.kind == "bridge" {
        lines.push(("vlan aware", yes(i.bridge_vlan_aware)));
        if let Some(v) = &i.bridge_vids {
            lines.push(("vlans", v.clone()));
        }
    }
    if let Some(m) = &i.bond_mode {
        lines.push(("bond mode", m.clone()));
    }
    if let Some(id) = i.vlan_id {
        lines.push(("vlan id", id.to_string()));
    }
    if let Some(r) = &i.vlan_raw_device {
        lines.push(("vlan on", r.clone()));
    }
    if let Some(m) = i.mtu {
        lines.push(("mtu", m.to_string()));
    }
    lines.push(("autostart", yes(i.autostart)));
    lines.push(("state", state(i).into()));
    if let Some(c) = &i.comments {
        lines.push(("comments", c.clone()));
    }
    let mut out: Vec<String> = lines.into_iter().map(|(k, v)| format!("{k:<12} {v}")).collect();
    out.extend(i.options.iter().map(|(k, v)| format!("{k:<12} {v}")));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: the interfaces with a staged change, and one bridge.
    #[test]
    fn interfaces_read_as_a_table_and_a_detail() {
        let i: Vec<NetworkInterface> = serde_json::from_value(serde_json::json!([
            {"iface": "eno1", "type": "eth", "method": "manual", "exists": 1, "active": 1},
            {"iface": "vmbr0", "type": "bridge", "method": "static", "cidr": "10.0.0.11/24",
             "gateway": "10.0.0.1", "bridge_ports": "eno1", "autostart": 1, "active": 1,
             "bridge_vlan_aware": 1, "bridge_vids": "2-4094"}
        ]))
        .unwrap();
        let net = NodeNetwork {
            interfaces: i.clone(),
            changes: Some("--- /etc/network/interfaces\n+++ /etc/network/interfaces.new\n+\tmtu 9000".into()),
        };
        assert_eq!(
            table(&net),
            "\
IFACE        TYPE     METHOD   ADDRESS              GATEWAY         PORTS        STATE
eno1         eth      manual   -                    -               -            active
vmbr0        bridge   static   10.0.0.11/24         10.0.0.1        eno1         active

staged, not applied until the node's network is reloaded:
--- /etc/network/interfaces
+++ /etc/network/interfaces.new
+\tmtu 9000"
        );
        assert_eq!(
            detail(&i[1]),
            "\
iface        vmbr0
type         bridge
method       static
address      10.0.0.11/24
gateway      10.0.0.1
ports        eno1
vlan aware   yes
vlans        2-4094
autostart    yes
state        active"
        );
    }
}
