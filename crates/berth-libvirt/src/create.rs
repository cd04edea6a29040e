//! Create: template → disk (overlay or copy) → seed ISO → define → start → address. The domain's
//! definition is the commit point: before it, a re-run starts the files over; after it, a re-run
//! resumes the domain it finds by its marker. A create that fails removes what it made.

use std::path::Path;
use std::time::Instant;

use berth_core::{
    GuestKind, Instance, InstanceRef, PoolMark, PoolMode, PowerState, ProgressSink, ProviderError, Stage, StageEvent,
    StagePhase, VmSpec,
};

use crate::config::{CloneMode, is_unix_user};
use crate::conn::{is_missing, map_err};
use crate::domain;
use crate::provider::{LibvirtProvider, POLL, check_host_fits, destroy_if_active, start_if_stopped};
use crate::seed::{seed_iso, write_atomic};
use crate::templates::TemplateImage;
use crate::xml::{DomainPlan, Marker, domain_xml};

const DISK: &str = "disk.qcow2";
/// Written first into every instance directory, holding the instance id: Berth removes only
/// directories that carry it.
const OWNER_FILE: &str = ".berth-instance";
pub(crate) const SEED: &str = "seed.iso";
pub const CONSOLE_LOG: &str = "console.log";

pub(crate) fn event(progress: &dyn ProgressSink, stage: Stage, phase: StagePhase, detail: impl Into<Option<String>>) {
    progress.event(StageEvent {
        stage,
        phase,
        detail: detail.into(),
    });
}

pub(crate) fn check_spec(p: &LibvirtProvider, spec: &VmSpec) -> Result<(String, String), ProviderError> {
    spec.validate()?;
    if spec.kind != GuestKind::Vm {
        return Err(ProviderError::invalid(
            "kind",
            format!("the libvirt backend makes VMs only (got {})", spec.kind),
        ));
    }
    let user = p.user_of(spec);
    if !is_unix_user(&user) {
        return Err(ProviderError::invalid(
            "user",
            format!("not a Unix user name: {user:?}"),
        ));
    }
    let template = match spec.template.clone().or_else(|| p.cfg.template.clone()) {
        Some(t) => t,
        None => {
            return Err(ProviderError::invalid(
                "template",
                "no template given and no default `template` in [provisioner.libvirt]",
            ));
        }
    };
    Ok((user, template))
}

pub async fn create(
    p: &LibvirtProvider,
    spec: &VmSpec,
    progress: &dyn ProgressSink,
) -> Result<Instance, ProviderError> {
    create_marked(p, spec, None, progress).await
}

/// A create; with `fill`, of a pool machine: its marker carries the pool mark, and a machine
/// its pool keeps stopped is left never booted.
pub(crate) async fn create_marked(
    p: &LibvirtProvider,
    spec: &VmSpec,
    fill: Option<(&PoolMark, PoolMode)>,
    progress: &dyn ProgressSink,
) -> Result<Instance, ProviderError> {
    let (user, template_id) = check_spec(p, spec)?;
    let disk_bytes = gib_bytes("disk_gib", spec.disk_gib)?;
    // One operation per instance at a time: a second create (or a delete) waits here.
    let _guard = p.lock_instance(&spec.instance_id).await;
    let id = InstanceRef::Id(spec.instance_id.clone());

    // An existing domain means an earlier create got past its commit point: resume it, without
    // re-checking a template that may since have changed.
    let (iid, name) = (spec.instance_id.clone(), spec.name.clone());
    let (existing, name_owner) =
        p.lv.call("looking for the instance", move |c| {
            // A pool machine's id whose machine was taken: its directory is the instance's now.
            if let Some(taker) = domain::files_user(c, &iid)? {
                return Err(ProviderError::conflict(format!(
                    "{iid} was taken from its pool by instance {taker}, whose files its directory holds"
                )));
            }
            let existing = domain::owned(c, &iid)?.map(|f| (f.facts.name, f.facts.disk));
            let name_owner = match c.lookup_domain_by_name(&name) {
                Ok(d) => Some(domain::facts(&d)?.instance_id),
                Err(e) if is_missing(&e) => None,
                Err(e) => return Err(map_err(e)),
            };
            Ok((existing, name_owner))
        })
        .await?;
    let existing = match existing {
        // Defined, but its disk is gone (removed by hand, or a cleanup cut short): half-made.
        Some((name, disk)) if !disk.as_deref().is_some_and(std::path::Path::exists) => {
            tracing::warn!(domain = %name, "the instance's domain has no disk; removing it and starting over");
            unwind(p, &id).await?;
            None
        }
        other => other.map(|(name, _)| name),
    };
    let made_here = existing.is_none();
    if made_here {
        if let Some(owner) = name_owner.filter(|o| o.as_ref() != Some(&spec.instance_id)) {
            return Err(ProviderError::conflict(format!(
                "a domain named {:?} already exists and belongs to {}; pick another name",
                spec.name,
                owner
                    .map(|o| format!("Berth instance {o}"))
                    .unwrap_or_else(|| "something other than Berth".into())
            )));
        }
        let template = p.templates().resolve("template", &template_id).await?;
        if disk_bytes < template.virtual_size {
            return Err(ProviderError::invalid(
                "disk_gib",
                format!(
                    "template {} is {} GiB; the disk cannot be smaller (got {} GiB)",
                    template.id,
                    template.virtual_size.div_ceil(1 << 30),
                    spec.disk_gib
                ),
            ));
        }
        check_host_fits(p, spec).await?;
        let accel = p.accel().await?;
        let mark = fill.map(|(m, _)| m);
        if let Err(e) = make(p, spec, &template, &user, accel.domain_type, mark, progress).await {
            if let Err(u) = unwind(p, &id).await {
                tracing::warn!(instance = %id, error = %u, "could not remove the half-made instance");
            }
            return Err(e);
        }
    } else {
        event(progress, Stage::CloneTemplate, StagePhase::Skipped, existing.clone());
        event(progress, Stage::ConfigureVm, StagePhase::Skipped, existing);
    }
    if let Some((_, PoolMode::Stopped)) = fill {
        return p.read(&id, false).await;
    }
    match start_and_wait(p, spec, &id, progress).await {
        Ok(i) => Ok(i),
        Err(e) => {
            if made_here && let Err(u) = unwind(p, &id).await {
                tracing::warn!(instance = %id, error = %u, "could not remove the half-made instance");
            }
            Err(e)
        }
    }
}

