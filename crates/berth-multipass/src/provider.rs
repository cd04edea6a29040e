//! `MultipassProvider`: the Provider contract on top of the `multipass` CLI — create is
//! `info`-then-`launch` by the name derived from the instance id, then a wait for an address;
//! power and delete act only on `berth-` instances; `validate` is doctor's view of the binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, DeleteOutcome, ErrorCode, GuestKind, Instance, InstanceRef, Ipv4Config, ListFilter,
    PowerOp, ProgressSink, Provider, ProviderError, ReconfigureOutcome, Resize, Stage, StageEvent, StagePhase,
    Template, VmSpec,
};

use crate::cli::Cli;
use crate::config::{ConfigError, MultipassConfig, check_image, is_unix_user};
use crate::json::{self, InfoItem, MpState};
use crate::naming::{NAME_PREFIX, is_valid_name, name_for};

/// Multipass refuses less memory than this (`launch --memory`, minimum 128M).
const MIN_MEMORY_MIB: u64 = 128;
/// How often `wait_network` asks `info` for an address.
const NETWORK_POLL: Duration = Duration::from_millis(250);

/// The Multipass backend. Cheap to share behind an `Arc`; every call runs a fresh `multipass`.
pub struct MultipassProvider {
    cli: Cli,
}

impl MultipassProvider {
    /// Validates `config`, resolves relative paths against `base_dir` (the config file's
    /// directory, also the working directory of every call) and snapshots the `pass_env`
    /// variables. The binary itself is looked up at each call (and checked by `validate`), so
    /// installing Multipass later needs no restart.
    pub fn new(config: MultipassConfig, base_dir: impl AsRef<Path>) -> Result<MultipassProvider, ConfigError> {
        let base_dir = base_dir.as_ref();
        config.validate(base_dir)?;
        let base_dir = std::path::absolute(base_dir)
            .map_err(|e| ConfigError::new("binary", format!("cannot resolve {}: {e}", base_dir.display())))?;
        let env = berth_exec::child_env(&config.env, &config.pass_env);
        Ok(MultipassProvider {
            cli: Cli { config, base_dir, env },
        })
    }

