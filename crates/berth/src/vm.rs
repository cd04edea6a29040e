//! `berth vm …` and `berth ct …`: drive the configured backend directly.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_core::{
    ErrorCode, GuestKind, InstanceId, InstanceRef, Ipv4Config, ListFilter, NetworkSpec, PowerOp, Provider,
    ProviderError, Resize, Scope, SshPublicKey, VmSpec,
};

use crate::cli::{CreateArgs, KindArg, OutputFormat, VmAction, VmArgs};
use crate::output::Printer;
use crate::progress::StageDisplay;

pub async fn run(args: VmArgs, output: OutputFormat, forced: Option<GuestKind>) -> anyhow::Result<ExitCode> {
    // `berth vm` is about VMs unless --kind says otherwise; `berth ct` about containers.
    let kind = forced
        .or(args.kind.map(|k| match k {
            KindArg::Vm => GuestKind::Vm,
            KindArg::Container => GuestKind::Container,
        }))
        .unwrap_or_default();
    let out = Printer::new(output);
    // Bad flags are reported before the configuration is even read: nothing is touched.
    let spec = match &args.action {
        VmAction::Create(c) => match build_spec(c, kind) {
            Ok(s) => Some(s),
            Err(e) => return Ok(out.error(&e)),
        },
        _ => None,
    };
    let config = match berth_agent::load_config(&args.config.config) {
        Ok(c) => c,
        Err(e) => return Ok(out.config_error(&e)),
    };
    if crate::operator::is_operator_action(&args.action) {
        return crate::operator::run(&config, args.backend.as_deref(), args.action, &out).await;
    }
    let provider = match config
        .backend(args.backend.as_deref())
        .and_then(|b| berth_agent::build_provider(&config, b))
    {
        Ok(p) => p,
        Err(e) => return Ok(out.config_error(&e)),
    };
    if let Some(s) = spec.as_ref().filter(|s| s.ssh_keys.is_empty()) {
        eprintln!(
            "warning: no SSH key given (--ssh-key, --ssh-key-file): nobody can log in to {} by key",
            s.name
        );
    }
    if let (VmAction::Create(_), Some(agent)) = (&args.action, &config.agent) {
        // Said on stderr, so `--output json` stays one document.
        eprintln!(
            "note: an agent of {} drives this backend; this machine is made outside the control plane (id {}), \
             and the agent leaves it alone",
            agent.endpoint,
            spec.as_ref().map_or("", |s| s.instance_id.as_str())
        );
    }
    let password_out = match &args.action {
        VmAction::Create(c) => c.password_out.clone(),
        _ => None,
    };
    let result = dispatch(&provider, args.action, spec, kind, password_out.as_deref(), &out).await;
    Ok(match result {
        Ok(code) => code,
        Err(e) => out.error(&e),
    })
}

