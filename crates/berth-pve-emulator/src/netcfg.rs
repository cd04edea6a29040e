//! A node's network configuration as PVE keeps it: `/etc/network/interfaces` (what runs) and
//! `interfaces.new` (edits staged by the API until a reload applies them, or a revert drops
//! them), rendered in ifupdown2's syntax so that the staged `changes` read as a diff.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// One interface stanza: PVE's field names (`type`, `method`, `address`, `bridge_ports`, …) to
/// their text; `families` comma-joined.
pub(crate) type Iface = BTreeMap<String, String>;

/// Fields the API returns as integers.
const INTEGER: &[&str] = &["autostart", "bridge_vlan_aware", "mtu", "vlan-id", "priority"];

#[derive(Clone, Default)]
pub(crate) struct NodeNetwork {
    /// Applied: what `ifreload` last brought up.
    pub running: BTreeMap<String, Iface>,
    /// `interfaces.new`, when edits are staged.
    pub pending: Option<BTreeMap<String, Iface>>,
    /// Network cards the node has.
    pub physical: BTreeSet<String>,
}

impl NodeNetwork {
    /// A freshly installed node: two NICs, `vmbr0` on the first with the node's address.
    pub fn installed(index: u32) -> NodeNetwork {
        let rec =
            |pairs: &[(&str, &str)]| -> Iface { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let eth = rec(&[
            ("type", "eth"),
            ("method", "manual"),
            ("method6", "manual"),
            ("families", "inet"),
        ]);
        let address = format!("10.0.0.{}", 10 + index);
        let bridge = rec(&[
            ("type", "bridge"),
            ("method", "static"),
            ("method6", "manual"),
            ("families", "inet"),
            ("autostart", "1"),
            ("address", &address),
            ("netmask", "24"),
            ("gateway", "10.0.0.1"),
            ("bridge_ports", "eno1"),
            ("bridge_stp", "off"),
            ("bridge_fd", "0"),
        ]);
        NodeNetwork {
            running: BTreeMap::from([
                ("eno1".to_string(), eth.clone()),
                ("eno2".to_string(), eth),
                ("vmbr0".to_string(), bridge),
            ]),
            pending: None,
            physical: BTreeSet::from(["eno1".to_string(), "eno2".to_string()]),
        }
    }

    /// What the API shows: the staged file when there is one.
    pub fn view(&self) -> &BTreeMap<String, Iface> {
        self.pending.as_ref().unwrap_or(&self.running)
    }

    /// The staged file, started from the running one on the first edit.
    pub fn staged(&mut self) -> &mut BTreeMap<String, Iface> {
        self.pending.get_or_insert_with(|| self.running.clone())
    }

    /// One interface as the API returns it.
    pub fn json(&self, name: &str, rec: &Iface) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("iface".into(), json!(name));
        for (k, v) in rec {
            let value = match k.as_str() {
                "families" => json!(v.split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>()),
                k if INTEGER.contains(&k) => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(v)),
                _ => json!(v),
            };
            m.insert(k.clone(), value);
        }
        if let (Some(a), Some(n)) = (rec.get("address"), rec.get("netmask")) {
            m.insert("cidr".into(), json!(format!("{a}/{n}")));
        }
        if let (Some(a), Some(n)) = (rec.get("address6"), rec.get("netmask6")) {
            m.insert("cidr6".into(), json!(format!("{a}/{n}")));
        }
        if self.physical.contains(name) {
            m.insert("exists".into(), json!(1));
        }
        // Up: applied, and for a NIC, carrying a bridge or bond.
        let used = || self.running.values().any(|r| ports(r).any(|p| p == name));
        if self.running.contains_key(name) && (rec.get("type").is_some_and(|t| t != "eth") || used()) {
            m.insert("active".into(), json!(1));
        }
        Value::Object(m)
    }

    /// `changes`: the staged file against the running one, as `diff -u` shows it.
    pub fn changes(&self) -> Option<String> {
        let pending = self.pending.as_ref()?;
        let (old, new) = (render(&self.running), render(pending));
        if old == new {
            return None;
        }
        Some(unified_diff(&old, &new))
    }
}