/// `gib` GiB in bytes; `InvalidSpec` on `field` when that does not fit 64 bits.
pub(crate) fn gib_bytes(field: &str, gib: u64) -> Result<u64, ProviderError> {
    gib.checked_mul(1 << 30)
        .ok_or_else(|| ProviderError::invalid(field, format!("{gib} GiB is beyond any disk")))
}

/// The disk, the seed and the domain definition.
async fn make(
    p: &LibvirtProvider,
    spec: &VmSpec,
    template: &TemplateImage,
    user: &str,
    domain_type: &str,
    pool: Option<&PoolMark>,
    progress: &dyn ProgressSink,
) -> Result<(), ProviderError> {
    let dir = p.instance_dir(&spec.instance_id);
    let io = |what: &str, e: std::io::Error| ProviderError::internal(format!("{what} {}: {e}", dir.display()));
    let disk = dir.join(DISK);
    let mode = match p.cfg.clone {
        CloneMode::Linked => "overlay",
        CloneMode::Full => "full copy",
    };
    event(
        progress,
        Stage::CloneTemplate,
        StagePhase::Started,
        format!("{mode} of {} ({})", template.id, template.format),
    );
    // Files without a domain are what an interrupted create left: never booted, start over.
    if remove_instance_dir(&dir, &spec.instance_id)? {
        tracing::info!(dir = %dir.display(), "removed the files of an interrupted create");
    }
    std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", e))?;
    std::fs::write(dir.join(OWNER_FILE), spec.instance_id.as_str()).map_err(|e| io("cannot write in", e))?;
    let size = gib_bytes("disk_gib", spec.disk_gib)?;
    match p.cfg.clone {
        CloneMode::Linked => {
            p.qemu_img
                .overlay(&template.path, &template.format, &disk, size)
                .await?
        }
        CloneMode::Full => {
            p.qemu_img.copy(&template.path, &template.format, &disk).await?;
            if size > template.virtual_size {
                p.qemu_img.grow(&disk, size).await?;
            }
        }
    }
    event(
        progress,
        Stage::CloneTemplate,
        StagePhase::Completed,
        disk.display().to_string(),
    );

    event(
        progress,
        Stage::ConfigureVm,
        StagePhase::Started,
        "cloud-init seed and domain".to_owned(),
    );
    let seed = dir.join(SEED);
    let iso = seed_iso(spec, user)?;
    write_atomic(&seed, &iso).map_err(|e| io("cannot write the seed ISO in", e))?;
    let marker = Marker {
        id: &spec.instance_id,
        template: &template.id,
        pool,
        files: None,
    };
    let xml = definition(p, spec, marker, domain_type, &dir, &seed, None);
    let (iid, name) = (spec.instance_id.clone(), spec.name.clone());
    p.lv.call("defining the domain", move |c| {
        let Err(e) = c.define_domain_xml(&xml) else {
            return Ok(());
        };
        // An interrupted earlier run of this create may have finished its define after it was
        // cut off (libvirt calls run to completion). That stopped copy of this same instance is
        // replaced; anything else holding the name is a conflict.
        let stale = c.lookup_domain_by_name(&name).ok().filter(|d| {
            !d.is_active().unwrap_or(true) && domain::facts(d).is_ok_and(|f| f.instance_id.as_ref() == Some(&iid))
        });
        match stale {
            Some(d) => {
                domain::undefine(&d)?;
                c.define_domain_xml(&xml).map(|_| ()).map_err(map_err)
            }
            None => Err(map_err(e)),
        }
    })
    .await?;
    event(progress, Stage::ConfigureVm, StagePhase::Completed, spec.name.clone());
    Ok(())
}

