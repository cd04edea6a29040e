//! Guest IP addresses: picking usable ones from interface lists (no loopback or link-local),
//! reading them once (describe/list), and waiting for them after a start (the QEMU guest agent
//! comes up well after the VM; "not running" means "not yet").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_core::ProviderError;

use super::ProxmoxProvider;
use super::guest::Guest;
use crate::client::types::NetInterface;
use crate::client::{GuestType, PveError};

/// The addresses a guest reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GuestIps {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

fn usable_v4(a: &Ipv4Addr) -> bool {
    !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

fn usable_v6(a: &Ipv6Addr) -> bool {
    let link_local = (a.segments()[0] & 0xffc0) == 0xfe80;
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || link_local)
}

/// Every address of an interface: agent `ip-addresses`, and LXC's `inet`/`inet6` (CIDR).
fn addresses(iface: &NetInterface) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = iface
        .ip_addresses
        .iter()
        .flatten()
        .filter_map(|e| e.ip_address.as_deref())
        .filter_map(|s| s.split('%').next().and_then(|s| s.parse().ok()))
        .collect();
    for cidr in [&iface.inet, &iface.inet6].into_iter().flatten() {
        if let Some(ip) = cidr.split('/').next().and_then(|s| s.parse().ok())
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// The first usable IPv4 and IPv6 address, skipping `lo`, 127/8, ::1, fe80::/10, 169.254/16.
pub(crate) fn pick_ips(ifaces: &[NetInterface]) -> GuestIps {
    let mut ips = GuestIps::default();
    for iface in ifaces.iter().filter(|i| i.name.as_deref() != Some("lo")) {
        for ip in addresses(iface) {
            match ip {
                IpAddr::V4(a) if ips.v4.is_none() && usable_v4(&a) => ips.v4 = Some(a),
                IpAddr::V6(a) if ips.v6.is_none() && usable_v6(&a) => ips.v6 = Some(a),
                _ => {}
            }
        }
    }
    ips
}

impl ProxmoxProvider {
    async fn interfaces(&self, g: &Guest) -> Result<Vec<NetInterface>, PveError> {
        match g.ty {
            GuestType::Qemu => self.client.agent_interfaces(&g.node, g.vmid).await,
            GuestType::Lxc => self.client.lxc_interfaces(&g.node, g.vmid).await,
        }
    }

    /// One look at a running guest's addresses; any failure means "unknown" (describe/list).
    pub(crate) async fn current_ips(&self, g: &Guest) -> GuestIps {
        if !g.is_running() {
            return GuestIps::default();
        }
        match self.interfaces(g).await {
            Ok(ifaces) => pick_ips(&ifaces),
            Err(e) => {
                tracing::debug!(vmid = g.vmid, error = %e, "guest addresses not available");
                GuestIps::default()
            }
        }
    }

    /// Polls until the guest reports a usable IPv4 (the static one, when `expected` is given),
    /// on the `Poll` schedule, up to `network_timeout_secs`; `key` names the kind of wait, for
    /// learning how long it takes. `true` with the addresses when the guest itself reported them
    /// (`false`: a VM without a guest agent, taken to have its static address).
    pub(crate) async fn wait_network(
        &self,
        g: &Guest,
        expected: Option<Ipv4Addr>,
        key: &str,
    ) -> Result<(GuestIps, bool), ProviderError> {
        let timeout = self.network_timeout();
        let poll = self.client.poller(key);
        let mut last;
        if poll.expects() {
            // It is known to take a while: no look before the first pause.
            poll.sleep(timeout).await;
        }
        loop {
            let sent = std::time::Instant::now();
            // Learned: when the look that saw the address was sent (see `wait_task`).
            let looked_at = poll.elapsed();
            match self.interfaces(g).await {
                Ok(ifaces) => {
                    let ips = pick_ips(&ifaces);
                    match (ips.v4, expected) {
                        (Some(got), Some(want)) if got == want => {
                            self.client.learned(key, looked_at);
                            return Ok((ips, true));
                        }
                        (Some(_), None) => {
                            self.client.learned(key, looked_at);
                            return Ok((ips, true));
                        }
                        (Some(got), Some(want)) => last = format!("guest reports {got}, waiting for {want}"),
                        (None, _) => last = "guest reports no usable IPv4 address yet".into(),
                    }
                }
                Err(e) if e.is_agent_not_configured() => {
                    return match expected {
                        Some(ip) => Ok((GuestIps { v4: Some(ip), v6: None }, false)),
                        None => Err(ProviderError::unsupported(format!(
                            "{} has no QEMU guest agent configured, so its DHCP address cannot be read",
                            g.label()
                        ))),
                    };
                }
                Err(e) if e.is_agent_not_ready() || e.is_transient(true) => last = e.to_string(),
                Err(e) => return Err(ProviderError::from(e).context(format!("reading the addresses of {}", g.label()))),
            }
            if poll.elapsed() >= timeout {
                return Err(ProviderError::Timeout {
                    what: format!("an IP address from {} (last: {last})", g.label()),
                    after: timeout,
                });
            }
            poll.sleep_after(timeout, Some(sent)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ifaces(v: serde_json::Value) -> Vec<NetInterface> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn filters_loopback_and_link_local() {
        let list = ifaces(json!([
            {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}]},
            {"name": "eth0", "hardware-address": "BC:24:11:2E:C5:4A", "ip-addresses": [
                {"ip-address": "fe80::be24:11ff:fe2e:c54a%eth0", "ip-address-type": "ipv6", "prefix": 64},
                {"ip-address": "169.254.3.4", "ip-address-type": "ipv4", "prefix": 16},
                {"ip-address": "10.0.0.10", "ip-address-type": "ipv4", "prefix": 24},
                {"ip-address": "2001:db8::10", "ip-address-type": "ipv6", "prefix": 64}]}
        ]));
        let ips = pick_ips(&list);
        assert_eq!(ips.v4, Some("10.0.0.10".parse().unwrap()));
        assert_eq!(ips.v6, Some("2001:db8::10".parse().unwrap()));
    }

    #[test]
    fn early_boot_shapes() {
        assert_eq!(
            pick_ips(&ifaces(json!([{"name": "eth0", "hardware-address": "x"}]))),
            GuestIps::default()
        );
        let only_ll =
            ifaces(json!([{"name": "eth0", "ip-addresses": [{"ip-address": "fe80::1", "ip-address-type": "ipv6"}]}]));
        assert_eq!(pick_ips(&only_ll), GuestIps::default());
        let lxc = ifaces(
            json!([{"name": "eth0", "hwaddr": "x", "inet": "10.1.2.3/24", "inet6": "2001:db8::3/64", "ip-addresses": []}]),
        );
        assert_eq!(pick_ips(&lxc).v4, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(pick_ips(&lxc).v6, Some("2001:db8::3".parse().unwrap()));
    }
}
