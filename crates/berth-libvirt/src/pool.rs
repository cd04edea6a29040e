//! Warm pools on libvirt. `fill` is a create whose domain's marker carries the pool mark and,
//! kept stopped, is never started. `take` hands a pool machine to an instance in one libvirt
//! call, the commit point: a stopped machine's definition is replaced (the instance's marker,
//! size, and a new seed ISO with the customer's cloud-init data, for its first boot); a running
//! one's marker is replaced live and in its definition (`virDomainSetMetadata`). The machine
//! keeps its files in the pool machine's directory (the marker says whose). Then it is
//! personalised: a stopped one is renamed to the order's name, its disk grown, started; a running
//! one gets its host name and keys through the guest agent. A running domain keeps its libvirt
//! name (libvirt renames only stopped domains), as a running Proxmox guest keeps its PVE name.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_core::pool::{after_commit, personalise_script, personalised};
use berth_core::{
    Instance, InstanceId, InstanceRef, PoolMark, PoolMode, ProgressSink, ProviderError, Resize, Stage, StagePhase,
    VmSpec,
};
use virt::sys;

use crate::conn::{is_missing, map_err};
use crate::create::{check_spec, create_marked, definition, event, start_and_wait};
use crate::domain;
use crate::provider::LibvirtProvider;
use crate::seed::{seed_iso, write_atomic};
use crate::xml::{DomainFacts, Marker, NS};

/// How long the personalisation of a running pool machine may take (its agent answers already).
const PERSONALISE_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn fill(
    p: &LibvirtProvider,
    spec: &VmSpec,
    mark: &PoolMark,
    mode: PoolMode,
    progress: &dyn ProgressSink,
) -> Result<Instance, ProviderError> {
    let inst = create_marked(p, spec, Some((mark, mode)), progress).await?;
    if mode == PoolMode::Running {
        // A running pool machine is ready once orders can reach it through its agent.
        let by_name = InstanceRef::Backend(inst.backend_id.clone());
        let limit = Duration::from_secs(p.cfg.network_timeout_seconds);
        let why = "so the pool machine can be handed over";
        if let Err(e) = crate::exec::wait_agent(p, &by_name, Instant::now(), limit, why).await {
            let id = InstanceRef::Id(spec.instance_id.clone());
            if let Err(d) = berth_core::Provider::delete(p, &id).await {
                tracing::warn!(instance = %id, error = %d, "could not remove the pool machine without an agent");
            }
            return Err(e);
        }
    }
    Ok(inst)
}

