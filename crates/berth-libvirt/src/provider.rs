//! `LibvirtProvider`: the Provider contract on libvirt. Every mutation acts only on domains whose
//! `<metadata>` carries Berth's marker; describe works for any domain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, ConfigError, DeleteOutcome, ExecOutput, GuestKind, Instance, InstanceId,
    InstanceRef, ListFilter, PoolMark, PoolMode, PowerOp, PowerState, ProgressSink, Provider, ProviderError,
    ReconfigureOutcome, Resize, Template, VmSpec,
};
use tokio::sync::OnceCell;
use virt::sys;

use crate::accel::{Accel, ProbeError, local_qemu, probe_kvm};
use crate::config::{DomainTypeSetting, LibvirtConfig};
use crate::conn::{Libvirt, is_missing, map_err};
use crate::domain::{self, Found};
use crate::image::QemuImg;
use crate::templates::TemplateSource;

/// How often state is polled while waiting for a guest to power off or report an address.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// The libvirt backend. Cheap to share behind an `Arc`.
pub struct LibvirtProvider {
    pub(crate) cfg: LibvirtConfig,
    pub(crate) lv: Libvirt,
    pub(crate) qemu_img: QemuImg,
    accel: OnceCell<Accel>,
    host: OnceCell<String>,
    /// One operation per instance at a time (create, delete, power, reconfigure by id).
    locks: std::sync::Mutex<std::collections::HashMap<InstanceId, Arc<tokio::sync::Mutex<()>>>>,
}

impl LibvirtProvider {
    /// Validates `cfg` (relative paths resolve against `base_dir`, the config file's directory).
    /// Nothing is contacted until the first call.
    pub fn new(mut cfg: LibvirtConfig, base_dir: impl AsRef<Path>) -> Result<LibvirtProvider, ConfigError> {
        let base_dir = std::path::absolute(base_dir.as_ref())
            .map_err(|e| ConfigError::new("images_dir", format!("cannot resolve the config's directory: {e}")))?;
        cfg.validate(&base_dir)?;
        Ok(LibvirtProvider {
            lv: Libvirt::new(&cfg.uri),
            qemu_img: QemuImg {
                program: cfg.qemu_img.clone(),
            },
            cfg,
            accel: OnceCell::new(),
            host: OnceCell::new(),
            locks: Default::default(),
        })
    }

