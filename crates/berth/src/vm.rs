//! `berth vm …` and `berth ct …`: drive the configured backend directly.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use berth_core::{
    ErrorCode, GuestKind, InstanceId, InstanceRef, Ipv4Config, ListFilter, NetworkSpec, PowerOp, Provider,
    ProviderError, Resize, Scope, SshPublicKey, VmSpec,
};

use crate::cli::{CreateArgs, KindArg, OutputFormat, VmAction, VmArgs};
use crate::output::Printer;
use crate::progress::StageDisplay;

pub async fn run(
    args: VmArgs,
    config: &Path,
    output: OutputFormat,
    forced: Option<GuestKind>,
) -> anyhow::Result<ExitCode> {
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
    let config = match berth_agent::load_config(config) {
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
        VmAction::Create(_) => {
            let spec = spec.expect("spec is built for create");
            let display = StageDisplay::new(&spec, out.format() == OutputFormat::Human);
            let result = p.create(&spec, &display).await;
            display.finish(result.is_ok());
            let inst = result?;
            keep_password(&inst, password_out)?;
            out.instance(backend, &inst);
        }
        VmAction::List { all, .. } => {
            let list = p.list(ListFilter { all, kind: Some(kind) }).await?;
            out.instances(backend, &list);
        }
        VmAction::Describe { id } => {
            let r = resolve(p, &id).await?;
            out.instance(backend, &p.describe(&r).await?);
        }
        VmAction::Start { id } => power(p, &id, PowerOp::Start, out).await?,
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
        VmAction::Shutdown { id, timeout } => power(p, &id, PowerOp::Shutdown { timeout_secs: timeout }, out).await?,
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
            let r = resolve(p, &id).await?;
            let outcome = p.delete(&r).await?;
            out.deleted(&id, outcome);
        }
        VmAction::Complete { .. } | VmAction::Fail { .. } | VmAction::Cancel { .. } => {
            unreachable!("operator actions are handled by crate::operator")
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

/// An ID on the command line is Berth's instance id, or else the backend's own id (a VMID, a
/// Multipass name, a script's external id). The instance id wins when a machine carries it;
/// when neither names a machine, the instance id is used (so deleting it succeeds and the other
/// commands say NotFound). A transient failure is reported, never taken for absence.
async fn resolve(p: &Arc<dyn Provider>, s: &str) -> Result<InstanceRef, ProviderError> {
    let backend = InstanceRef::Backend(s.to_owned());
    let Ok(id) = InstanceId::parse(s) else {
        return Ok(backend);
    };
    match p.describe(&InstanceRef::Id(id.clone())).await {
        Ok(_) => return Ok(InstanceRef::Id(id)),
        Err(e) if e.code() != ErrorCode::NotFound => return Err(e),
        Err(_) => {}
    }
    match p.describe(&backend).await {
        Ok(_) => Ok(backend),
        Err(e) if e.is_retryable() => Err(e),
        Err(_) => Ok(InstanceRef::Id(id)),
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
