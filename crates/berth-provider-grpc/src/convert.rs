//! Between Berth's types and the wire's, every field both ways. What comes off the wire is
//! checked: a bad value is a [`Bad`] naming the field, which the server answers as
//! `invalid_spec` (the caller sent it) and the client reports as the remote's fault.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use berth_core::{
    Capabilities, Capacity, Check, CheckStatus, DeleteOutcome, GuestKind, Instance, InstanceId, InstanceRef,
    Ipv4Config, Ipv6Config, ListFilter, NetworkSpec, PowerOp, PowerState, ProviderError, Resize, Secret, SshPublicKey,
    Stage, StageEvent, StagePhase, Template, VmSpec,
};

use crate::pb;

/// A value off the wire that does not fit Berth's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub field: String,
    pub reason: String,
}

impl Bad {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Bad {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn missing(field: &str) -> Self {
        Bad::new(field, "is required")
    }

    /// Sent by the caller (server side): the caller's spec is refused, naming the field.
    pub fn refused(self) -> ProviderError {
        ProviderError::invalid(self.field, self.reason)
    }

    /// Answered by the remote (client side): the remote broke the protocol.
    pub fn remote_fault(self) -> ProviderError {
        ProviderError::internal(format!(
            "the remote provider answered a bad {}: {}",
            self.field, self.reason
        ))
    }
}

impl From<ProviderError> for Bad {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::InvalidSpec { field, reason } => Bad { field, reason },
            other => Bad::new("", other.to_string()),
        }
    }
}

fn parse<T: FromStr>(field: &str, s: &str, expected: &str) -> Result<T, Bad> {
    s.parse()
        .map_err(|_| Bad::new(field, format!("expected {expected} (got {s:?})")))
}

fn opt_parse<T: FromStr>(field: &str, s: Option<&str>, expected: &str) -> Result<Option<T>, Bad> {
    s.map(|s| parse(field, s, expected)).transpose()
}

pub fn kind_to(k: GuestKind) -> i32 {
    match k {
        GuestKind::Vm => pb::GuestKind::Vm as i32,
        GuestKind::Container => pb::GuestKind::Container as i32,
    }
}

/// Unspecified is a VM (proto3's zero, and Berth's default kind).
pub fn kind_from(field: &str, v: i32) -> Result<GuestKind, Bad> {
    match pb::GuestKind::try_from(v) {
        Ok(pb::GuestKind::Unspecified | pb::GuestKind::Vm) => Ok(GuestKind::Vm),
        Ok(pb::GuestKind::Container) => Ok(GuestKind::Container),
        Err(_) => Err(Bad::new(field, format!("expected a GuestKind (got {v})"))),
    }
}

fn state_to(s: PowerState) -> i32 {
    (match s {
        PowerState::Running => pb::PowerState::Running,
        PowerState::Stopped => pb::PowerState::Stopped,
        PowerState::Paused => pb::PowerState::Paused,
        PowerState::Provisioning => pb::PowerState::Provisioning,
        PowerState::Unknown => pb::PowerState::Unknown,
    }) as i32
}

/// A state this side does not know (a newer server's) is `unknown`, not an error.
fn state_from(v: i32) -> PowerState {
    match pb::PowerState::try_from(v) {
        Ok(pb::PowerState::Running) => PowerState::Running,
        Ok(pb::PowerState::Stopped) => PowerState::Stopped,
        Ok(pb::PowerState::Paused) => PowerState::Paused,
        Ok(pb::PowerState::Provisioning) => PowerState::Provisioning,
        _ => PowerState::Unknown,
    }
}

pub fn ref_to(r: &InstanceRef) -> pb::InstanceRef {
    pb::InstanceRef {
        r#ref: Some(match r {
            InstanceRef::Id(id) => pb::instance_ref::Ref::InstanceId(id.to_string()),
            InstanceRef::Backend(b) => pb::instance_ref::Ref::BackendId(b.clone()),
        }),
    }
}

pub fn ref_from(r: Option<pb::InstanceRef>) -> Result<InstanceRef, Bad> {
    match r.and_then(|r| r.r#ref) {
        Some(pb::instance_ref::Ref::InstanceId(id)) => Ok(InstanceRef::Id(InstanceId::parse(&id)?)),
        Some(pb::instance_ref::Ref::BackendId(b)) if !b.is_empty() => Ok(InstanceRef::Backend(b)),
        _ => Err(Bad::new("id", "expected an instance_id or a backend_id")),
    }
}