pub async fn take(
    p: &LibvirtProvider,
    from: &InstanceId,
    mark: &PoolMark,
    mode: PoolMode,
    spec: &VmSpec,
    progress: &dyn ProgressSink,
) -> Result<Instance, ProviderError> {
    let (user, _) = check_spec(p, spec)?;
    let from_guard = p.lock_instance(from).await;
    let guard = p.lock_instance(&spec.instance_id).await;
    let (iid, f2, m2, name) = (spec.instance_id.clone(), from.clone(), mark.clone(), spec.name.clone());
    let found =
        p.lv.call("looking for the pool machine", move |c| {
            if let Some(f) = domain::owned(c, &iid)? {
                return Ok(Seen::Instance(f.facts));
            }
            let Some(f) = domain::owned(c, &f2)? else {
                return Ok(Seen::Gone("it is gone".to_owned()));
            };
            if let Some(why) = in_pool(&f, &m2, mode)? {
                return Ok(Seen::Gone(why));
            }
            // A stopped machine takes the order's name: refused now, before anything changed,
            // when another domain has it.
            if mode == PoolMode::Stopped && f.facts.name != name && !name_is_free(c, &name)? {
                return Err(ProviderError::conflict(format!(
                    "a domain named {name:?} already exists; pick another name"
                )));
            }
            Ok(Seen::InPool(f.facts))
        })
        .await?;
    let gone = |why: String| ProviderError::not_found(format!("pool machine {from} ({why})"));
    let facts = match found {
        // Taken before: the personalisation is finished.
        Seen::Instance(f) if f.files_owner.is_some() => {
            drop(from_guard);
            return personalise(p, spec, &f, mode, progress)
                .await
                .map_err(|e| after_commit(e, &mark.pool));
        }
        // Made by a create that followed a miss: that create resumes.
        Seen::Instance(_) => {
            drop((guard, from_guard));
            return crate::create::create(p, spec, progress).await;
        }
        Seen::Gone(why) => return Err(gone(why)),
        Seen::InPool(f) => f,
    };
    event(
        progress,
        Stage::CloneTemplate,
        StagePhase::Started,
        format!("taking {} from pool {}", facts.name, mark.pool),
    );
    let dir = p.instance_dir(from);
    let template = facts.template.clone().unwrap_or_default();
    let marker = || Marker {
        id: &spec.instance_id,
        template: &template,
        pool: None,
        files: Some(from),
    };
    // The commit: one libvirt call of this agent's, which holds the pool machine's lock, after
    // checking in the same call that the machine is still in the pool as found and that the
    // instance has no machine.
    let (iid, f2, m2) = (spec.instance_id.clone(), from.clone(), mark.clone());
    let check = move |c: &virt::connect::Connect| -> Result<Option<domain::Found>, ProviderError> {
        if domain::owned(c, &iid)?.is_some() {
            return Err(ProviderError::conflict(format!(
                "instance {iid} got a machine while pool machine {f2} was being handed to it"
            )));
        }
        match domain::owned(c, &f2)? {
            Some(f) if in_pool(&f, &m2, mode)?.is_none() => Ok(Some(f)),
            _ => Ok(None),
        }
    };
    let committed = match mode {
        PoolMode::Stopped => {
            let seed = customer_seed(&dir, spec, &user)?;
            let (uuid, pool_name) = (facts.uuid.clone(), facts.name.clone());
            let xml = definition(
                p,
                spec,
                marker(),
                &facts.domain_type,
                &dir,
                &seed,
                Some((&pool_name, uuid.as_deref())),
            );
            let done =
                p.lv.call("taking the pool machine", move |c| {
                    if check(c)?.is_none() {
                        return Ok(false);
                    }
                    c.define_domain_xml(&xml).map_err(map_err)?;
                    Ok(true)
                })
                .await;
            if !matches!(done, Ok(true)) {
                // Not the machine's seed: the customer's data does not stay in the pool.
                std::fs::remove_file(&seed).ok();
            }
            done?
        }
        PoolMode::Running => {
            let element = marker().element();
            p.lv.call("taking the pool machine", move |c| {
                let Some(f) = check(c)? else {
                    return Ok(false);
                };
                let flags = sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG;
                f.dom
                    .set_metadata(
                        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                        Some(&element),
                        Some("berth"),
                        Some(NS),
                        flags,
                    )
                    .map_err(map_err)?;
                Ok(true)
            })
            .await?
        }
    };
    if !committed {
        return Err(gone(format!("it left {mark} meanwhile")));
    }
    // The pool machine is no more; its keeper may go on.
    drop(from_guard);
    event(
        progress,
        Stage::CloneTemplate,
        StagePhase::Completed,
        format!("taken from pool {} ({})", mark.pool, facts.name),
    );
    let taken = DomainFacts {
        instance_id: Some(spec.instance_id.clone()),
        pool: None,
        files_owner: Some(from.clone()),
        ..facts
    };
    personalise(p, spec, &taken, mode, progress)
        .await
        .map_err(|e| after_commit(e, &mark.pool))
}

/// What a take finds.
enum Seen {
    /// The instance's machine: taken before, or made by a create.
    Instance(DomainFacts),
    /// The pool machine, ready to be taken.
    InPool(DomainFacts),
    /// Not to be taken, and why.
    Gone(String),
}

/// Why `f` cannot be taken from `mark`'s pool in `mode`, or `None` when it can.
fn in_pool(f: &domain::Found, mark: &PoolMark, mode: PoolMode) -> Result<Option<String>, ProviderError> {
    if f.facts.pool.as_ref() != Some(mark) {
        return Ok(Some(format!("it is no longer in {mark}")));
    }
    let state = domain::power_state(&f.dom)?;
    Ok((state != mode.power_state()).then(|| format!("{} is {state}, not {mode} as its pool keeps it", f.facts.name)))
}

