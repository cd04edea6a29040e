//! Blocking helpers over one libvirt domain: finding Berth's domains by their marker, reading
//! what Berth reports (state, size, addresses), and the address discovery order (guest agent,
//! then DHCP lease, then ARP; loopback and link-local never count).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use berth_core::{GuestKind, Instance, InstanceId, InstanceRef, PowerState, ProviderError};
use virt::connect::Connect;
use virt::domain::{Domain, DomainPausedReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::sys;

use crate::conn::{is_missing, map_err};
use crate::xml::{DomainFacts, parse_domain};

/// A domain and what its XML says.
pub struct Found {
    pub dom: Domain,
    pub facts: DomainFacts,
}

pub fn facts(dom: &Domain) -> Result<DomainFacts, ProviderError> {
    let xml = dom.xml_desc(0).map_err(map_err)?;
    parse_domain(&xml).map_err(ProviderError::internal)
}

/// Every domain with its facts (domains that vanish while listed are skipped).
pub fn all(c: &Connect) -> Result<Vec<Found>, ProviderError> {
    let mut out = Vec::new();
    for dom in c.list_all_domains(0).map_err(map_err)? {
        match dom.xml_desc(0) {
            Ok(xml) => out.push(Found {
                facts: parse_domain(&xml).map_err(ProviderError::internal)?,
                dom,
            }),
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(map_err(e)),
        }
    }
    Ok(out)
}

/// The domain carrying `id` in its marker. Two domains with one marker (one copied with
/// `virsh dumpxml | virsh define`, say) are a conflict Berth will not guess its way through.
pub fn owned(c: &Connect, id: &InstanceId) -> Result<Option<Found>, ProviderError> {
    let mut found: Vec<Found> = all(c)?
        .into_iter()
        .filter(|f| f.facts.instance_id.as_ref() == Some(id))
        .collect();
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|f| f.facts.name.as_str()).collect();
        return Err(ProviderError::conflict(format!(
            "domains {} all carry Berth's marker for instance {id}; remove the copies' <metadata> marker",
            names.join(", ")
        )));
    }
    Ok(found.pop())
}

/// The instance whose domain keeps its files in `id`'s directory though `id` is not its owner (a
/// machine taken from pool machine `id`).
pub fn files_user(c: &Connect, id: &InstanceId) -> Result<Option<InstanceId>, ProviderError> {
    Ok(all(c)?
        .into_iter()
        .find(|f| f.facts.files_owner.as_ref() == Some(id))
        .and_then(|f| f.facts.instance_id))
}

/// The domain a reference names: by marker, or by libvirt name.
pub fn locate(c: &Connect, r: &InstanceRef) -> Result<Option<Found>, ProviderError> {
    match r {
        InstanceRef::Id(id) => owned(c, id),
        InstanceRef::Backend(name) => match c.lookup_domain_by_name(name) {
            Ok(dom) => Ok(Some(Found {
                facts: facts(&dom)?,
                dom,
            })),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(map_err(e)),
        },
    }
}