pub fn instance_to(i: &Instance) -> pb::Instance {
    pb::Instance {
        instance_id: i.instance_id.as_ref().map(ToString::to_string),
        backend_id: i.backend_id.clone(),
        kind: kind_to(i.kind),
        node: i.node.clone(),
        name: i.name.clone(),
        state: state_to(i.state),
        ipv4: i.ipv4.map(|a| a.to_string()),
        ipv6: i.ipv6.map(|a| a.to_string()),
        cores: i.cores,
        memory_mib: i.memory_mib,
        disk_gib: i.disk_gib,
        ssh_port: i.ssh_port.map(u32::from),
        login_user: i.login_user.clone(),
        root_password: i.root_password.as_ref().map(|p| p.expose().to_owned()),
    }
}

pub fn instance_from(i: pb::Instance) -> Result<Instance, Bad> {
    let ssh_port = i
        .ssh_port
        .map(|p| u16::try_from(p).map_err(|_| Bad::new("ssh_port", format!("expected a port (got {p})"))))
        .transpose()?;
    Ok(Instance {
        instance_id: i.instance_id.as_deref().map(InstanceId::parse).transpose()?,
        backend_id: i.backend_id,
        kind: kind_from("kind", i.kind)?,
        node: i.node,
        name: i.name,
        state: state_from(i.state),
        ipv4: opt_parse::<Ipv4Addr>("ipv4", i.ipv4.as_deref(), "an IPv4 address")?,
        ipv6: opt_parse::<Ipv6Addr>("ipv6", i.ipv6.as_deref(), "an IPv6 address")?,
        cores: i.cores,
        memory_mib: i.memory_mib,
        disk_gib: i.disk_gib,
        ssh_port,
        login_user: i.login_user,
        root_password: i.root_password.map(Secret::new),
        pool: None,
    })
}

pub fn spec_to(s: &VmSpec) -> pb::VmSpec {
    let static_to = |address: String, prefix_len: u8, gateway: Option<String>| pb::StaticAddress {
        address,
        prefix_len: u32::from(prefix_len),
        gateway,
    };
    let ipv4 = match s.network.ipv4 {
        Ipv4Config::Dhcp => pb::ipv4_config::Mode::Dhcp(pb::Dhcp {}),
        Ipv4Config::Static {
            address,
            prefix_len,
            gateway,
        } => pb::ipv4_config::Mode::Static(static_to(
            address.to_string(),
            prefix_len,
            gateway.map(|g| g.to_string()),
        )),
    };
    let ipv6 = s.network.ipv6.map(|c| pb::Ipv6Config {
        mode: Some(match c {
            Ipv6Config::Dhcp => pb::ipv6_config::Mode::Dhcp(pb::Dhcp {}),
            Ipv6Config::Auto => pb::ipv6_config::Mode::Auto(pb::Slaac {}),
            Ipv6Config::Static {
                address,
                prefix_len,
                gateway,
            } => pb::ipv6_config::Mode::Static(static_to(
                address.to_string(),
                prefix_len,
                gateway.map(|g| g.to_string()),
            )),
        }),
    });
    pb::VmSpec {
        instance_id: s.instance_id.to_string(),
        name: s.name.clone(),
        kind: kind_to(s.kind),
        cores: s.cores,
        memory_mib: s.memory_mib,
        disk_gib: s.disk_gib,
        template: s.template.clone(),
        ssh_keys: s.ssh_keys.iter().map(|k| k.as_str().to_owned()).collect(),
        user: s.user.clone(),
        network: Some(pb::NetworkSpec {
            ipv4: Some(pb::Ipv4Config { mode: Some(ipv4) }),
            ipv6,
            nameservers: s.network.nameservers.iter().map(ToString::to_string).collect(),
        }),
    }
}

fn prefix(field: &str, p: u32, max: u8) -> Result<u8, Bad> {
    u8::try_from(p)
        .ok()
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| Bad::new(field, format!("prefix length must be 1-{max} (got {p})")))
}

