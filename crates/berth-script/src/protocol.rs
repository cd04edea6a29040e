//! Protocol v1 on the wire: the request Berth writes to a script's stdin, the response it reads
//! from stdout, stage lines on stderr, and the checks that turn bad output into a clear error.

use std::net::{Ipv4Addr, Ipv6Addr};

use berth_core::{
    ErrorCode, GuestKind, Instance, InstanceId, NetworkSpec, PowerState, Secret, SshPublicKey, Stage, StageEvent,
    StagePhase, VmSpec,
};
use berth_exec::redact_secrets;
use serde::{Deserialize, Serialize};

use crate::config::Action;

/// The protocol version Berth speaks; sent as `"protocol": 1` in every request.
pub const PROTOCOL_VERSION: u32 = 1;

/// Prefix of a stderr line reporting a stage: `berth-stage: <stage> <started|completed|skipped> [detail]`.
pub const STAGE_PREFIX: &str = "berth-stage:";

/// How many bytes of bad output an error quotes (after redaction).
const SNIPPET: usize = 200;

#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub protocol: u32,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offering: Option<Offering>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester_ssh_pubkey: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_config: Option<InstanceConfig<'a>>,
}

impl<'a> Request<'a> {
    pub fn new(action: Action) -> Self {
        Request {
            protocol: PROTOCOL_VERSION,
            action,
            contract_id: None,
            external_id: None,
            offering: None,
            requester_ssh_pubkey: None,
            instance_config: None,
        }
    }

    /// A `provision` request for `spec`.
    pub fn provision(spec: &'a VmSpec) -> Self {
        Request {
            contract_id: Some(spec.instance_id.as_str()),
            offering: Some(Offering {
                id: None,
                cpu_cores: spec.cores,
                memory_gb: spec.memory_mib.div_ceil(1024),
                memory_mib: spec.memory_mib,
                storage_gb: spec.disk_gib,
                disk_gib: spec.disk_gib,
                bandwidth_mbps: None,
            }),
            requester_ssh_pubkey: spec.ssh_keys.first().map(SshPublicKey::as_str),
            instance_config: Some(InstanceConfig {
                name: &spec.name,
                kind: spec.kind,
                template: spec.template.as_deref(),
                user: spec.user.as_deref(),
                ssh_keys: &spec.ssh_keys,
                network: &spec.network,
            }),
            ..Request::new(Action::Provision)
        }
    }
}

/// The seed's offering, plus exact sizes (`memory_gb` is `memory_mib` rounded up).
#[derive(Debug, Serialize)]
pub(crate) struct Offering {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub cpu_cores: u32,
    pub memory_gb: u64,
    pub memory_mib: u64,
    pub storage_gb: u64,
    pub disk_gib: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct InstanceConfig<'a> {
    pub name: &'a str,
    pub kind: GuestKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    pub ssh_keys: &'a [SshPublicKey],
    pub network: &'a NetworkSpec,
}

/// A script's answer. Unknown fields are refused so typos (`ip_adress`) are caught.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Response {
    #[serde(default)]
    pub protocol: Option<u32>,
    pub success: bool,
    #[serde(default)]
    pub instance: Option<WireInstance>,
    #[serde(default)]
    pub instances: Option<Vec<WireInstance>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub retry_possible: Option<bool>,
    #[serde(default)]
    pub code: Option<ErrorCode>,
    /// With `code: invalid_spec`: the offending request field.
    #[serde(default)]
    pub field: Option<String>,
    /// With `code: rate_limited`.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
}

/// One machine as a script reports it. `root_password` is a [`Secret`]: it never prints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireInstance {
    pub external_id: String,
    #[serde(default)]
    pub ip_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub ipv6_address: Option<Ipv6Addr>,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub root_password: Option<Secret>,
    #[serde(default)]
    pub state: Option<PowerState>,
    #[serde(default)]
    pub contract_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cpu_cores: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub disk_gib: Option<u64>,
    /// The user to log in as by SSH.
    #[serde(default)]
    pub login_user: Option<String>,
}

