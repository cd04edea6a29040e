//! A node's network interfaces (`/nodes/{node}/network`): typed reads with the staged `changes`,
//! and writes that always carry the whole interface. PVE recomputes `method` from each call's
//! own parameters, so a partial update would silently turn a static bridge to `manual`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::error::PveError;
use super::http::{Method, PveClient, decode};
use super::params::{Params, path_segment};
use super::task::Upid;
use super::types::{lenient_bool, lenient_string, lenient_u64};

/// One interface stanza as PVE shows it (the staged view when edits wait).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NetworkInterface {
    pub iface: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `static`, `manual`, `dhcp`, …
    pub method: Option<String>,
    /// `10.0.0.11/24`.
    pub cidr: Option<String>,
    pub gateway: Option<String>,
    pub cidr6: Option<String>,
    pub gateway6: Option<String>,
    pub bridge_ports: Vec<String>,
    pub bridge_vlan_aware: bool,
    /// `2-4094` or `10 20 30-40`.
    pub bridge_vids: Option<String>,
    pub slaves: Vec<String>,
    pub bond_mode: Option<String>,
    pub vlan_id: Option<u32>,
    pub vlan_raw_device: Option<String>,
    pub autostart: bool,
    pub mtu: Option<u32>,
    pub comments: Option<String>,
    /// Up now (applied and carrying traffic).
    pub active: bool,
    /// A network card the node has.
    pub exists: bool,
    /// Every other field, as text.
    pub options: BTreeMap<String, String>,
}

fn words(v: Option<Value>) -> Vec<String> {
    v.as_ref()
        .and_then(lenient_string)
        .map(|s| {
            s.split([' ', ',', ';'])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl<'de> Deserialize<'de> for NetworkInterface {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = BTreeMap::<String, Value>::deserialize(d)?;
        let mut text = |k: &str| m.remove(k).as_ref().and_then(lenient_string);
        let iface = text("iface").unwrap_or_default();
        let kind = text("type").unwrap_or_else(|| "unknown".into());
        let (method, gateway, gateway6, bridge_vids) =
            (text("method"), text("gateway"), text("gateway6"), text("bridge_vids"));
        let (bond_mode, vlan_raw_device, comments) = (text("bond_mode"), text("vlan-raw-device"), text("comments"));
        let (address, netmask, cidr) = (text("address"), text("netmask"), text("cidr"));
        let (address6, netmask6, cidr6) = (text("address6"), text("netmask6"), text("cidr6"));
        let join =
            |c: Option<String>, a: Option<String>, n: Option<String>| c.or_else(|| Some(format!("{}/{}", a?, n?)));
        let mut num = |k: &str| {
            m.remove(k)
                .as_ref()
                .and_then(lenient_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let (vlan_id, mtu) = (num("vlan-id"), num("mtu"));
        let mut flag = |k: &str| m.remove(k).as_ref().is_some_and(lenient_bool);
        let (bridge_vlan_aware, autostart, active, exists) = (
            flag("bridge_vlan_aware"),
            flag("autostart"),
            flag("active"),
            flag("exists"),
        );
        let bridge_ports = words(m.remove("bridge_ports"));
        let slaves = words(m.remove("slaves"));
        let options = m
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::Array(items) => Some((k, items.iter().filter_map(lenient_string).collect::<Vec<_>>().join(","))),
                v => lenient_string(&v).map(|s| (k, s)),
            })
            .collect();
        Ok(NetworkInterface {
            iface,
            kind,
            method,
            cidr: join(cidr, address, netmask),
            gateway,
            cidr6: join(cidr6, address6, netmask6),
            gateway6,
            bridge_ports,
            bridge_vlan_aware,
            bridge_vids,
            slaves,
            bond_mode,
            vlan_id,
            vlan_raw_device,
            autostart,
            mtu,
            comments,
            active,
            exists,
            options,
        })
    }
}

/// A node's interfaces and the staged edits not yet applied (`diff -u` of the two files).
#[derive(Debug, Clone, Serialize)]
pub struct NodeNetwork {
    pub interfaces: Vec<NetworkInterface>,
    pub changes: Option<String>,
}

/// A bad interface, before anything is sent: the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InterfaceError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> InterfaceError {
    InterfaceError {
        field,
        message: message.into(),
    }
}

fn parse_cidr4(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, n) = s.split_once('/')?;
    let n: u8 = n.parse().ok().filter(|n| *n <= 32)?;
    Some((a.parse().ok()?, n))
}

