//! Rendering results and errors: aligned text for people, JSON for programs.

use std::process::ExitCode;

use berth_core::{DeleteOutcome, Instance, ProviderError, ReconfigureOutcome, Snapshot, Template};
use serde_json::{Value, json};

use crate::cli::OutputFormat;

pub struct Printer {
    format: OutputFormat,
}

/// `println!`, with control and bidi characters (from names a backend reports) shown escaped,
/// so nothing in them can drive the terminal.
macro_rules! say {
    ($($t:tt)*) => { println!("{}", berth_core::text::printable(&format!($($t)*))) };
}

/// `eprintln!`, escaped as [`say!`].
macro_rules! say_err {
    ($($t:tt)*) => { eprintln!("{}", berth_core::text::printable(&format!($($t)*))) };
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The backend's own name for its id, for people.
fn backend_id_label(backend: &str) -> &'static str {
    match backend {
        "proxmox" => "vmid",
        _ => "backend id",
    }
}

pub fn instance_json(backend: &str, i: &Instance) -> Value {
    let mut v = serde_json::to_value(i).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("backend".into(), json!(backend));
        if backend == "proxmox"
            && let Ok(vmid) = i.backend_id.parse::<u64>()
        {
            map.insert("vmid".into(), json!(vmid));
        }
    }
    v
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Printer { format }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    fn json(&self, v: &Value) {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }

    pub fn instance(&self, backend: &str, i: &Instance) {
        if self.format == OutputFormat::Json {
            return self.json(&instance_json(backend, i));
        }
        say!("{}", instance_detail(backend, i));
    }

    pub fn instances(&self, backend: &str, list: &[Instance]) {
        if self.format == OutputFormat::Json {
            return self.json(&Value::Array(list.iter().map(|i| instance_json(backend, i)).collect()));
        }
        say!("{}", instances_table(backend, list));
    }

    pub fn templates(&self, list: &[Template]) {
        if self.format == OutputFormat::Json {
            return self.json(&serde_json::to_value(list).unwrap_or(Value::Null));
        }
        say!("{}", templates_table(list));
    }

    pub fn snapshots(&self, list: &[Snapshot]) {
        if self.format == OutputFormat::Json {
            return self.json(&serde_json::to_value(list).unwrap_or(Value::Null));
        }
        say!("{}", snapshots_table(list));
    }

    pub fn deleted(&self, id: &str, outcome: DeleteOutcome) {
        if self.format == OutputFormat::Json {
            return self.json(&json!({ "id": id, "outcome": outcome }));
        }
        match outcome {
            DeleteOutcome::Deleted => say!("deleted {id}"),
            DeleteOutcome::AlreadyAbsent => say!("{id} does not exist (nothing to delete)"),
        }
    }

    pub fn reconfigured(&self, id: &str, outcome: &ReconfigureOutcome) {
        if self.format == OutputFormat::Json {
            return self.json(&json!({ "id": id, "restart_required": outcome.restart_required }));
        }
        if outcome.restart_required {
            say!("changed {id}; the change takes effect after a restart (berth vm reboot {id})");
        } else {
            say!("changed {id}");
        }
    }

    /// Reports a bad configuration file: `file:line:col: key: message` on stderr, and with
    /// --output json an error object with `code: invalid_config`, `file`, `line` and `key`.
    /// Exit code 2, as for any bad input.
    pub fn config_error(&self, e: &berth_agent::ConfigFileError) -> ExitCode {
        if self.format == OutputFormat::Json {
            self.json(&json!({ "error": {
                "code": "invalid_config", "message": e.to_string(), "file": e.path,
                "line": e.line, "key": e.key, "retryable": false,
            }}));
        }
        say_err!("error: {e}");
        ExitCode::from(2)
    }

    /// Reports a failure (stderr for people; a JSON error object on stdout with --output json)
    /// and returns the exit code, as for every command: 2 bad input, 3 not found, 4 conflict,
    /// 5 not allowed, 1 any other failure.
    pub fn error(&self, e: &ProviderError) -> ExitCode {
        if self.format == OutputFormat::Json {
            let mut err = json!({ "code": e.code(), "message": e.to_string(), "retryable": e.is_retryable() });
            if let ProviderError::InvalidSpec { field, .. } = e {
                err["field"] = json!(field);
            }
            self.json(&json!({ "error": err }));
        }
        say_err!("error: {e}");
        use berth_core::ErrorCode as C;
        ExitCode::from(match e.code() {
            C::InvalidSpec => 2,
            C::NotFound => 3,
            C::Conflict => 4,
            C::Unauthorized => 5,
            _ => 1,
        })
    }
}

/// One machine, a row per fact, then how to log in once it has an address.
fn instance_detail(backend: &str, i: &Instance) -> String {
    let rows = [
        ("instance", dash(i.instance_id.as_ref())),
        (backend_id_label(backend), i.backend_id.clone()),
        ("kind", i.kind.to_string()),
        ("node", dash(i.node.as_ref())),
        ("name", i.name.clone()),
        ("state", i.state.to_string()),
        ("ipv4", dash(i.ipv4)),
        ("ipv6", dash(i.ipv6)),
        ("cores", dash(i.cores)),
        ("memory", dash(i.memory_mib.map(|m| format!("{m} MiB")))),
        ("disk", dash(i.disk_gib.map(|d| format!("{d} GiB")))),
        ("ssh port", i.ssh_port.unwrap_or(22).to_string()),
        ("login", dash(i.login_user.as_ref())),
    ];
    let mut lines: Vec<String> = rows.iter().map(|(k, v)| format!("{k:<10} {v}")).collect();
    if let Some(ip) = i.ipv4.map(|a| a.to_string()).or(i.ipv6.map(|a| a.to_string())) {
        let ssh = berth_api::wire::ssh_command(i.login_user.as_deref(), &ip, i.ssh_port);
        lines.push(format!("{:<10} {ssh}", "ssh"));
    }
    lines.join("\n")
}