impl WireInstance {
    /// Berth's view of it. `Err` says what is wrong with the shape.
    pub fn into_instance(self) -> Result<Instance, String> {
        if self.external_id.trim().is_empty() {
            return Err("instance.external_id is empty".into());
        }
        // It ends up in an `ssh user@address` line people paste: a user name, nothing else.
        if let Some(u) = self
            .login_user
            .as_deref()
            .filter(|u| !berth_core::spec::is_unix_user(u))
        {
            return Err(format!(
                "instance.login_user: {u:?} is not a Unix user name (lowercase letters, digits, '_' or '-', at most 32)"
            ));
        }
        let instance_id = match &self.contract_id {
            None => None,
            Some(c) => Some(InstanceId::parse(c).map_err(|e| format!("instance.contract_id: {e}"))?),
        };
        Ok(Instance {
            instance_id,
            name: self.name.clone().unwrap_or_else(|| self.external_id.clone()),
            backend_id: self.external_id,
            kind: GuestKind::Vm,
            node: None,
            state: self.state.unwrap_or(PowerState::Unknown),
            ipv4: self.ip_address,
            ipv6: self.ipv6_address,
            cores: self.cpu_cores,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            ssh_port: self.ssh_port,
            root_password: self.root_password,
            login_user: self.login_user,
            pool: None,
        })
    }
}

/// Parses `berth-stage: configure_vm started [detail]`; `None` for any other line. The script's
/// text (a bad line in the error, the detail) has secret-looking values redacted, since it goes
/// to logs and progress events.
pub(crate) fn parse_stage_line(line: &str) -> Option<Result<StageEvent, String>> {
    let rest = line.trim().strip_prefix(STAGE_PREFIX)?;
    let mut words = rest.split_whitespace();
    let (Some(stage), Some(phase)) = (words.next(), words.next()) else {
        return Some(Err(format!(
            "expected `{STAGE_PREFIX} <stage> <started|completed>`, got {:?}",
            redact_secrets(line)
        )));
    };
    let stage: Stage = match serde_json::from_value(serde_json::Value::String(stage.to_owned())) {
        Ok(s) => s,
        Err(_) => return Some(Err(format!("unknown stage {:?}", redact_secrets(stage)))),
    };
    let phase = match phase {
        "started" => StagePhase::Started,
        "completed" => StagePhase::Completed,
        "skipped" => StagePhase::Skipped,
        other => {
            return Some(Err(format!(
                "unknown phase {:?} (expected started, completed or skipped)",
                redact_secrets(other)
            )));
        }
    };
    let detail: Vec<&str> = words.collect();
    Some(Ok(StageEvent {
        stage,
        phase,
        detail: (!detail.is_empty()).then(|| redact_secrets(&detail.join(" "))),
    }))
}

/// The first bytes of `output`, secrets redacted first, for an error message.
pub(crate) fn snippet(output: &str) -> String {
    berth_exec::redacted_snippet(output, SNIPPET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lines() {
        let ev = parse_stage_line("berth-stage: start_vm completed vm-1 up")
            .unwrap()
            .unwrap();
        assert_eq!(ev.stage, Stage::StartVm);
        assert_eq!(ev.phase, StagePhase::Completed);
        assert_eq!(ev.detail.as_deref(), Some("vm-1 up"));
        assert!(parse_stage_line("booting...").is_none());
        assert!(parse_stage_line("berth-stage: warp_drive started").unwrap().is_err());
        assert!(parse_stage_line("berth-stage: start_vm done").unwrap().is_err());
    }

    #[test]
    fn stage_lines_have_secrets_redacted() {
        let ev = parse_stage_line("berth-stage: configure_vm completed set root_password=hunter2 ok")
            .unwrap()
            .unwrap();
        let detail = ev.detail.unwrap();
        assert!(!detail.contains("hunter2"), "{detail}");
        assert!(detail.contains("root_password=<redacted>"), "{detail}");
        for bad in [
            "berth-stage: token=hunter2",
            "berth-stage: token=hunter2 started",
            "berth-stage: start_vm token=hunter2",
        ] {
            let why = parse_stage_line(bad).unwrap().unwrap_err();
            assert!(!why.contains("hunter2"), "{bad}: {why}");
        }
    }

    #[test]
    fn snippets_are_redacted_and_bounded() {
        let out = format!(r#"{{"root_password": "hunter2", "pad": "{}"}}"#, "x".repeat(500));
        let s = snippet(&out);
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.len() < 260, "{s}");
    }

    /// A login user ends up in an `ssh user@address` line people paste: a user name or an error.
    #[test]
    fn a_login_user_is_a_unix_user_name() {
        let parse = |u: &str| {
            serde_json::from_value::<WireInstance>(serde_json::json!({"external_id": "vm-1", "login_user": u}))
                .unwrap()
                .into_instance()
        };
        assert_eq!(parse("debian").unwrap().login_user.as_deref(), Some("debian"));
        let e = parse("x -oProxyCommand=touch y").unwrap_err();
        assert!(e.starts_with("instance.login_user:"), "{e}");
    }

    #[test]
    fn debug_of_an_instance_hides_the_password() {
        let w: WireInstance = serde_json::from_str(r#"{"external_id": "vm-1", "root_password": "hunter2"}"#).unwrap();
        assert!(!format!("{w:?}").contains("hunter2"));
    }
}
