//! Reconfigure: cores and memory live within the domain's maxima (vCPU slots, balloon), else in
//! the persistent definition for the next start; disks grow only (live through libvirt, offline
//! through `qemu-img`).

use berth_core::{InstanceRef, ProviderError, ReconfigureOutcome, Resize};
use virt::sys;

use crate::conn::map_err;
use crate::provider::LibvirtProvider;

const LIVE: u32 = sys::VIR_DOMAIN_AFFECT_LIVE;
const CONFIG: u32 = sys::VIR_DOMAIN_AFFECT_CONFIG;

pub async fn reconfigure(
    p: &LibvirtProvider,
    id: &InstanceRef,
    change: &Resize,
) -> Result<ReconfigureOutcome, ProviderError> {
    change.validate()?;
    let ch = *change;
    let host_cpus =
        p.lv.call("reading the host's size", |c| {
            c.node_info().map(|i| i.cpus).map_err(map_err)
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
    let (restart, offline_disk) = p
        .with_owned("reconfiguring", id, move |f| {
            let running = f.dom.is_active().map_err(map_err)?;
            let facts = &f.facts;
            let mut restart = false;
            if let Some(c) = ch.cores
                && c != facts.cores
            {
                let live_ok = running && c <= facts.max_cores && live("cores", f.dom.set_vcpus_flags(c, LIVE));
                // Live or not, the definition keeps the new count for the next start.
                if live_ok {
                    f.dom.set_vcpus_flags(c, CONFIG).map_err(map_err)?;
                } else {
                    if c > facts.max_cores {
                        f.dom
                            .set_vcpus_flags(c, CONFIG | sys::VIR_DOMAIN_VCPU_MAXIMUM)
                            .map_err(map_err)?;
                    }
                    f.dom.set_vcpus_flags(c, CONFIG).map_err(map_err)?;
                    restart |= running;
                }
            }
            if let Some(m) = ch.memory_mib
                && m != facts.memory_mib
            {
                let kib = m.saturating_mul(1024);
                let live_ok = running && m <= facts.max_memory_mib && live("memory", f.dom.set_memory_flags(kib, LIVE));
                if live_ok {
                    f.dom.set_memory_flags(kib, CONFIG).map_err(map_err)?;
                } else {
                    if m > facts.max_memory_mib {
                        f.dom
                            .set_memory_flags(kib, CONFIG | sys::VIR_DOMAIN_MEM_MAXIMUM)
                            .map_err(map_err)?;
                    }
                    f.dom.set_memory_flags(kib, CONFIG).map_err(map_err)?;
                    restart |= running;
                }
            }
            let mut offline_disk = None;
            if let Some(g) = ch.disk_gib {
                let disk = facts
                    .disk
                    .clone()
                    .ok_or_else(|| ProviderError::unsupported("resizing a domain without a file-backed disk"))?;
                let path = disk.to_string_lossy().into_owned();
                let now = f.dom.block_info(&path, 0).map_err(map_err)?.capacity;
                let want = g << 30;
                if want < now {
                    return Err(ProviderError::invalid(
                        "disk_gib",
                        format!("disks only grow: the disk is {} GiB (got {g})", now.div_ceil(1 << 30)),
                    ));
                }
                if want > now {
                    if running {
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

/// Whether a live change took; a refusal (the guest or driver cannot hotplug) is logged and the
/// change goes to the persistent definition instead.
fn live(what: &str, res: Result<(), virt::error::Error>) -> bool {
    match res {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(what, error = %e.message(), "live change refused; it applies at the next start");
            false
        }
    }
}