/// Removes the domain's definition (with its managed save, snapshot metadata and NVRAM where
/// the driver supports those flags). Already gone counts as done.
pub fn undefine(dom: &Domain) -> Result<(), ProviderError> {
    let full = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
    let res = dom.undefine_flags(full).or_else(|e| {
        if e.code().is_any(vec![ErrorNumber::InvalidArg, ErrorNumber::NoSupport]) {
            dom.undefine()
        } else {
            Err(e)
        }
    });
    match res {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

pub fn power_state(dom: &Domain) -> Result<PowerState, ProviderError> {
    // `info()` reports errors (a vanished domain, a lost connection); virt 0.5's `state()` does
    // not, so it is asked only for the reason of a pause.
    let state = dom.info().map_err(map_err)?.state;
    // libvirt creates QEMU paused and resumes it once set up: that is a start in progress.
    let starting = state.is(DomainState::Paused)
        && matches!(
            dom.state().map(|(_, r)| r),
            Ok(Enum::Known(DomainStateReason::Paused(Enum::Known(
                DomainPausedReason::StartingUp
            ))))
        );
    Ok(match state.known() {
        Some(DomainState::Paused) if starting => PowerState::Provisioning,
        Some(DomainState::Running | DomainState::Blocked) => PowerState::Running,
        Some(DomainState::Paused | DomainState::PMSuspended) => PowerState::Paused,
        Some(DomainState::Shutoff | DomainState::Crashed) => PowerState::Stopped,
        // Shutting down: still on until it is off.
        Some(DomainState::Shutdown) => PowerState::Running,
        _ => PowerState::Unknown,
    })
}

fn usable_v4(a: &Ipv4Addr) -> bool {
    !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
}

fn usable_v6(a: &Ipv6Addr) -> bool {
    // fe80::/10 is link-local.
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80)
}

/// The guest's addresses from the first source that knows any IPv4 address.
pub fn addresses(dom: &Domain) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let mut v6_seen = None;
    for source in [
        sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
    ] {
        // Not ready yet (agent not connected, no lease) is the normal case while booting.
        let Ok(ifaces) = dom.interface_addresses(source, 0) else {
            continue;
        };
        let mut v4 = None;
        for iface in ifaces.iter().filter(|i| i.name != "lo") {
            for a in &iface.addrs {
                match a.addr.parse::<IpAddr>() {
                    Ok(IpAddr::V4(x)) if v4.is_none() && usable_v4(&x) => v4 = Some(x),
                    Ok(IpAddr::V6(x)) if v6_seen.is_none() && usable_v6(&x) => v6_seen = Some(x),
                    _ => {}
                }
            }
        }
        if v4.is_some() {
            return (v4, v6_seen);
        }
    }
    (None, v6_seen)
}

/// The guest-visible size of a disk image: a qcow2 header's size field (updated by QEMU on a
/// live resize too), or a raw file's length. Read from the file, since virt 0.5's `block_info`
/// ignores libvirt's errors.
pub fn virtual_size(path: &Path) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 32];
    let n = f.read(&mut head)?;
    if n == 32 && head[..4] == *b"QFI\xfb" {
        return Ok(u64::from_be_bytes(head[24..32].try_into().expect("8 bytes")));
    }
    Ok(f.metadata()?.len())
}

/// What Berth reports of a domain; addresses only when asked (they may query the guest). The
/// caller fills in `node`.
pub fn instance(found: &Found, with_addresses: bool) -> Result<Instance, ProviderError> {
    let f = &found.facts;
    let state = power_state(&found.dom)?;
    let disk_gib = f
        .disk
        .as_deref()
        .and_then(|d| virtual_size(d).ok())
        .map(|b| b.div_ceil(1 << 30));
    let (ipv4, ipv6) = if with_addresses && state == PowerState::Running {
        addresses(&found.dom)
    } else {
        (None, None)
    };
    Ok(Instance {
        instance_id: f.instance_id.clone(),
        backend_id: f.name.clone(),
        kind: GuestKind::Vm,
        node: None,
        name: f.name.clone(),
        state,
        ipv4,
        ipv6,
        cores: Some(f.cores),
        memory_mib: Some(f.memory_mib),
        disk_gib,
        ssh_port: None,
        root_password: None,
        login_user: None,
        pool: f.pool.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routable_addresses_count() {
        for bad in ["127.0.0.1", "169.254.3.4", "0.0.0.0", "224.0.0.1"] {
            assert!(!usable_v4(&bad.parse().unwrap()), "{bad}");
        }
        assert!(usable_v4(&"10.0.2.15".parse().unwrap()));
        for bad in ["::1", "fe80::1", "febf::1", "::", "ff02::1"] {
            assert!(!usable_v6(&bad.parse().unwrap()), "{bad}");
        }
        assert!(usable_v6(&"2001:db8::5".parse().unwrap()));
        assert!(usable_v6(&"fec0::1".parse().unwrap()));
    }
}