fn instances_table(backend: &str, list: &[Instance]) -> String {
    if list.is_empty() {
        return "no machines".into();
    }
    let row = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str, g: &str| {
        format!("{a:<38} {b:>10} {c:<9} {d:<8} {e:<24} {f:<12} {g}")
    };
    let mut lines = vec![row(
        "INSTANCE",
        &backend_id_label(backend).to_uppercase(),
        "KIND",
        "NODE",
        "NAME",
        "STATE",
        "IPV4",
    )];
    for i in list {
        lines.push(row(
            &dash(i.instance_id.as_ref()),
            &i.backend_id,
            &i.kind.to_string(),
            &dash(i.node.as_ref()),
            &i.name,
            &i.state.to_string(),
            &dash(i.ipv4),
        ));
    }
    lines.join("\n")
}

fn templates_table(list: &[Template]) -> String {
    if list.is_empty() {
        return "no templates".into();
    }
    let mut lines = vec![format!("{:<12} {:<32} {:<9} {:<8} DISK", "ID", "NAME", "KIND", "NODE")];
    for t in list {
        lines.push(format!(
            "{:<12} {:<32} {:<9} {:<8} {}",
            t.id,
            t.name,
            t.kind,
            dash(t.node.as_ref()),
            dash(t.disk_gib.map(|d| format!("{d} GiB")))
        ));
    }
    lines.join("\n")
}

fn snapshots_table(list: &[Snapshot]) -> String {
    if list.is_empty() {
        return "no snapshots".into();
    }
    let mut lines = vec![format!(
        "{:<24} {:<20} {:<24} {:<6} DESCRIPTION",
        "NAME", "TAKEN", "PARENT", "MEMORY"
    )];
    for s in list {
        lines.push(
            format!(
                "{:<24} {:<20} {:<24} {:<6} {}",
                s.name,
                dash(s.taken_at.map(|t| berth_core::utc(t as i64 * 1000))),
                dash(s.parent.as_ref()),
                if s.vmstate { "yes" } else { "no" },
                s.description.replace('\n', " ")
            )
            .trim_end()
            .to_owned(),
        );
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: a machine's snapshots under a header.
    #[test]
    fn snapshots_read_as_a_table() {
        let s = Snapshot {
            name: "before-upgrade".into(),
            parent: None,
            taken_at: Some(1_796_544_000),
            description: "apt full-upgrade".into(),
            vmstate: true,
        };
        assert_eq!(
            snapshots_table(&[s]),
            "\
NAME                     TAKEN                PARENT                   MEMORY DESCRIPTION
before-upgrade           2026-12-06T08:00:00Z -                        yes    apt full-upgrade"
        );
        assert_eq!(snapshots_table(&[]), "no snapshots");
    }

    fn vm() -> Instance {
        Instance {
            instance_id: Some(berth_core::InstanceId::parse("vm-web1").unwrap()),
            backend_id: "101".into(),
            kind: berth_core::GuestKind::Vm,
            node: Some("pve1".into()),
            name: "web1".into(),
            state: berth_core::PowerState::Running,
            ipv4: Some("192.0.2.7".parse().unwrap()),
            ipv6: None,
            cores: Some(2),
            memory_mib: Some(2048),
            disk_gib: Some(20),
            ssh_port: None,
            login_user: Some("berth".into()),
            root_password: None,
            pool: None,
        }
    }

    /// Golden: `vm describe`, `vm list` and `vm templates` as people read them.
    #[test]
    fn machines_and_templates_read_as_tables() {
        assert_eq!(
            instance_detail("proxmox", &vm()),
            "\
instance   vm-web1
vmid       101
kind       vm
node       pve1
name       web1
state      running
ipv4       192.0.2.7
ipv6       -
cores      2
memory     2048 MiB
disk       20 GiB
ssh port   22
login      berth
ssh        ssh berth@192.0.2.7"
        );
        assert_eq!(
            instances_table("proxmox", &[vm()]),
            "\
INSTANCE                                     VMID KIND      NODE     NAME                     STATE        IPV4
vm-web1                                       101 vm        pve1     web1                     running      192.0.2.7"
        );
        assert_eq!(instances_table("proxmox", &[]), "no machines");
        let t = Template {
            id: "9000".into(),
            name: "debian-12".into(),
            kind: berth_core::GuestKind::Vm,
            node: Some("pve1".into()),
            disk_gib: Some(3),
            format: None,
        };
        assert_eq!(
            templates_table(&[t]),
            "\
ID           NAME                             KIND      NODE     DISK
9000         debian-12                        vm        pve1     3 GiB"
        );
        assert_eq!(templates_table(&[]), "no templates");
    }
}