impl NetworkInterface {
    /// Checks what PVE would accept but the node could not bring up: an address that is not a
    /// CIDR, a gateway outside it, ports or a VLAN parent that are not interfaces of the node.
    pub fn check(&self, node: &[NetworkInterface]) -> Result<(), InterfaceError> {
        let cidr = match &self.cidr {
            Some(c) => Some(parse_cidr4(c).ok_or_else(|| {
                bad(
                    "cidr",
                    format!("'{c}' is not an IPv4 address with a prefix length, like 10.0.0.2/24"),
                )
            })?),
            None => None,
        };
        if let Some(g) = &self.gateway {
            let gw: Ipv4Addr = g
                .parse()
                .map_err(|_| bad("gateway", format!("'{g}' is not an IPv4 address")))?;
            let Some((addr, len)) = cidr else {
                return Err(bad("gateway", "a gateway needs the interface's own address (cidr)"));
            };
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            // A /32 with an on-link gateway is a common hosted-server setup.
            if len < 32 && u32::from(gw) & mask != u32::from(addr) & mask {
                return Err(bad("gateway", format!("{g} is outside {addr}/{len}")));
            }
        }
        // A port is an interface of the node, or a VLAN of one (`eno1.20`).
        let known = |p: &str| {
            let base = p
                .rsplit_once('.')
                .filter(|(_, v)| v.parse::<u16>().is_ok())
                .map_or(p, |(b, _)| b);
            node.iter().any(|i| i.iface == p || i.iface == base)
        };
        for (field, list) in [("bridge_ports", &self.bridge_ports), ("slaves", &self.slaves)] {
            if let Some(p) = list.iter().find(|p| !known(p)) {
                return Err(bad(field, format!("'{p}' is not an interface of this node")));
            }
        }
        if let Some(raw) = self.vlan_raw_device.as_deref().filter(|r| !known(r)) {
            return Err(bad(
                "vlan-raw-device",
                format!("'{raw}' is not an interface of this node"),
            ));
        }
        Ok(())
    }

    /// The whole interface as create/update parameters (never only the changed fields).
    pub fn to_params(&self) -> Params {
        let mut p = Params::new().str("type", self.kind.clone());
        let opt = |p: Params, k: &str, v: &Option<String>| p.opt_str(k, v.clone());
        p = opt(p, "cidr", &self.cidr);
        p = opt(p, "gateway", &self.gateway);
        p = opt(p, "cidr6", &self.cidr6);
        p = opt(p, "gateway6", &self.gateway6);
        if !self.bridge_ports.is_empty() {
            p = p.str("bridge_ports", self.bridge_ports.join(" "));
        }
        if self.kind == "bridge" {
            p = p.bool("bridge_vlan_aware", self.bridge_vlan_aware);
        }
        p = opt(p, "bridge_vids", &self.bridge_vids);
        if !self.slaves.is_empty() {
            p = p.str("slaves", self.slaves.join(" "));
        }
        p = opt(p, "bond_mode", &self.bond_mode);
        if let Some(id) = self.vlan_id {
            p = p.int("vlan-id", id);
        }
        p = opt(p, "vlan-raw-device", &self.vlan_raw_device);
        if let Some(m) = self.mtu {
            p = p.int("mtu", m);
        }
        p = opt(p, "comments", &self.comments);
        for (k, v) in self
            .options
            .iter()
            .filter(|(k, _)| WRITABLE_EXTRAS.contains(&k.as_str()))
        {
            // Port lists go into the interfaces file as they are sent; OVS reads them by space.
            let v = match k.as_str() {
                "ovs_ports" | "ovs_bonds" => v.replace(',', " "),
                _ => v.clone(),
            };
            p = p.str(k, v);
        }
        p.bool("autostart", self.autostart)
    }
}

/// Options of PVE's network create/update calls that have no field of their own here: sent from
/// `options` (the rest of `options`, read-only values a GET returns, never is).
const WRITABLE_EXTRAS: &[&str] = &[
    "bond-primary",
    "bond_xmit_hash_policy",
    "comments6",
    "ovs_bonds",
    "ovs_bridge",
    "ovs_options",
    "ovs_ports",
    "ovs_tag",
];

fn net_path(node: &str) -> String {
    format!("/nodes/{}/network", path_segment(node))
}

impl PveClient {
    /// `GET /nodes/{node}/network[?type=]`: the staged view and its `changes`.
    pub async fn network(&self, node: &str, kind: Option<&str>) -> Result<NodeNetwork, PveError> {
        let path = net_path(node);
        let env = self
            .request(Method::Get, &path, &Params::new().opt_str("type", kind), true)
            .await?;
        Ok(NodeNetwork {
            interfaces: decode(Method::Get, &path, env.data)?,
            changes: env.changes,
        })
    }

    /// `GET /nodes/{node}/network/{iface}`.
    pub async fn network_interface(&self, node: &str, iface: &str) -> Result<NetworkInterface, PveError> {
        let mut i: NetworkInterface = self
            .get(&format!("{}/{}", net_path(node), path_segment(iface)), &Params::new())
            .await?;
        i.iface = iface.to_owned();
        Ok(i)
    }