/// The interfaces a stanza enslaves (bridge ports, bond slaves).
pub(crate) fn ports(rec: &Iface) -> impl Iterator<Item = &str> {
    ["bridge_ports", "slaves"]
        .into_iter()
        .filter_map(|k| rec.get(k))
        .flat_map(|v| v.split([' ', ',', ';', '\0']).filter(|p| !p.is_empty()))
}

fn order(rec: &Iface) -> u8 {
    match rec.get("type").map(String::as_str) {
        Some("eth") => 0,
        Some("bond") => 1,
        Some("vlan") => 2,
        Some("bridge") => 3,
        _ => 4,
    }
}

/// The file in ifupdown2's syntax (the parts the emulator models).
pub(crate) fn render(ifaces: &BTreeMap<String, Iface>) -> String {
    let mut names: Vec<&String> = ifaces.keys().collect();
    names.sort_by_key(|n| (order(&ifaces[*n]), n.to_string()));
    let mut out = String::from("auto lo\niface lo inet loopback\n");
    for name in names {
        let rec = &ifaces[name];
        out.push('\n');
        if rec.get("autostart").is_some_and(|v| v == "1") {
            out.push_str(&format!("auto {name}\n"));
        }
        let method = rec.get("method").map_or("manual", String::as_str);
        out.push_str(&format!("iface {name} inet {method}\n"));
        if method == "static"
            && let (Some(a), Some(n)) = (rec.get("address"), rec.get("netmask"))
        {
            out.push_str(&format!("\taddress {a}/{n}\n"));
        }
        for (k, file_key) in [
            ("gateway", "gateway"),
            ("bridge_ports", "bridge-ports"),
            ("bridge_stp", "bridge-stp"),
            ("bridge_fd", "bridge-fd"),
            ("bridge_vlan_aware", "bridge-vlan-aware"),
            ("bridge_vids", "bridge-vids"),
            ("slaves", "bond-slaves"),
            ("bond_mode", "bond-mode"),
            ("vlan-raw-device", "vlan-raw-device"),
            ("vlan-id", "vlan-id"),
            ("mtu", "mtu"),
        ] {
            if let Some(v) = rec.get(k) {
                let v = match (k, v.as_str()) {
                    ("bridge_vlan_aware", "1") => "yes",
                    ("bridge_vlan_aware", _) => continue,
                    (_, v) => v,
                };
                out.push_str(&format!("\t{file_key} {v}\n"));
            }
        }
        if rec.get("method6").is_some_and(|m| m == "static")
            && let (Some(a), Some(n)) = (rec.get("address6"), rec.get("netmask6"))
        {
            out.push_str(&format!("\niface {name} inet6 static\n\taddress {a}/{n}\n"));
            if let Some(g) = rec.get("gateway6") {
                out.push_str(&format!("\tgateway {g}\n"));
            }
        }
        if let Some(c) = rec.get("comments") {
            for line in c.lines() {
                out.push_str(&format!("#{line}\n"));
            }
        }
    }
    out
}

/// A one-hunk unified diff (longest common subsequence of lines).
fn unified_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!(
        "--- /etc/network/interfaces\n+++ /etc/network/interfaces.new\n@@ -1,{} +1,{} @@\n",
        a.len(),
        b.len()
    );
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!(" {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_edits_read_as_a_diff_of_the_file() {
        let mut net = NodeNetwork::installed(1);
        assert!(net.changes().is_none());
        net.staged()
            .get_mut("vmbr0")
            .unwrap()
            .insert("mtu".into(), "9000".into());
        let diff = net.changes().unwrap();
        assert!(
            diff.starts_with("--- /etc/network/interfaces\n+++ /etc/network/interfaces.new\n@@"),
            "{diff}"
        );
        assert!(
            diff.contains("+\tmtu 9000\n") && diff.contains(" \tbridge-ports eno1\n"),
            "{diff}"
        );
        assert!(
            !diff.lines().any(|l| l.starts_with('-') && !l.starts_with("---")),
            "{diff}"
        );
    }
}