    /// Waits until no other operation on `id` runs in this process, then holds it off.
    pub(crate) async fn lock_instance(&self, id: &InstanceId) -> InstanceGuard<'_> {
        let m = self
            .locks
            .lock()
            .expect("instance locks")
            .entry(id.clone())
            .or_default()
            .clone();
        let guard = m.clone().lock_owned().await;
        InstanceGuard {
            provider: self,
            id: id.clone(),
            guard: Some(guard),
        }
    }

    async fn lock_ref(&self, r: &InstanceRef) -> Option<InstanceGuard<'_>> {
        match r {
            InstanceRef::Id(id) => Some(self.lock_instance(id).await),
            InstanceRef::Backend(_) => None,
        }
    }

    pub fn config(&self) -> &LibvirtConfig {
        &self.cfg
    }

    /// The domain type guests get, decided once (config, or the KVM probe) and remembered.
    pub async fn accel(&self) -> Result<Accel, ProviderError> {
        self.accel.get_or_try_init(|| self.decide_accel()).await.cloned()
    }

    async fn decide_accel(&self) -> Result<Accel, ProviderError> {
        let configured = |t: &'static str| Accel {
            domain_type: t,
            reason: "set by domain_type in the config".into(),
        };
        match self.cfg.domain_type {
            DomainTypeSetting::Kvm => return Ok(configured("kvm")),
            DomainTypeSetting::Qemu => return Ok(configured("qemu")),
            DomainTypeSetting::Auto => {}
        }
        let caps = self
            .lv
            .call("reading domain capabilities", |c| {
                Ok(c.domain_capabilities(None, Some("x86_64"), None, Some("kvm"), 0)
                    .map_err(map_err))
            })
            .await?;
        let caps = match caps {
            Ok(xml) => xml,
            // Not a definite answer: not remembered, asked again next time.
            Err(e @ (ProviderError::Unavailable { .. } | ProviderError::Unauthorized { .. })) => return Err(e),
            Err(e) => {
                return Ok(Accel {
                    domain_type: "qemu",
                    reason: format!("libvirt offers no KVM here ({e}); using TCG"),
                });
            }
        };
        let emulator = emulator_path(&caps).or_else(local_qemu);
        let Some(qemu) = emulator else {
            return Ok(Accel {
                domain_type: "kvm",
                reason: "libvirt offers KVM (no local emulator found to probe it)".into(),
            });
        };
        Ok(match probe_kvm(&qemu).await {
            Ok(took) => Accel {
                domain_type: "kvm",
                reason: format!("a probe guest ran under KVM in {} ms", took.as_millis()),
            },
            Err(ProbeError::Inconclusive(why)) => Accel {
                domain_type: "kvm",
                reason: format!("libvirt offers KVM; the probe could not run ({why})"),
            },
            Err(ProbeError::Broken(why)) => {
                tracing::warn!(%why, "KVM does not work on this host; guests run under TCG (slow)");
                Accel {
                    domain_type: "qemu",
                    reason: format!("KVM probe failed, using TCG: {why}"),
                }
            }
        })
    }

    pub(crate) fn templates(&self) -> TemplateSource<'_> {
        TemplateSource {
            images_dir: self.cfg.images_dir.as_deref(),
            pool: self.cfg.template_pool.as_deref(),
            qemu_img: &self.qemu_img,
            libvirt: &self.lv,
        }
    }

    /// The login user of `spec`'s guest: its own, else the configured one.
    pub(crate) fn user_of(&self, spec: &VmSpec) -> String {
        spec.user.clone().unwrap_or_else(|| self.cfg.user.clone())
    }

    /// The directory holding one instance's disk, seed and console log.
    pub fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.cfg.instances_dir.join(id.as_str())
    }

    pub(crate) async fn node(&self) -> Option<String> {
        self.host
            .get_or_try_init(|| self.lv.call("host name", |c| c.hostname().map_err(map_err)))
            .await
            .ok()
            .cloned()
    }

    /// The instance a reference names, with addresses when asked.
    pub(crate) async fn read(&self, r: &InstanceRef, with_addresses: bool) -> Result<Instance, ProviderError> {
        let r2 = r.clone();
        let inst = self
            .lv
            .call(&format!("describing {r}"), move |c| {
                let found = domain::locate(c, &r2)?.ok_or_else(|| ProviderError::not_found(format!("{r2}")))?;
                domain::instance(&found, with_addresses)
            })
            .await?;
        Ok(Instance {
            node: self.node().await,
            ..inst
        })
    }

    /// Runs `f` on the domain `r` names, which must carry Berth's marker.
    pub(crate) async fn with_owned<T, F>(&self, what: &str, r: &InstanceRef, f: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Found) -> Result<T, ProviderError> + Send + 'static,
    {
        let r2 = r.clone();
        self.lv
            .call(&format!("{what} {r}"), move |c| {
                let found = domain::locate(c, &r2)?.ok_or_else(|| ProviderError::not_found(format!("{r2}")))?;
                if found.facts.instance_id.is_none() {
                    return Err(ProviderError::conflict(format!(
                        "domain {} carries no Berth marker: Berth does not own it and will not change it",
                        found.facts.name
                    )));
                }
                f(&found)
            })
            .await
    }

    async fn state(&self, r: &InstanceRef) -> Result<PowerState, ProviderError> {
        self.with_owned("reading the state of", r, |f| domain::power_state(&f.dom))
            .await
    }

    /// Asks the guest to power off (agent, else ACPI); forces it off after `grace`.
    pub(crate) async fn shutdown(&self, r: &InstanceRef, grace: Duration) -> Result<(), ProviderError> {
        let asked = self
            .with_owned("shutting down", r, |f| {
                if !f.dom.is_active().map_err(map_err)? {
                    return Ok(None);
                }
                f.dom
                    .shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_GUEST_AGENT | sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                    .or_else(|_| f.dom.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN))
                    .or_else(|_| f.dom.shutdown())
                    .map_err(map_err)?;
                Ok(Some(f.facts.name.clone()))
            })
            .await?;
        let Some(name) = asked else {
            return Ok(());
        };
        // Poll by name: found once, not by scanning every domain's marker each time.
        let r = &InstanceRef::Backend(name);
        let started = Instant::now();
        while started.elapsed() < grace {
            if self.state(r).await? == PowerState::Stopped {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::info!(instance = %r, "graceful shutdown timed out; forcing the guest off");
        self.with_owned("forcing off", r, |f| destroy_if_active(&f.dom)).await
    }
}

