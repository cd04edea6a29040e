//! Rendering results and errors: aligned text for people, JSON for programs.

use std::process::ExitCode;

use berth_core::{DeleteOutcome, Instance, ProviderError, ReconfigureOutcome, Template};
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
        ];
        for (k, v) in rows {
            say!("{k:<10} {v}");
        }
    }

    pub fn instances(&self, backend: &str, list: &[Instance]) {
        if self.format == OutputFormat::Json {
            return self.json(&Value::Array(list.iter().map(|i| instance_json(backend, i)).collect()));
        }
        say!(
            "{:<38} {:>10} {:<9} {:<8} {:<24} {:<12} IPV4",
            "INSTANCE",
            backend_id_label(backend).to_uppercase(),
            "KIND",
            "NODE",
            "NAME",
            "STATE",
        );
        for i in list {
            say!(
                "{:<38} {:>10} {:<9} {:<8} {:<24} {:<12} {}",
                dash(i.instance_id.as_ref()),
                i.backend_id,
                i.kind,
                dash(i.node.as_ref()),
                i.name,
                i.state,
                dash(i.ipv4)
            );
        }
    }

    pub fn templates(&self, list: &[Template]) {
        if self.format == OutputFormat::Json {
            return self.json(&serde_json::to_value(list).unwrap_or(Value::Null));
        }
        say!("{:<12} {:<32} {:<9} {:<8} DISK", "ID", "NAME", "KIND", "NODE");
        for t in list {
            say!(
                "{:<12} {:<32} {:<9} {:<8} {}",
                t.id,
                t.name,
                t.kind,
                dash(t.node.as_ref()),
                dash(t.disk_gib.map(|d| format!("{d} GiB")))
            );
        }
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
    /// and returns the exit code: 2 for bad input, 1 for everything else.
    pub fn error(&self, e: &ProviderError) -> ExitCode {
        if self.format == OutputFormat::Json {
            let mut err = json!({ "code": e.code(), "message": e.to_string(), "retryable": e.is_retryable() });
            if let ProviderError::InvalidSpec { field, .. } = e {
                err["field"] = json!(field);
            }
            self.json(&json!({ "error": err }));
        }
        say_err!("error: {e}");
        if e.code() == berth_core::ErrorCode::InvalidSpec {
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        }
    }
}