/// The XML of `spec`'s domain: disk and console log in `dir`, the seed at `seed`; `keep` is the
/// name and UUID of the domain it redefines (a pool machine handed over), else `spec`'s name.
pub(crate) fn definition(
    p: &LibvirtProvider,
    spec: &VmSpec,
    marker: Marker<'_>,
    domain_type: &str,
    dir: &Path,
    seed: &Path,
    keep: Option<(&str, Option<&str>)>,
) -> String {
    let (name, uuid) = keep.unwrap_or((&spec.name, None));
    domain_xml(&DomainPlan {
        name,
        uuid,
        marker,
        domain_type,
        machine: &p.cfg.machine,
        cores: spec.cores,
        max_cores: p.cfg.max_cores.unwrap_or(spec.cores),
        memory_mib: spec.memory_mib,
        max_memory_mib: p.cfg.max_memory_mib.unwrap_or(spec.memory_mib),
        disk: &dir.join(DISK),
        seed,
        console_log: &dir.join(CONSOLE_LOG),
        network: &p.cfg.attachment(),
    })
}

pub(crate) async fn start_and_wait(
    p: &LibvirtProvider,
    spec: &VmSpec,
    id: &InstanceRef,
    progress: &dyn ProgressSink,
) -> Result<Instance, ProviderError> {
    let (was_running, name, files) = p
        .with_owned("reading the state of", id, |f| {
            Ok((
                f.dom.is_active().map_err(map_err)?,
                f.facts.name.clone(),
                f.facts.files_id().cloned(),
            ))
        })
        .await?;
    // Polled by name: found once, not by scanning every domain's marker each time.
    let by_name = InstanceRef::Backend(name);
    if !was_running {
        event(progress, Stage::StartVm, StagePhase::Started, spec.name.clone());
        p.with_owned("starting", &by_name, |f| start_if_stopped(&f.dom)).await?;
        event(progress, Stage::StartVm, StagePhase::Completed, spec.name.clone());
    }
    event(progress, Stage::WaitNetwork, StagePhase::Started, spec.name.clone());
    let limit = std::time::Duration::from_secs(p.cfg.network_timeout_seconds);
    let console = p
        .instance_dir(files.as_ref().unwrap_or(&spec.instance_id))
        .join(CONSOLE_LOG);
    let started = Instant::now();
    loop {
        let inst = p.read(&by_name, true).await?;
        if let Some(a) = inst.ipv4 {
            event(progress, Stage::WaitNetwork, StagePhase::Completed, a.to_string());
            return Ok(inst);
        }
        if !matches!(inst.state, PowerState::Running | PowerState::Provisioning) {
            return Err(ProviderError::internal(format!(
                "the guest is {} while waiting for its address (its console log: {})",
                inst.state,
                console.display()
            )));
        }
        if started.elapsed() >= limit {
            return Err(ProviderError::Timeout {
                what: format!(
                    "waiting for {} to report an IPv4 address through the guest agent, a DHCP lease or ARP (its console log: {})",
                    spec.name,
                    console.display()
                ),
                after: limit,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Removes what a failed create made: the domain, then (only once the domain is gone) its files.
async fn unwind(p: &LibvirtProvider, id: &InstanceRef) -> Result<(), ProviderError> {
    let r = id.clone();
    p.lv.call("removing the half-made domain", move |c| {
        if let Some(f) = domain::locate(c, &r)? {
            destroy_if_active(&f.dom)?;
            domain::undefine(&f.dom)?;
        }
        Ok(())
    })
    .await?;
    if let InstanceRef::Id(i) = id {
        remove_instance_dir(&p.instance_dir(i), i)?;
    }
    Ok(())
}

/// Removes `dir` if it is `id`'s instance directory (it carries the owner file naming `id`);
/// `Ok(false)` when there is nothing; `Conflict` when the directory is not Berth's.
pub(crate) fn remove_instance_dir(dir: &std::path::Path, id: &berth_core::InstanceId) -> Result<bool, ProviderError> {
    let owner = match std::fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ProviderError::internal(format!("cannot read {}: {e}", dir.display()))),
    };
    let empty = || std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
    match owner {
        Some(o) if o.trim() == id.as_str() => {}
        None if !dir.exists() => return Ok(false),
        // An interrupted create may have made the directory and not yet its owner file.
        None if empty() => {}
        _ => {
            return Err(ProviderError::conflict(format!(
                "{} exists but is not instance {id}'s directory (no {OWNER_FILE} naming it); Berth will not touch it",
                dir.display()
            )));
        }
    }
    std::fs::remove_dir_all(dir)
        .map(|_| true)
        .map_err(|e| ProviderError::internal(format!("cannot remove {}: {e}", dir.display())))
}
