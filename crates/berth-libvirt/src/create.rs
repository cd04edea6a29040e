//! Create: template → disk (overlay or copy) → seed ISO → define → start → address. The domain's
//! definition is the commit point: before it, a re-run starts the files over; after it, a re-run
//! resumes the domain it finds by its marker. A create that fails removes what it made.

use std::time::Instant;

use berth_core::{
    GuestKind, Instance, InstanceRef, PowerState, ProgressSink, ProviderError, Stage, StageEvent, StagePhase, VmSpec,
};

use crate::config::{CloneMode, is_unix_user};
use crate::conn::{is_missing, map_err};
use crate::domain;
use crate::provider::{LibvirtProvider, POLL, check_host_fits, destroy_if_active, start_if_stopped};
use crate::seed::{seed_iso, write_atomic};
use crate::templates::TemplateImage;
use crate::xml::{DomainPlan, domain_xml};

const DISK: &str = "disk.qcow2";
const SEED: &str = "seed.iso";
pub const CONSOLE_LOG: &str = "console.log";

fn event(progress: &dyn ProgressSink, stage: Stage, phase: StagePhase, detail: impl Into<Option<String>>) {
    progress.event(StageEvent {
        stage,
        phase,
        detail: detail.into(),
    });
}

fn check_spec(p: &LibvirtProvider, spec: &VmSpec) -> Result<(String, String), ProviderError> {
    spec.validate()?;
    if spec.kind != GuestKind::Vm {
        return Err(ProviderError::invalid(
            "kind",
            format!("the libvirt backend makes VMs only (got {})", spec.kind),
        ));
    }
    let user = spec.user.clone().unwrap_or_else(|| p.cfg.user.clone());
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
    let (user, template_id) = check_spec(p, spec)?;
    let template = p.templates().resolve("template", &template_id).await?;
    let disk_bytes = spec.disk_gib << 30;
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

    let (iid, name) = (spec.instance_id.clone(), spec.name.clone());
    let (existing, name_owner) =
        p.lv.call("looking for the instance", move |c| {
            let existing = domain::owned(c, &iid)?.map(|f| f.facts.name);
            let name_owner = match c.lookup_domain_by_name(&name) {
                Ok(d) => Some(domain::facts(&d)?.instance_id),
                Err(e) if is_missing(&e) => None,
                Err(e) => return Err(map_err(e)),
            };
            Ok((existing, name_owner))
        })
        .await?;
    let id = InstanceRef::Id(spec.instance_id.clone());
    let made_here = existing.is_none();
    if made_here {
        if let Some(owner) = name_owner {
            return Err(ProviderError::conflict(format!(
                "a domain named {:?} already exists and belongs to {}; pick another name",
                spec.name,
                owner
                    .map(|o| format!("Berth instance {o}"))
                    .unwrap_or_else(|| "something other than Berth".into())
            )));
        }
        if let Err(e) = make(p, spec, &template, &user, accel.domain_type, progress).await {
            unwind(p, &id).await;
            return Err(e);
        }
    } else {
        event(progress, Stage::CloneTemplate, StagePhase::Skipped, existing.clone());
        event(progress, Stage::ConfigureVm, StagePhase::Skipped, existing);
    }
    match start_and_wait(p, spec, &id, progress).await {
        Ok(i) => Ok(i),
        Err(e) => {
            if made_here {
                unwind(p, &id).await;
            }
            Err(e)
        }
    }
}

/// The disk, the seed and the domain definition.
async fn make(
    p: &LibvirtProvider,
    spec: &VmSpec,
    template: &TemplateImage,
    user: &str,
    domain_type: &str,
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
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "removed the files of an interrupted create"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot clear", e)),
    }
    std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", e))?;
    let size = spec.disk_gib << 30;
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
    let network = p.cfg.attachment();
    let console_log = dir.join(CONSOLE_LOG);
    let xml = domain_xml(&DomainPlan {
        name: &spec.name,
        instance_id: &spec.instance_id,
        template: &template.id,
        domain_type,
        machine: &p.cfg.machine,
        cores: spec.cores,
        max_cores: p.cfg.max_cores.unwrap_or(spec.cores),
        memory_mib: spec.memory_mib,
        max_memory_mib: p.cfg.max_memory_mib.unwrap_or(spec.memory_mib),
        disk: &disk,
        seed: &seed,
        console_log: &console_log,
        network: &network,
    });
    p.lv.call("defining the domain", move |c| {
        c.define_domain_xml(&xml).map(|_| ()).map_err(map_err)
    })
    .await?;
    event(progress, Stage::ConfigureVm, StagePhase::Completed, spec.name.clone());
    Ok(())
}

async fn start_and_wait(
    p: &LibvirtProvider,
    spec: &VmSpec,
    id: &InstanceRef,
    progress: &dyn ProgressSink,
) -> Result<Instance, ProviderError> {
    let was_running = p
        .with_owned("reading the state of", id, |f| f.dom.is_active().map_err(map_err))
        .await?;
    if !was_running {
        event(progress, Stage::StartVm, StagePhase::Started, spec.name.clone());
        p.with_owned("starting", id, |f| start_if_stopped(&f.dom)).await?;
        event(progress, Stage::StartVm, StagePhase::Completed, spec.name.clone());
    }
    event(progress, Stage::WaitNetwork, StagePhase::Started, spec.name.clone());
    let limit = std::time::Duration::from_secs(p.cfg.network_timeout_seconds);
    let console = p.instance_dir(&spec.instance_id).join(CONSOLE_LOG);
    let started = Instant::now();
    loop {
        let inst = p.read(id, true).await?;
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

/// Removes what a failed create made; failures are logged, the create's error is what counts.
async fn unwind(p: &LibvirtProvider, id: &InstanceRef) {
    let r = id.clone();
    let undefined =
        p.lv.call("removing the half-made domain", move |c| {
            if let Some(f) = domain::locate(c, &r)? {
                destroy_if_active(&f.dom)?;
                domain::undefine(&f.dom)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = undefined {
        tracing::warn!(instance = %id, error = %e, "could not remove the half-made domain");
    }
    if let InstanceRef::Id(i) = id {
        let dir = p.instance_dir(i);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove the half-made instance's files");
        }
    }
}
