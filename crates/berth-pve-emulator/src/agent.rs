//! Guest networking as the QEMU guest agent (`network-get-interfaces`) and `lxc/{id}/interfaces` report it.

use std::net::Ipv6Addr;

use serde_json::{Value, json};

use crate::propstr;
use crate::state::{Guest, Kind, World};

/// One address: (ip, family "ipv4"|"ipv6", prefix).
type Addr = (String, &'static str, u32);

/// The addresses the guest's first NIC gets: link-local IPv6 first, then IPv4, then global IPv6.
fn nic_addresses(world: &World, g: &Guest, mac: &str) -> Vec<Addr> {
    let node_index = world.node(&g.node).map(|n| n.index).unwrap_or(0);
    let (ip, ip6) = match g.kind {
        Kind::Qemu => {
            let cfg = g.config.get("ipconfig0").cloned().unwrap_or_default();
            (propstr::get_kv(&cfg, "ip"), propstr::get_kv(&cfg, "ip6"))
        }
        Kind::Lxc => {
            let cfg = g.config.get("net0").cloned().unwrap_or_default();
            (propstr::get_kv(&cfg, "ip"), propstr::get_kv(&cfg, "ip6"))
        }
    };
    let mut out = vec![(link_local(mac), "ipv6", 64)];
    match ip.as_deref() {
        Some(cidr) if cidr.contains('/') => {
            let (a, p) = cidr.split_once('/').unwrap_or((cidr, "24"));
            out.push((a.to_string(), "ipv4", p.parse().unwrap_or(24)));
        }
        Some("manual") => {}
        _ => {
            let v = g.vmid;
            out.push((format!("10.{node_index}.{}.{}", v / 250 % 250, v % 250 + 2), "ipv4", 24));
        }
    }
    match ip6.as_deref() {
        Some(cidr) if cidr.contains('/') => {
            let (a, p) = cidr.split_once('/').unwrap_or((cidr, "64"));
            out.push((a.to_string(), "ipv6", p.parse().unwrap_or(64)));
        }
        Some("auto") | Some("dhcp") => out.push((format!("2001:db8::{:x}", g.vmid), "ipv6", 64)),
        _ => {}
    }
    out
}

/// EUI-64 link-local address for a MAC.
fn link_local(mac: &str) -> String {
    let b: Vec<u8> = mac.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    if b.len() != 6 {
        return "fe80::1".to_string();
    }
    let seg = |hi: u8, lo: u8| (u16::from(hi) << 8) | u16::from(lo);
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        seg(b[0] ^ 0x02, b[1]),
        seg(b[2], 0xff),
        seg(0xfe, b[3]),
        seg(b[4], b[5]),
    )
    .to_string()
}

fn stats(seed: u32) -> Value {
    let s = u64::from(seed);
    json!({
        "rx-bytes": 1_048_576 + s * 17, "rx-packets": 4_096 + s, "rx-errs": 0, "rx-dropped": 0,
        "tx-bytes": 524_288 + s * 13, "tx-packets": 2_048 + s, "tx-errs": 0, "tx-dropped": 0
    })
}

fn addr_json(a: &Addr) -> Value {
    json!({ "ip-address": a.0, "ip-address-type": a.1, "prefix": a.2 })
}

/// `{"result": [...]}` for `GET .../agent/network-get-interfaces`.
pub(crate) fn qemu_interfaces(world: &World, g: &Guest) -> Value {
    let mac = g
        .config
        .get("net0")
        .and_then(|n| propstr::net_mac(n))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut result = vec![json!({
        "name": "lo",
        "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [
            { "ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8 },
            { "ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128 }
        ],
        "statistics": stats(0),
    })];
    if g.config.contains_key("net0") {
        let addrs: Vec<Value> = nic_addresses(world, g, &mac).iter().map(addr_json).collect();
        result.push(json!({
            "name": "eth0",
            "hardware-address": mac,
            "ip-addresses": addrs,
            "statistics": stats(g.vmid),
        }));
    }
    json!({ "result": result })
}

/// `GET /nodes/{node}/lxc/{vmid}/interfaces`.
pub(crate) fn lxc_interfaces(world: &World, g: &Guest) -> Value {
    let mut out = vec![json!({
        "name": "lo",
        "hwaddr": "00:00:00:00:00:00",
        "hardware-address": "00:00:00:00:00:00",
        "inet": "127.0.0.1/8",
        "inet6": "::1/128",
        "ip-addresses": [
            { "ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8 },
            { "ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128 }
        ],
    })];
    if let Some(net0) = g.config.get("net0") {
        let mac = propstr::net_mac(net0).unwrap_or_default().to_ascii_lowercase();
        let name = propstr::get_kv(net0, "name").unwrap_or_else(|| "eth0".to_string());
        let addrs = nic_addresses(world, g, &mac);
        let mut nic = json!({
            "name": name,
            "hwaddr": mac,
            "hardware-address": mac,
            "ip-addresses": addrs.iter().map(addr_json).collect::<Vec<_>>(),
        });
        if let Some(v4) = addrs.iter().find(|a| a.1 == "ipv4") {
            nic["inet"] = json!(format!("{}/{}", v4.0, v4.2));
        }
        if let Some(v6) = addrs.iter().rev().find(|a| a.1 == "ipv6") {
            nic["inet6"] = json!(format!("{}/{}", v6.0, v6.2));
        }
        out.push(nic);
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn eui64() {
        assert_eq!(super::link_local("BC:24:11:2E:C5:4A"), "fe80::be24:11ff:fe2e:c54a");
    }
}