/// The spec as sent, checked as Berth checks every spec (`VmSpec::validate`).
pub fn spec_from(s: pb::VmSpec) -> Result<VmSpec, Bad> {
    let net = s.network.unwrap_or_default();
    let ipv4 = match net.ipv4.and_then(|c| c.mode) {
        None | Some(pb::ipv4_config::Mode::Dhcp(_)) => Ipv4Config::Dhcp,
        Some(pb::ipv4_config::Mode::Static(a)) => Ipv4Config::Static {
            address: parse("ip", &a.address, "an IPv4 address")?,
            prefix_len: prefix("ip", a.prefix_len, 32)?,
            gateway: opt_parse("ip", a.gateway.as_deref(), "an IPv4 gateway address")?,
        },
    };
    let ipv6 = match net.ipv6.map(|c| c.mode) {
        None => None,
        Some(None) => return Err(Bad::new("ip6", "expected dhcp, auto or static")),
        Some(Some(pb::ipv6_config::Mode::Dhcp(_))) => Some(Ipv6Config::Dhcp),
        Some(Some(pb::ipv6_config::Mode::Auto(_))) => Some(Ipv6Config::Auto),
        Some(Some(pb::ipv6_config::Mode::Static(a))) => Some(Ipv6Config::Static {
            address: parse("ip6", &a.address, "an IPv6 address")?,
            prefix_len: prefix("ip6", a.prefix_len, 128)?,
            gateway: opt_parse("ip6", a.gateway.as_deref(), "an IPv6 gateway address")?,
        }),
    };
    let nameservers = net
        .nameservers
        .iter()
        .map(|n| parse::<IpAddr>("nameservers", n, "an IP address"))
        .collect::<Result<_, _>>()?;
    let spec = VmSpec {
        instance_id: InstanceId::parse(&s.instance_id)?,
        name: s.name,
        kind: kind_from("kind", s.kind)?,
        cores: s.cores,
        memory_mib: s.memory_mib,
        disk_gib: s.disk_gib,
        template: s.template,
        ssh_keys: s
            .ssh_keys
            .iter()
            .map(|k| SshPublicKey::parse(k))
            .collect::<Result<_, _>>()?,
        user: s.user,
        network: NetworkSpec {
            ipv4,
            ipv6,
            nameservers,
        },
    };
    spec.validate()?;
    Ok(spec)
}

pub fn filter_to(f: ListFilter) -> pb::ListRequest {
    pb::ListRequest {
        all: f.all,
        kind: f.kind.map(kind_to),
        without_addresses: f.without_addresses,
    }
}

pub fn filter_from(r: &pb::ListRequest) -> Result<ListFilter, Bad> {
    Ok(ListFilter {
        all: r.all,
        kind: r.kind.map(|k| kind_from("kind", k)).transpose()?,
        without_addresses: r.without_addresses,
    })
}

pub fn power_to(op: PowerOp) -> pb::power_request::Op {
    use pb::power_request::Op;
    match op {
        PowerOp::Start => Op::Start(pb::Start {}),
        PowerOp::Stop => Op::Stop(pb::Stop {}),
        PowerOp::Shutdown { timeout_secs } => Op::Shutdown(pb::Shutdown { timeout_secs }),
        PowerOp::Reboot => Op::Reboot(pb::Reboot {}),
    }
}

pub fn power_from(op: Option<pb::power_request::Op>) -> Result<PowerOp, Bad> {
    use pb::power_request::Op;
    match op {
        Some(Op::Start(_)) => Ok(PowerOp::Start),
        Some(Op::Stop(_)) => Ok(PowerOp::Stop),
        Some(Op::Shutdown(s)) => Ok(PowerOp::Shutdown {
            timeout_secs: s.timeout_secs,
        }),
        Some(Op::Reboot(_)) => Ok(PowerOp::Reboot),
        None => Err(Bad::new("op", "expected start, stop, shutdown or reboot")),
    }
}

pub fn resize_from(r: &pb::ReconfigureRequest) -> Result<Resize, Bad> {
    let change = Resize {
        cores: r.cores,
        memory_mib: r.memory_mib,
        disk_gib: r.disk_gib,
    };
    change.validate()?;
    Ok(change)
}

pub fn delete_to(d: DeleteOutcome) -> i32 {
    (match d {
        DeleteOutcome::Deleted => pb::DeleteOutcome::Deleted,
        DeleteOutcome::AlreadyAbsent => pb::DeleteOutcome::AlreadyAbsent,
    }) as i32
}

pub fn delete_from(v: i32) -> Result<DeleteOutcome, Bad> {
    match pb::DeleteOutcome::try_from(v) {
        Ok(pb::DeleteOutcome::Deleted) => Ok(DeleteOutcome::Deleted),
        Ok(pb::DeleteOutcome::AlreadyAbsent) => Ok(DeleteOutcome::AlreadyAbsent),
        _ => Err(Bad::new(
            "outcome",
            format!("expected deleted or already_absent (got {v})"),
        )),
    }
}

pub fn template_to(t: &Template) -> pb::Template {
    pb::Template {
        id: t.id.clone(),
        name: t.name.clone(),
        kind: kind_to(t.kind),
        node: t.node.clone(),
        disk_gib: t.disk_gib,
        format: t.format.clone(),
    }
}

pub fn template_from(t: pb::Template) -> Result<Template, Bad> {
    Ok(Template {
        kind: kind_from("kind", t.kind)?,
        id: t.id,
        name: t.name,
        node: t.node,
        disk_gib: t.disk_gib,
        format: t.format,
    })
}