async fn dispatch(
    p: &Arc<dyn Provider>,
    action: VmAction,
    spec: Option<VmSpec>,
    kind: GuestKind,
    password_out: Option<&Path>,
    out: &Printer,
) -> Result<ExitCode, ProviderError> {
    let backend = p.backend();
    match action {
        VmAction::Create(c) => {
            let spec = spec.expect("spec is built for create");
            if c.instance_id.is_some() {
                same_machine(p, &spec).await?;
            }
            let display = StageDisplay::new(&spec, out.format() == OutputFormat::Human);
            let result = p.create(&spec, &display).await;
            display.finish(result.is_ok());
            let inst = result?;
            keep_password(&inst, password_out)?;
            out.instance(backend, &inst);
        }
        VmAction::List { all, .. } => {
            let list = p
                .list(ListFilter {
                    all,
                    kind: Some(kind),
                    ..Default::default()
                })
                .await?;
            out.instances(backend, &list);
        }
        VmAction::Describe { id } => {
            let r = resolve(p, &id).await?;
            out.instance(backend, &p.describe(&r).await?);
        }
        VmAction::Start { id, timeout } => {
            let wait = flag_duration("timeout", &timeout)?;
            let r = resolve(p, &id).await?;
            let inst = p.power(&r, PowerOp::Start).await?;
            out.instance(backend, &with_address(p, &r, inst, wait).await?);
        }
        VmAction::Stop { id } => power(p, &id, PowerOp::Stop, out).await?,
        VmAction::Reboot { id } => {
            // As `qm reboot`: a stopped machine is not rebooted (that would start it unasked).
            let r = resolve(p, &id).await?;
            if p.describe(&r).await?.state == berth_core::PowerState::Stopped {
                let noun = if kind == GuestKind::Container { "ct" } else { "vm" };
                return Err(ProviderError::conflict(format!(
                    "{id} is stopped; reboot needs it running (start it: berth {noun} start {id})"
                )));
            }
            power(p, &id, PowerOp::Reboot, out).await?
        }
        VmAction::Shutdown { id, timeout } => {
            let timeout_secs = flag_duration("timeout", &timeout)?.as_secs();
            power(p, &id, PowerOp::Shutdown { timeout_secs }, out).await?
        }
        VmAction::Resize {
            id,
            cores,
            memory_mib,
            disk_gib,
        } => {
            let change = Resize {
                cores,
                memory_mib,
                disk_gib,
            };
            change.validate()?;
            let r = resolve(p, &id).await?;
            let outcome = p.reconfigure(&r, &change).await?;
            out.reconfigured(&id, &outcome);
        }
        VmAction::Delete { id, yes } => {
            crate::cli_error::confirm(&format!("machine {id}"), yes).map_err(|m| ProviderError::invalid("yes", m))?;
            // By id only: a gone id must not fall through to a machine that happens to carry it
            // as its name.
            let r = resolve_id(p, &id).await?;
            let outcome = p.delete(&r).await?;
            out.deleted(&id, outcome);
        }
        VmAction::Complete { .. } | VmAction::Request { .. } | VmAction::Fail { .. } | VmAction::Cancel { .. } => {
            unreachable!("operator actions are handled by crate::operator")
        }
        VmAction::Snapshot {
            id,
            name,
            description,
            vmstate,
        } => {
            let r = resolve(p, &id).await?;
            let snap = p.snapshot(&r, &name, &description, vmstate).await?;
            out.snapshots(std::slice::from_ref(&snap));
        }
        VmAction::Snapshots { id } => {
            let r = resolve(p, &id).await?;
            out.snapshots(&p.snapshots(&r).await?);
        }
        VmAction::Rollback { id, name, start, yes } => {
            let r = resolve(p, &id).await?;
            crate::cli_error::confirm(&format!("what {id} wrote since snapshot {name} (rollback)"), yes)
                .map_err(|m| ProviderError::invalid("yes", m))?;
            out.instance(backend, &p.rollback(&r, &name, start).await?);
        }
        VmAction::SnapshotDelete { id, name } => {
            let r = resolve(p, &id).await?;
            let outcome = p.delete_snapshot(&r, &name).await?;
            out.deleted(&format!("snapshot {name} of {id}"), outcome);
        }
        VmAction::Migrate { id, to, online } => {
            let r = resolve(p, &id).await?;
            out.instance(backend, &p.migrate(&r, &to, online).await?);
        }
        VmAction::Templates => {
            let mut templates = p.list_templates().await?;
            templates.retain(|t| t.kind == kind);
            out.templates(&templates);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn power(p: &Arc<dyn Provider>, id: &str, op: PowerOp, out: &Printer) -> Result<(), ProviderError> {
    let r = resolve(p, id).await?;
    let inst = p.power(&r, op).await?;
    out.instance(p.backend(), &inst);
    Ok(())
}

/// A duration flag (`90s`, `5m`), as every command takes them.
fn flag_duration(field: &str, s: &str) -> Result<Duration, ProviderError> {
    crate::api_cmd::duration(&format!("--{field}"), s).map_err(|e| {
        let why = e
            .downcast_ref::<crate::cli_error::BadFlag>()
            .map_or_else(|| e.to_string(), |b| b.message.clone());
        ProviderError::invalid(field, why)
    })
}

/// After a start: the machine once it reports an address, or as it is when `wait` runs out
/// (said on stderr; the machine is running all the same).
async fn with_address(
    p: &Arc<dyn Provider>,
    r: &InstanceRef,
    mut inst: berth_core::Instance,
    wait: Duration,
) -> Result<berth_core::Instance, ProviderError> {
    let until = std::time::Instant::now() + wait;
    while inst.ipv4.is_none() && inst.ipv6.is_none() {
        if std::time::Instant::now() >= until {
            if !wait.is_zero() {
                eprintln!(
                    "note: no address reported after {}s; the machine is started (`berth vm describe` shows it once it has one)",
                    wait.as_secs()
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        match p.describe(r).await {
            Ok(now) => inst = now,
            // The machine is started; a passing failure to read it only delays the address.
            Err(e) if e.is_retryable() => tracing::debug!(error = %e, "reading the machine again"),
            Err(e) => return Err(e),
        }
    }
    Ok(inst)
}

/// `vm create` with an id a machine already carries is idempotent only for the same machine:
/// another name or kind, or (once it runs, so its configuration is done) another size, is
/// reported instead of the old machine being returned as if it were the one asked for.
async fn same_machine(p: &Arc<dyn Provider>, spec: &VmSpec) -> Result<(), ProviderError> {
    let existing = match p.describe(&InstanceRef::Id(spec.instance_id.clone())).await {
        Ok(i) => i,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let differences = spec_differences(spec, &existing, p.backend() != "multipass");
    if differences.is_empty() {
        return Ok(());
    }
    Err(ProviderError::conflict(format!(
        "{} already exists with another spec: {}; delete it first (berth vm delete {}) or choose another --instance-id",
        spec.instance_id,
        differences.join(", "),
        spec.instance_id
    )))
}

/// What differs between the machine asked for and the one carrying its id. `as_configured`:
/// the backend reports the name and sizes it was given (not so Multipass, which names machines
/// after their id and reports the memory and disk the guest sees): only kind and cores are
/// compared otherwise.
fn spec_differences(spec: &VmSpec, i: &berth_core::Instance, as_configured: bool) -> Vec<String> {
    let mut d = Vec::new();
    if as_configured && i.name != spec.name {
        d.push(format!("name {} (asked {})", i.name, spec.name));
    }
    if i.kind != spec.kind {
        d.push(format!("kind {} (asked {})", i.kind, spec.kind));
    }
    // Sizes are set while it is created: judged only once it runs.
    if i.state == berth_core::PowerState::Running {
        let mut size = |what: &str, has: Option<u64>, asked: u64| {
            if let Some(has) = has.filter(|h| *h != asked) {
                d.push(format!("{what} {has} (asked {asked})"));
            }
        };
        size("cores", i.cores.map(u64::from), u64::from(spec.cores));
        if as_configured {
            size("memory_mib", i.memory_mib, spec.memory_mib);
            size("disk_gib", i.disk_gib, spec.disk_gib);
        }
    }
    d
}

/// An ID on the command line is Berth's instance id, else the backend's own id (a VMID, a
/// Multipass name, a script's external id), else the name of exactly one of Berth's machines.
/// The instance id wins when a machine carries it; when nothing matches, the instance id is used
/// (so deleting it succeeds and the other commands say NotFound). A transient failure is
/// reported, never taken for absence.
async fn resolve(p: &Arc<dyn Provider>, s: &str) -> Result<InstanceRef, ProviderError> {
    match by_id(p, s).await? {
        Found::Yes(r) => Ok(r),
        Found::No(fallback) => by_name(p, s, fallback).await,
    }
}

/// As [`resolve`], without names.
async fn resolve_id(p: &Arc<dyn Provider>, s: &str) -> Result<InstanceRef, ProviderError> {
    Ok(match by_id(p, s).await? {
        Found::Yes(r) | Found::No(r) => r,
    })
}

enum Found {
    Yes(InstanceRef),
    /// Nothing carries it; the reference to use all the same.
    No(InstanceRef),
}

async fn by_id(p: &Arc<dyn Provider>, s: &str) -> Result<Found, ProviderError> {
    let backend = InstanceRef::Backend(s.to_owned());
    let id = InstanceId::parse(s).ok();
    if let Some(id) = &id {
        match p.describe(&InstanceRef::Id(id.clone())).await {
            Ok(_) => return Ok(Found::Yes(InstanceRef::Id(id.clone()))),
            Err(e) if e.code() != ErrorCode::NotFound => return Err(e),
            Err(_) => {}
        }
    }
    match p.describe(&backend).await {
        Ok(_) => Ok(Found::Yes(backend)),
        Err(e) if e.is_retryable() => Err(e),
        Err(_) => Ok(Found::No(id.map_or(backend, InstanceRef::Id))),
    }
}

/// The one machine of Berth's called `s`, else `fallback`.
async fn by_name(p: &Arc<dyn Provider>, s: &str, fallback: InstanceRef) -> Result<InstanceRef, ProviderError> {
    // A name, as people call their machines.
    let named: Vec<_> = match p.list(ListFilter::default()).await {
        Ok(all) => all
            .into_iter()
            .filter(|i| i.name == s && i.instance_id.is_some())
            .collect(),
        Err(e) if e.code() == ErrorCode::Unsupported => Vec::new(),
        Err(e) => return Err(e),
    };
    match named.as_slice() {
        [one] => Ok(InstanceRef::Id(one.instance_id.clone().expect("filtered"))),
        [] => Ok(fallback),
        several => Err(ProviderError::conflict(format!(
            "{} machines are called {s}: name one by its instance id ({})",
            several.len(),
            several
                .iter()
                .filter_map(|i| i.instance_id.as_ref().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A password the machine was born with is never printed: it goes to `--password-out` (a new
/// file, mode 0600) or, without that flag, is dropped with a warning.
fn keep_password(inst: &berth_core::Instance, out: Option<&Path>) -> Result<(), ProviderError> {
    let Some(pw) = &inst.root_password else {
        return Ok(());
    };
    match out {
        Some(path) => crate::keygen::write_new(path, format!("{}\n", pw.expose()).as_bytes(), 0o600)
            .map_err(|e| ProviderError::invalid("password_out", format!("{e:#}"))),
        None => {
            tracing::warn!(
                "the machine was given a root password; it is not shown (use --password-out FILE to keep it)"
            );
            Ok(())
        }
    }
}

fn build_spec(c: &CreateArgs, kind: GuestKind) -> Result<VmSpec, ProviderError> {
    let instance_id = match &c.instance_id {
        Some(s) => InstanceId::parse(s)?,
        None => InstanceId::generate_local(),
    };
    if instance_id.scope() == Scope::ControlPlane {
        return Err(ProviderError::invalid(
            "instance_id",
            format!(
                "{instance_id} is a UUID, the form of the control plane's instance ids: an agent on this \
                 backend would take the machine for one of its own and stop it; choose another (e.g. vm-web1)"
            ),
        ));
    }
    let mut ssh_keys = Vec::new();
    for k in &c.ssh_keys {
        ssh_keys.push(SshPublicKey::parse(k)?);
    }
    for f in &c.ssh_key_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))
            .map_err(|e| ProviderError::invalid("ssh_key_file", format!("{e:#}")))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            ssh_keys.push(SshPublicKey::parse(line)?);
        }
    }
    let spec = VmSpec {
        instance_id,
        name: c.name.clone(),
        kind,
        cores: c.cores,
        memory_mib: c.memory_mib,
        disk_gib: c.disk_gib,
        template: c.template.clone(),
        ssh_keys,
        user: c.user.clone(),
        network: NetworkSpec {
            ipv4: Ipv4Config::parse(&c.ip)?,
            ipv6: None,
            nameservers: c.nameserver.clone(),
        },
    };
    spec.validate()?;
    Ok(spec)
}