    /// `info` for one instance; `None` when Multipass says it does not exist.
    async fn info(&self, name: &str) -> Result<Option<InfoItem>, ProviderError> {
        match self
            .cli
            .json(&["info", "--format", "json", name], |t| json::parse_info(t, name))
            .await
        {
            Ok(item) => Ok(Some(item)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The Multipass name a reference points at. Backend names must follow Multipass's name
    /// rule (so they can never be taken for an option).
    fn name_of(&self, r: &InstanceRef) -> Result<String, ProviderError> {
        match r {
            InstanceRef::Id(id) => Ok(name_for(id)),
            InstanceRef::Backend(b) if is_valid_name(b) => Ok(b.clone()),
            InstanceRef::Backend(b) => Err(ProviderError::not_found(format!(
                "{b:?} is not a Multipass instance name (a letter, then letters, digits and '-')"
            ))),
        }
    }

    /// The name of a machine Berth may change: derived from an id, or a `berth-` backend name.
    fn owned_name(&self, r: &InstanceRef) -> Result<String, ProviderError> {
        let name = self.name_of(r)?;
        if !name.starts_with(NAME_PREFIX) {
            return Err(ProviderError::conflict(format!(
                "Multipass instance {name} has no `{NAME_PREFIX}` name: Berth does not own it and will not change it"
            )));
        }
        Ok(name)
    }

    /// `info`, requiring a live (not deleted) instance.
    async fn existing(&self, r: &InstanceRef, name: &str) -> Result<InfoItem, ProviderError> {
        match self.info(name).await? {
            Some(item) if item.state != MpState::Deleted => Ok(item),
            Some(_) => Err(ProviderError::not_found(format!(
                "{r}: Multipass instance {name} is deleted (in Multipass's trash)"
            ))),
            None => Err(ProviderError::not_found(format!("{r}: no Multipass instance {name}"))),
        }
    }

    fn check_spec(&self, spec: &VmSpec) -> Result<String, ProviderError> {
        spec.validate()?;
        if spec.kind != GuestKind::Vm {
            return Err(ProviderError::invalid(
                "kind",
                format!("Multipass makes VMs only (got {})", spec.kind),
            ));
        }
        if spec.memory_mib < MIN_MEMORY_MIB {
            return Err(ProviderError::invalid(
                "memory_mib",
                format!(
                    "Multipass needs at least {MIN_MEMORY_MIB} MiB (got {})",
                    spec.memory_mib
                ),
            ));
        }
        if let Ipv4Config::Static { .. } = spec.network.ipv4 {
            return Err(ProviderError::invalid(
                "ip",
                "Multipass assigns addresses by DHCP on its own network; static addresses are not supported",
            ));
        }
        if spec.network.ipv6.is_some() {
            return Err(ProviderError::invalid(
                "ip6",
                "the Multipass backend does not configure IPv6",
            ));
        }
        if !spec.network.nameservers.is_empty() {
            return Err(ProviderError::invalid(
                "nameservers",
                "Multipass's network provides DNS; custom nameservers are not supported",
            ));
        }
        let image = spec.template.clone().unwrap_or_else(|| self.cli.config.image.clone());
        check_image("template", &image).map_err(|e| ProviderError::invalid("template", e.message))?;
        let user = spec.user.clone().unwrap_or_else(|| self.cli.config.user.clone());
        if !is_unix_user(&user) {
            return Err(ProviderError::invalid(
                "user",
                format!("not a Unix user name: {user:?}"),
            ));
        }
        Ok(image)
    }

    async fn launch(&self, spec: &VmSpec, name: &str, image: &str) -> Result<(), ProviderError> {
        let user = spec.user.as_deref().unwrap_or(&self.cli.config.user);
        let user_data = crate::cloudinit::user_data(spec, user);
        let cpus = spec.cores.to_string();
        let memory = format!("{}M", spec.memory_mib);
        let disk = format!("{}G", spec.disk_gib);
        let wait = self.cli.config.launch_timeout_seconds.to_string();
        let args = [
            "launch",
            "--name",
            name,
            "--cpus",
            &cpus,
            "--memory",
            &memory,
            "--disk",
            &disk,
            "--timeout",
            &wait,
            "--cloud-init",
            "-",
            image,
        ];
        // The client gets a little longer than the daemon's own --timeout, so the daemon's
        // message (not a kill) reports a slow boot.
        let timeout = self.cli.launch_timeout() + Duration::from_secs(30);
        self.cli
            .run(&args, Some(user_data.into_bytes()), timeout)
            .await
            .map(|_| ())
    }

    /// Polls `info` until the instance reports an IPv4 address.
    async fn wait_network(&self, name: &str) -> Result<Instance, ProviderError> {
        let limit = self.cli.launch_timeout();
        let started = Instant::now();
        loop {
            let item = self
                .info(name)
                .await?
                .ok_or_else(|| ProviderError::not_found(format!("Multipass instance {name} disappeared")))?;
            if item.ipv4.is_some() && item.state == MpState::Running {
                return Ok(item.to_instance());
            }
            if started.elapsed() >= limit {
                return Err(ProviderError::Timeout {
                    what: format!(
                        "waiting for Multipass instance {name} to report an IPv4 address (state {:?})",
                        item.state
                    ),
                    after: limit,
                });
            }
            tokio::time::sleep(NETWORK_POLL).await;
        }
    }

    /// Removes what a failed create made; failures are logged, the create's error is what counts.
    async fn unwind(&self, name: &str) {
        match self.purge(name).await {
            Ok(_) => tracing::info!(instance = %name, "removed the half-made instance"),
            Err(e) => tracing::warn!(instance = %name, error = %e, "could not remove the half-made instance"),
        }
    }

    async fn purge(&self, name: &str) -> Result<DeleteOutcome, ProviderError> {
        match self.cli.run(&["delete", "--purge", name], None, self.cli.quick()).await {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(DeleteOutcome::AlreadyAbsent),
            Err(e) => Err(e),
        }
    }

    async fn simple(&self, verb: &str, name: &str, timeout: Duration) -> Result<(), ProviderError> {
        self.cli.run(&[verb, name], None, timeout).await.map(|_| ())
    }
}

fn event(stage: Stage, phase: StagePhase, detail: Option<String>) -> StageEvent {
    StageEvent { stage, phase, detail }
}

#[async_trait]
impl Provider for MultipassProvider {
    fn backend(&self) -> &'static str {
        "multipass"
    }

    async fn validate(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let binary = match self.cli.program() {
            Err(e) => {
                checks.push(Check::fail("multipass binary", e.to_string()));
                checks.push(Check::fail("multipass daemon", "skipped: no multipass binary"));
                return checks;
            }
            Ok(p) => p,
        };
        let ok = match std::fs::metadata(&binary) {
            Err(e) => Check::fail("multipass binary", format!("{}: {e}", binary.display())),
            Ok(m) if !m.is_file() => Check::fail("multipass binary", format!("{} is not a file", binary.display())),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Check::fail(
                "multipass binary",
                format!("{} is not executable (chmod +x it)", binary.display()),
            ),
            Ok(_) => Check::ok("multipass binary", format!("{} is executable", binary.display())),
        };
        let binary_ok = ok.status == berth_core::CheckStatus::Ok;
        checks.push(ok);
        if !binary_ok {
            checks.push(Check::fail("multipass daemon", "skipped: fix the binary first"));
            return checks;
        }
        checks.push(
            match self
                .cli
                .json(&["version", "--format", "json"], json::parse_version)
                .await
            {
                Ok(v) => match v.multipassd {
                    Some(d) => Check::ok(
                        "multipass daemon",
                        format!("multipass {} talks to multipassd {d}", v.multipass),
                    ),
                    None => Check::fail(
                        "multipass daemon",
                        format!(
                            "multipass {} answered but multipassd did not (is the daemon running?)",
                            v.multipass
                        ),
                    ),
                },
                Err(e) => Check::fail("multipass daemon", e.to_string()),
            },
        );
        checks
    }

    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        Ok(Capabilities {
            power: true,
            vms: true,
            containers: false,
            graceful_shutdown: true,
            reboot: true,
            reconfigure: false,
            static_ip: false,
            ipv6: false,
            list_templates: true,
            capacity: false,
            pools: false,
        })
    }

    async fn create(&self, spec: &VmSpec, progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        let image = self.check_spec(spec)?;
        let name = name_for(&spec.instance_id);
        let mut existing = self.info(&name).await?;
        if existing.as_ref().is_some_and(|i| i.state == MpState::Deleted) {
            // Left in the trash by an earlier delete without --purge: it holds the name.
            self.purge(&name).await?;
            existing = None;
        }
        let mut launched_here = false;
        match existing {
            None => {
                progress.event(event(
                    Stage::CloneTemplate,
                    StagePhase::Started,
                    Some(format!("multipass launch {image} as {name}")),
                ));
                match self.launch(spec, &name, &image).await {
                    Ok(()) => launched_here = true,
                    // An interrupted earlier create got the daemon going: resume that instance.
                    Err(e) if e.code() == ErrorCode::Conflict => {}
                    Err(e) => {
                        self.unwind(&name).await;
                        return Err(e);
                    }
                }
                progress.event(event(Stage::CloneTemplate, StagePhase::Completed, Some(name.clone())));
            }
            Some(item) => {
                progress.event(event(Stage::CloneTemplate, StagePhase::Skipped, Some(name.clone())));
                if matches!(item.state, MpState::Stopped | MpState::Suspended) {
                    progress.event(event(Stage::StartVm, StagePhase::Started, Some(name.clone())));
                    self.simple("start", &name, self.cli.launch_timeout()).await?;
                    progress.event(event(Stage::StartVm, StagePhase::Completed, Some(name.clone())));
                }
            }
        }
        progress.event(event(Stage::WaitNetwork, StagePhase::Started, Some(name.clone())));
        let inst = match self.wait_network(&name).await {
            Ok(inst) => inst,
            Err(e) => {
                if launched_here {
                    self.unwind(&name).await;
                }
                return Err(e);
            }
        };
        progress.event(event(
            Stage::WaitNetwork,
            StagePhase::Completed,
            inst.ipv4.map(|a| a.to_string()),
        ));
        Ok(Instance {
            instance_id: Some(spec.instance_id.clone()),
            login_user: Some(spec.user.clone().unwrap_or_else(|| self.cli.config.user.clone())),
            ..inst
        })
    }

    async fn describe(&self, id: &InstanceRef) -> Result<Instance, ProviderError> {
        let name = self.name_of(id)?;
        let mut inst = self.existing(id, &name).await?.to_instance();
        if let InstanceRef::Id(i) = id {
            // Hashed names do not carry the id; the caller just gave it.
            inst.instance_id = Some(i.clone());
        }
        Ok(inst)
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        let items = self.cli.json(&["list", "--format", "json"], json::parse_list).await?;
        if filter.kind == Some(GuestKind::Container) {
            return Ok(Vec::new());
        }
        Ok(items
            .iter()
            .filter(|i| i.state != MpState::Deleted)
            .map(|i| i.to_instance())
            .filter(|i| filter.all || i.instance_id.is_some())
            .collect())
    }

    async fn power(&self, id: &InstanceRef, op: PowerOp) -> Result<Instance, ProviderError> {
        let name = self.owned_name(id)?;
        let item = self.existing(id, &name).await?;
        let quick = self.cli.quick();
        let stopped = item.state == MpState::Stopped;
        match op {
            PowerOp::Start if item.state != MpState::Running => {
                self.simple("start", &name, self.cli.launch_timeout()).await?
            }
            PowerOp::Stop if !stopped => self
                .cli
                .run(&["stop", "--force", &name], None, quick)
                .await
                .map(|_| ())?,
            PowerOp::Shutdown { timeout_secs } if !stopped => {
                let grace = Duration::from_secs(timeout_secs.max(1));
                match self.simple("stop", &name, grace).await {
                    Err(e) if e.code() == ErrorCode::Timeout => {
                        tracing::info!(instance = %name, "graceful stop timed out; forcing it off");
                        self.cli.run(&["stop", "--force", &name], None, quick).await?;
                    }
                    other => other?,
                }
            }
            PowerOp::Reboot if stopped => self.simple("start", &name, self.cli.launch_timeout()).await?,
            PowerOp::Reboot => self.simple("restart", &name, self.cli.launch_timeout()).await?,
            PowerOp::Start | PowerOp::Stop | PowerOp::Shutdown { .. } => {}
        }
        self.describe(id).await
    }

    async fn reconfigure(&self, id: &InstanceRef, _change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        Err(ProviderError::unsupported(format!(
            "reconfigure of {id}: not implemented for Multipass yet (resize by hand with `multipass set local.<name>.cpus=N` on a stopped instance)"
        )))
    }

    async fn delete(&self, id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        let name = match self.owned_name(id) {
            Ok(n) => n,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(DeleteOutcome::AlreadyAbsent),
            Err(e) => return Err(e),
        };
        self.purge(&name).await
    }

    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        self.cli.json(&["find", "--format", "json"], json::parse_find).await
    }

    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        Err(ProviderError::unsupported(
            "capacity: Multipass reports no host totals (its instances share the host with everything else)",
        ))
    }
}