pub fn capacity_to(c: &Capacity) -> pb::HostCapacity {
    pb::HostCapacity {
        cpus_total: c.cpus_total,
        memory_mib_total: c.memory_mib_total,
        memory_mib_used: c.memory_mib_used,
        disk_gib_total: c.disk_gib_total,
        disk_gib_free: c.disk_gib_free,
        instances: c.instances,
        node: c.node.clone(),
    }
}

pub fn capacity_from(c: pb::HostCapacity) -> Capacity {
    Capacity {
        cpus_total: c.cpus_total,
        memory_mib_total: c.memory_mib_total,
        memory_mib_used: c.memory_mib_used,
        disk_gib_total: c.disk_gib_total,
        disk_gib_free: c.disk_gib_free,
        instances: c.instances,
        node: c.node,
    }
}

pub fn capabilities_to(c: &Capabilities) -> pb::Capabilities {
    pb::Capabilities {
        power: c.power,
        vms: c.vms,
        containers: c.containers,
        graceful_shutdown: c.graceful_shutdown,
        reboot: c.reboot,
        reconfigure: c.reconfigure,
        static_ip: c.static_ip,
        ipv6: c.ipv6,
        list_templates: c.list_templates,
        capacity: c.capacity,
    }
}

pub fn capabilities_from(c: pb::Capabilities) -> Capabilities {
    Capabilities {
        power: c.power,
        vms: c.vms,
        containers: c.containers,
        graceful_shutdown: c.graceful_shutdown,
        reboot: c.reboot,
        reconfigure: c.reconfigure,
        static_ip: c.static_ip,
        ipv6: c.ipv6,
        list_templates: c.list_templates,
        capacity: c.capacity,
        pools: false,
    }
}

pub fn check_to(c: &Check) -> pb::Check {
    pb::Check {
        name: c.name.clone(),
        status: (match c.status {
            CheckStatus::Ok => pb::CheckStatus::Ok,
            CheckStatus::Warn => pb::CheckStatus::Warn,
            CheckStatus::Fail => pb::CheckStatus::Fail,
            CheckStatus::Skipped => pb::CheckStatus::Skipped,
        }) as i32,
        detail: c.detail.clone(),
    }
}

/// A status this side does not know fails the check: better refused than wrongly passed.
pub fn check_from(c: pb::Check) -> Check {
    let status = match pb::CheckStatus::try_from(c.status) {
        Ok(pb::CheckStatus::Ok) => CheckStatus::Ok,
        Ok(pb::CheckStatus::Warn) => CheckStatus::Warn,
        Ok(pb::CheckStatus::Skipped) => CheckStatus::Skipped,
        _ => CheckStatus::Fail,
    };
    Check {
        name: c.name,
        status,
        detail: c.detail,
    }
}

const STAGES: [(Stage, pb::Stage); 8] = [
    (Stage::CloneTemplate, pb::Stage::CloneTemplate),
    (Stage::ConfigureVm, pb::Stage::ConfigureVm),
    (Stage::StartVm, pb::Stage::StartVm),
    (Stage::WaitNetwork, pb::Stage::WaitNetwork),
    (Stage::PostProvision, pb::Stage::PostProvision),
    (Stage::Register, pb::Stage::Register),
    (Stage::WaitingForOperator, pb::Stage::WaitingForOperator),
    (Stage::Cleanup, pb::Stage::Cleanup),
];

const PHASES: [(StagePhase, pb::StagePhase); 3] = [
    (StagePhase::Started, pb::StagePhase::Started),
    (StagePhase::Completed, pb::StagePhase::Completed),
    (StagePhase::Skipped, pb::StagePhase::Skipped),
];

pub fn event_to(e: &StageEvent) -> pb::StageEvent {
    let stage = STAGES.iter().find(|(s, _)| *s == e.stage).map(|(_, p)| *p as i32);
    let phase = PHASES.iter().find(|(s, _)| *s == e.phase).map(|(_, p)| *p as i32);
    pb::StageEvent {
        stage: stage.unwrap_or_default(),
        phase: phase.unwrap_or_default(),
        detail: e.detail.clone(),
    }
}

/// `None` for a stage or phase this side does not know (a newer server's): progress is
/// informational, so it is left out rather than failing the create.
pub fn event_from(e: pb::StageEvent) -> Option<StageEvent> {
    let stage = STAGES.iter().find(|(_, p)| *p as i32 == e.stage)?.0;
    let phase = PHASES.iter().find(|(_, p)| *p as i32 == e.phase)?.0;
    Some(StageEvent {
        stage,
        phase,
        detail: e.detail,
    })
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
