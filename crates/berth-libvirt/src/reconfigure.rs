//! Reconfigure: cores and memory live within the domain's maxima (vCPU slots, balloon), and in
//! the persistent definition for the next start; a change that cannot apply live reports
//! `restart_required`. Disks grow only (live through libvirt, offline through `qemu-img`).

use berth_core::{InstanceRef, ProviderError, ReconfigureOutcome, Resize};
use virt::domain::Domain;
use virt::sys;

use crate::conn::map_err;
use crate::create::gib_bytes;
use crate::domain::virtual_size;
use crate::provider::LibvirtProvider;
use crate::xml::{DomainFacts, parse_domain};

const LIVE: u32 = sys::VIR_DOMAIN_AFFECT_LIVE;
const CONFIG: u32 = sys::VIR_DOMAIN_AFFECT_CONFIG;

pub async fn reconfigure(
    p: &LibvirtProvider,
    id: &InstanceRef,
    change: &Resize,
) -> Result<ReconfigureOutcome, ProviderError> {
    change.validate()?;
    let ch = *change;
    let want_disk = ch.disk_gib.map(|g| gib_bytes("disk_gib", g)).transpose()?;
    let (host_cpus, host_kib) =
        p.lv.call("reading the host's size", |c| {
            c.node_info().map(|i| (i.cpus, i.memory)).map_err(map_err)
        })
        .await?;
    if let Some(c) = ch.cores
        && c > host_cpus
    {
        return Err(ProviderError::invalid(
            "cores",
            format!("the host has {host_cpus} CPUs; {c} cores cannot run here"),
        ));
    }
    if let Some(m) = ch.memory_mib
        && m.saturating_mul(1024) > host_kib
    {
        return Err(ProviderError::invalid(
            "memory_mib",
            format!(
                "the host has {} MiB of memory; {m} MiB cannot run here",
                host_kib / 1024
            ),
        ));
    }
    let (restart, offline_disk) = p
        .with_owned("reconfiguring", id, move |f| {
            let running = f.dom.is_active().map_err(map_err)?;
            // What runs now, and what the next start will use (they differ after a change that
            // waits for a restart).
            let live = &f.facts;
            let saved = parse_domain(&f.dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).map_err(map_err)?)
                .map_err(ProviderError::internal)?;
            let mut restart = false;
            if let Some(c) = ch.cores {
                restart |= cores(&f.dom, c, running, live, &saved)?;
            }
            if let Some(m) = ch.memory_mib {
                restart |= memory(&f.dom, m, running, live, &saved)?;
            }
            let mut offline_disk = None;
            if let Some(want) = want_disk {
                let disk = live
                    .disk
                    .clone()
                    .ok_or_else(|| ProviderError::unsupported("resizing a domain without a file-backed disk"))?;
                let now = virtual_size(&disk)
                    .map_err(|e| ProviderError::internal(format!("cannot read {}: {e}", disk.display())))?;
                if want < now {
                    return Err(ProviderError::invalid(
                        "disk_gib",
                        format!(
                            "disks only grow: the disk is {} GiB (got {})",
                            now.div_ceil(1 << 30),
                            want >> 30
                        ),
                    ));
                }
                if want > now {
                    if running {
                        let path = disk.to_string_lossy().into_owned();
                        f.dom
                            .block_resize(&path, want, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                            .map_err(map_err)?;
                    } else {
                        offline_disk = Some((disk, want));
                    }
                }
            }
            Ok((restart, offline_disk))
        })
        .await?;
    if let Some((disk, bytes)) = offline_disk {
        p.qemu_img.grow(&disk, bytes).await?;
    }
    Ok(ReconfigureOutcome {
        restart_required: restart,
    })
}

/// Sets `c` vCPUs: live when running and within the slots, and in the definition. `true` when
/// the running guest keeps another count until it restarts.
fn cores(dom: &Domain, c: u32, running: bool, live: &DomainFacts, saved: &DomainFacts) -> Result<bool, ProviderError> {
    let mut restart = false;
    if running && c != live.cores {
        restart = !(c <= live.max_cores && applied("cores", dom.set_vcpus_flags(c, LIVE)));
    }
    if c != saved.cores {
        if c > saved.max_cores {
            dom.set_vcpus_flags(c, CONFIG | sys::VIR_DOMAIN_VCPU_MAXIMUM)
                .map_err(map_err)?;
        }
        dom.set_vcpus_flags(c, CONFIG).map_err(map_err)?;
    }
    Ok(restart)
}

/// Sets `m` MiB: live through the balloon within the maximum, and in the definition.
fn memory(dom: &Domain, m: u64, running: bool, live: &DomainFacts, saved: &DomainFacts) -> Result<bool, ProviderError> {
    let kib = m.saturating_mul(1024);
    let mut restart = false;
    if running && m != live.memory_mib {
        restart = !(m <= live.max_memory_mib && applied("memory", dom.set_memory_flags(kib, LIVE)));
    }
    if m != saved.memory_mib {
        if m > saved.max_memory_mib {
            dom.set_memory_flags(kib, CONFIG | sys::VIR_DOMAIN_MEM_MAXIMUM)
                .map_err(map_err)?;
        }
        dom.set_memory_flags(kib, CONFIG).map_err(map_err)?;
    }
    Ok(restart)
}

/// Whether a live change took; a refusal (the guest or driver cannot hotplug) is logged, and
/// the change then waits for the next start.
fn applied(what: &str, res: Result<(), virt::error::Error>) -> bool {
    match res {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(what, error = %e.message(), "live change refused; it applies at the next start");
            false
        }
    }
}