/// Starts the domain unless it runs. A start that loses a race (another call, or an interrupted
/// create's start still finishing in libvirt) to a domain that then runs counts as done.
pub(crate) fn start_if_stopped(dom: &virt::domain::Domain) -> Result<(), ProviderError> {
    if dom.is_active().map_err(map_err)? {
        return Ok(());
    }
    match dom.create() {
        Ok(()) => Ok(()),
        Err(_) if dom.is_active().unwrap_or(false) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// Holds an instance's lock; forgets the lock when nobody else waits for it.
pub(crate) struct InstanceGuard<'a> {
    provider: &'a LibvirtProvider,
    id: InstanceId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for InstanceGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.provider.locks.lock().expect("instance locks");
        if locks.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.id);
        }
    }
}

pub(crate) fn destroy_if_active(dom: &virt::domain::Domain) -> Result<(), ProviderError> {
    match dom.is_active() {
        Ok(true) => match dom.destroy() {
            Ok(()) => Ok(()),
            // Powered off on its own between the two calls.
            Err(_) if !dom.is_active().unwrap_or(true) => Ok(()),
            Err(e) => Err(map_err(e)),
        },
        Ok(false) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// The emulator binary named in domain capabilities XML.
fn emulator_path(caps: &str) -> Option<PathBuf> {
    let doc = roxmltree::Document::parse(caps).ok()?;
    let path = doc.descendants().find(|n| n.has_tag_name("path"))?.text()?;
    Some(PathBuf::from(path.trim()))
}

fn bytes_of_mib(mib: u64) -> u64 {
    mib.saturating_mul(1 << 20)
}

#[async_trait]
impl Provider for LibvirtProvider {
    fn backend(&self) -> &'static str {
        "libvirt"
    }

    async fn validate(&self) -> Vec<Check> {
        crate::doctor::checks(self).await
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        Ok(Capabilities {
            power: true,
            vms: true,
            containers: false,
            graceful_shutdown: true,
            reboot: true,
            reconfigure: true,
            static_ip: true,
            ipv6: true,
            list_templates: true,
            capacity: true,
            pools: true,
        })
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        let mut inst = crate::create::create(self, spec, progress).await?;
        inst.login_user = Some(self.user_of(spec));
        Ok(inst)
    }

    async fn exec(&self, id: &InstanceRef, command: &str, timeout: Duration) -> Result<ExecOutput, ProviderError> {
        crate::exec::exec(self, id, command, timeout).await
    }

    async fn fill(
        &self,
        spec: &VmSpec,
        mark: &PoolMark,
        mode: PoolMode,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        crate::pool::fill(self, spec, mark, mode, progress).await
    }

    async fn take(
        &self,
        from: &InstanceId,
        mark: &PoolMark,
        mode: PoolMode,
        spec: &VmSpec,
        progress: &dyn ProgressSink,
    ) -> Result<Instance, ProviderError> {
        let mut inst = crate::pool::take(self, from, mark, mode, spec, progress).await?;
        inst.login_user = Some(self.user_of(spec));
        Ok(inst)
    }

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError> {
        self.read(id, true).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        if filter.kind == Some(GuestKind::Container) {
            return Ok(Vec::new());
        }
        let all = self
            .lv
            .call("listing domains", move |c| {
                let mut out = Vec::new();
                for found in domain::all(c)? {
                    if !filter.all && found.facts.instance_id.is_none() {
                        continue;
                    }
                    match domain::instance(&found, false) {
                        Ok(i) => out.push(i),
                        // Undefined while being listed.
                        Err(e) if e.code() == berth_core::ErrorCode::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            })
            .await?;
        let node = self.node().await;
        Ok(all
            .into_iter()
            .map(|i| Instance {
                node: node.clone(),
                ..i
            })
            .collect())
    }

    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        let _guard = self.lock_ref(id).await;
        match op {
            PowerOp::Start => self.with_owned("starting", id, |f| start_if_stopped(&f.dom)).await?,
            PowerOp::Stop => self.with_owned("stopping", id, |f| destroy_if_active(&f.dom)).await?,
            PowerOp::Shutdown { timeout_secs } => self.shutdown(id, Duration::from_secs(timeout_secs.max(1))).await?,
            PowerOp::Reboot => {
                self.with_owned("rebooting", id, |f| {
                    if !f.dom.is_active().map_err(map_err)? {
                        return start_if_stopped(&f.dom);
                    }
                    f.dom
                        .reboot(sys::VIR_DOMAIN_REBOOT_GUEST_AGENT | sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
                        .or_else(|_| f.dom.reboot(sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN))
                        .or_else(|_| f.dom.reboot(0))
                        .map_err(map_err)
                })
                .await?
            }
        }
        self.read(id, false).await
    }

    async fn reconfigure(&self, id: &InstanceRef, change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        let _guard = self.lock_ref(id).await;
        crate::reconfigure::reconfigure(self, id, change).await
    }

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        let _guard = self.lock_ref(id).await;
        let r = id.clone();
        // The domain is destroyed, its files removed, and only then is it undefined: a delete cut
        // off in between finds the domain (without its disk) and finishes. Returns the domain's
        // UUID (if there is one) and whose files directory goes.
        let (removed, files) = self
            .lv
            .call(&format!("deleting {id}"), move |c| {
                // Files nothing else uses: another domain (a copy with the same marker, or a
                // machine taken from a pool keeping its files in the pool machine's directory)
                // keeps them.
                let unused = |files: InstanceId, this: Option<&str>| -> Result<_, ProviderError> {
                    let used = domain::all(c)?
                        .iter()
                        .any(|f| f.facts.files_id() == Some(&files) && f.facts.uuid.as_deref() != this);
                    Ok((!used).then_some(files))
                };
                let Some(found) = domain::locate(c, &r)? else {
                    // Also when a create was cut before its domain was defined.
                    return match r {
                        InstanceRef::Id(i) => Ok((None, unused(i, None)?)),
                        InstanceRef::Backend(_) => Ok((None, None)),
                    };
                };
                let Some(files) = found.facts.files_id().cloned() else {
                    return Err(ProviderError::conflict(format!(
                        "domain {} carries no Berth marker: Berth does not own it and will not delete it",
                        found.facts.name
                    )));
                };
                destroy_if_active(&found.dom)?;
                let uuid = found.facts.uuid.clone().unwrap_or_default();
                let files = unused(files, Some(&uuid))?;
                Ok((Some(uuid), files))
            })
            .await?;
        let files_removed = match files {
            Some(owner) => crate::create::remove_instance_dir(&self.instance_dir(&owner), &owner)?,
            None => false,
        };
        if let Some(uuid) = removed.clone() {
            self.lv
                .call(&format!("undefining {id}"), move |c| {
                    match c.lookup_domain_by_uuid_string(&uuid) {
                        Ok(d) => domain::undefine(&d),
                        Err(e) if is_missing(&e) => Ok(()),
                        Err(e) => Err(map_err(e)),
                    }
                })
                .await?;
        }
        Ok(if removed.is_some() || files_removed {
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::AlreadyAbsent
        })
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        let node = self.node().await;
        Ok(self
            .templates()
            .list()
            .await?
            .into_iter()
            .map(|t| Template {
                name: t.id.clone(),
                id: t.id,
                kind: GuestKind::Vm,
                node: node.clone(),
                disk_gib: Some(t.virtual_size.div_ceil(1 << 30)),
                format: Some(t.format),
            })
            .collect())
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        let (cpus, total_kib, free_bytes, instances) = self
            .lv
            .call("reading host capacity", |c| {
                let info = c.node_info().map_err(map_err)?;
                let free = c.free_memory().map_err(map_err)?;
                let n = c.list_all_domains(0).map_err(map_err)?.len() as u32;
                Ok((info.cpus, info.memory, free, n))
            })
            .await?;
        let (disk_total, disk_free) = crate::doctor::disk_space(&self.cfg.instances_dir)?;
        let total_mib = total_kib / 1024;
        Ok(Capacity {
            cpus_total: cpus,
            memory_mib_total: total_mib,
            memory_mib_used: total_mib.saturating_sub(free_bytes >> 20),
            disk_gib_total: disk_total >> 30,
            disk_gib_free: disk_free >> 30,
            instances,
            node: None,
        })
    }
}

/// Whether `spec` fits the host at all: cores and memory beyond the machine are refused.
pub(crate) async fn check_host_fits(p: &LibvirtProvider, spec: &VmSpec) -> Result<(), ProviderError> {
    let (cpus, total_kib) =
        p.lv.call("reading the host's size", |c| {
            let i = c.node_info().map_err(map_err)?;
            Ok((i.cpus, i.memory))
        })
        .await?;
    if spec.cores > cpus {
        return Err(ProviderError::invalid(
            "cores",
            format!("the host has {cpus} CPUs; {} cores cannot run here", spec.cores),
        ));
    }
    // A guest may use up to its balloon maximum, so that is what must fit.
    let max = spec.memory_mib.max(p.cfg.max_memory_mib.unwrap_or(0));
    if bytes_of_mib(max) > total_kib.saturating_mul(1024) {
        return Err(ProviderError::invalid(
            "memory_mib",
            format!(
                "the host has {} MiB of memory; a guest of up to {max} MiB cannot run here",
                total_kib / 1024
            ),
        ));
    }
    Ok(())
}