/// Writes the customer's seed ISO into the pool machine's directory `dir` under a name of its
/// own (until the new definition names it, the pool machine is unchanged), after removing any an
/// earlier take cut off left there: the customer's data never stays in the pool.
fn customer_seed(dir: &Path, spec: &VmSpec, user: &str) -> Result<PathBuf, ProviderError> {
    let io = |what: &str, e: std::io::Error| ProviderError::internal(format!("{what} {}: {e}", dir.display()));
    for e in std::fs::read_dir(dir).map_err(|e| io("cannot read", e))?.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with("seed-") && n.ends_with(".iso") {
            std::fs::remove_file(e.path()).map_err(|e| io("cannot remove a stale seed in", e))?;
        }
    }
    let seed = dir.join(format!("seed-{}.iso", spec.instance_id));
    write_atomic(&seed, &seed_iso(spec, user)?).map_err(|e| io("cannot write the seed ISO in", e))?;
    Ok(seed)
}

/// The rest of a take (also of one resumed after the commit point): a stopped machine gets the
/// order's name and is started (cloud-init runs its first boot with the seed); a running one gets
/// its host name and keys through the guest agent (idempotent). Either way the disk grows to the
/// order's size first (offline, or live).
async fn personalise(
    p: &LibvirtProvider,
    spec: &VmSpec,
    facts: &DomainFacts,
    mode: PoolMode,
    progress: &dyn ProgressSink,
) -> Result<Instance, ProviderError> {
    let id = InstanceRef::Id(spec.instance_id.clone());
    let grow = Resize {
        cores: None,
        memory_mib: None,
        disk_gib: Some(spec.disk_gib),
    };
    if mode == PoolMode::Stopped {
        event(progress, Stage::ConfigureVm, StagePhase::Started, spec.name.clone());
        let name = spec.name.clone();
        p.with_owned("renaming", &id, move |f| {
            if f.facts.name == name || f.dom.is_active().map_err(map_err)? {
                return Ok(());
            }
            f.dom.rename(&name, 0).map_err(|e| {
                ProviderError::conflict(format!("cannot rename {} to {name:?}: {}", f.facts.name, e.message()))
            })
        })
        .await?;
        crate::reconfigure::reconfigure(p, &id, &grow).await?;
        event(progress, Stage::ConfigureVm, StagePhase::Completed, spec.name.clone());
        return start_and_wait(p, spec, &id, progress).await;
    }
    event(
        progress,
        Stage::ConfigureVm,
        StagePhase::Started,
        format!(
            "putting the host name and SSH keys into {} through its guest agent",
            facts.name
        ),
    );
    // Stopped since (a host restart, a resumed take): started first; the command then waits for
    // its guest agent.
    p.with_owned("starting", &id, |f| crate::provider::start_if_stopped(&f.dom))
        .await?;
    crate::reconfigure::reconfigure(p, &id, &grow).await?;
    let keys: Vec<String> = spec.ssh_keys.iter().map(|k| k.as_str().to_owned()).collect();
    let user = p.user_of(spec);
    let script = personalise_script(&spec.name, &user, &keys);
    let out = crate::exec::exec(p, &id, &script, PERSONALISE_TIMEOUT)
        .await
        .map_err(|e| e.context(format!("personalising {}", facts.name)))?;
    personalised(&facts.name, &out)?;
    event(
        progress,
        Stage::ConfigureVm,
        StagePhase::Completed,
        format!("host name {}, {} SSH key(s)", spec.name, keys.len()),
    );
    start_and_wait(p, spec, &id, progress).await
}

/// Whether libvirt has no domain named `name`.
fn name_is_free(c: &virt::connect::Connect, name: &str) -> Result<bool, ProviderError> {
    match c.lookup_domain_by_name(name) {
        Ok(_) => Ok(false),
        Err(e) if is_missing(&e) => Ok(true),
        Err(e) => Err(map_err(e)),
    }
}