    /// `POST /nodes/{node}/network`: staged until [`PveClient::reload_network`].
    pub async fn create_interface(&self, node: &str, iface: &NetworkInterface) -> Result<(), PveError> {
        let mut params = iface.to_params();
        params.push("iface", iface.iface.clone());
        self.write::<Value>(Method::Post, &net_path(node), &params)
            .await
            .map(|_| ())
    }

    /// `PUT /nodes/{node}/network/{iface}` with the whole interface, `delete` removing fields.
    pub async fn update_interface(
        &self,
        node: &str,
        iface: &NetworkInterface,
        delete: &[&str],
    ) -> Result<(), PveError> {
        let mut params = iface.to_params();
        if !delete.is_empty() {
            params.push("delete", delete.join(","));
        }
        let path = format!("{}/{}", net_path(node), path_segment(&iface.iface));
        self.write::<Value>(Method::Put, &path, &params).await.map(|_| ())
    }

    /// `DELETE /nodes/{node}/network/{iface}` (staged).
    pub async fn delete_interface(&self, node: &str, iface: &str) -> Result<(), PveError> {
        let path = format!("{}/{}", net_path(node), path_segment(iface));
        self.write::<Value>(Method::Delete, &path, &Params::new())
            .await
            .map(|_| ())
    }

    /// `PUT /nodes/{node}/network`: applies everyone's staged edits (a `srvreload` task).
    pub async fn reload_network(&self, node: &str) -> Result<Upid, PveError> {
        let v: Value = self.write(Method::Put, &net_path(node), &Params::new()).await?;
        match v {
            Value::String(s) => Upid::parse(&s),
            other => Err(PveError::Decode {
                method: "PUT",
                path: net_path(node),
                message: format!("expected a task ID (UPID), got {other}"),
            }),
        }
    }

    /// `DELETE /nodes/{node}/network`: drops everyone's staged edits.
    pub async fn revert_network(&self, node: &str) -> Result<(), PveError> {
        self.write::<Value>(Method::Delete, &net_path(node), &Params::new())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(v: Value) -> NetworkInterface {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn interfaces_read_leniently_and_write_whole() {
        let b = iface(serde_json::json!({
            "iface": "vmbr0", "type": "bridge", "method": "static", "address": "10.0.0.11",
            "netmask": "24", "gateway": "10.0.0.1", "bridge_ports": "eno1", "autostart": 1,
            "active": 1, "families": ["inet"], "bridge_stp": "off", "mtu": "1500"
        }));
        assert_eq!(b.cidr.as_deref(), Some("10.0.0.11/24"));
        assert_eq!(
            (b.bridge_ports.clone(), b.autostart, b.active, b.mtu),
            (vec!["eno1".to_owned()], true, true, Some(1500))
        );
        assert_eq!(b.options["families"], "inet");
        let p = b.to_params();
        for (k, v) in [
            ("type", "bridge"),
            ("cidr", "10.0.0.11/24"),
            ("gateway", "10.0.0.1"),
            ("bridge_ports", "eno1"),
            ("autostart", "1"),
        ] {
            assert_eq!(p.get(k), Some(v), "{k}");
        }
    }

    #[test]
    fn bad_interfaces_name_the_field() {
        let node = vec![
            iface(serde_json::json!({"iface": "eno1", "type": "eth", "exists": 1})),
            iface(serde_json::json!({"iface": "eno2", "type": "eth", "exists": 1})),
        ];
        let ok = NetworkInterface {
            iface: "vmbr1".into(),
            kind: "bridge".into(),
            cidr: Some("192.168.5.1/24".into()),
            bridge_ports: vec!["eno2".into()],
            ..Default::default()
        };
        assert_eq!(ok.check(&node), Ok(()));
        let hosted = NetworkInterface {
            cidr: Some("203.0.113.7/32".into()),
            gateway: Some("203.0.113.1".into()),
            bridge_ports: vec!["eno1.20".into()],
            ..ok.clone()
        };
        assert_eq!(
            hosted.check(&node),
            Ok(()),
            "a /32 with an on-link gateway, a VLAN of a NIC as port"
        );
        for (change, field) in [
            (
                NetworkInterface {
                    cidr: Some("192.168.5.1".into()),
                    ..ok.clone()
                },
                "cidr",
            ),
            (
                NetworkInterface {
                    cidr: Some("192.168.5.300/24".into()),
                    ..ok.clone()
                },
                "cidr",
            ),
            (
                NetworkInterface {
                    gateway: Some("10.1.1.1".into()),
                    ..ok.clone()
                },
                "gateway",
            ),
            (
                NetworkInterface {
                    bridge_ports: vec!["eth9".into()],
                    ..ok.clone()
                },
                "bridge_ports",
            ),
            (
                NetworkInterface {
                    vlan_raw_device: Some("eth9".into()),
                    ..ok.clone()
                },
                "vlan-raw-device",
            ),
        ] {
            assert_eq!(change.check(&node).unwrap_err().field, field);
        }
    }
}
