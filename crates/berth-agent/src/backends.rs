//! From a configured backend to the `Provider` it names.

use std::sync::Arc;

use berth_core::Provider;
use berth_manual::ManualProvider;
use berth_multipass::MultipassProvider;
use berth_proxmox::ProxmoxProvider;
use berth_script::ScriptProvider;

use crate::config::{BackendConfig, BackendKind, BackendSettings, Config, ConfigFileError};

/// The provider for `backend` (one of `config.backends`).
pub fn build_provider(config: &Config, backend: &BackendConfig) -> Result<Arc<dyn Provider>, ConfigFileError> {
    let err = |table: &str, e: berth_core::ConfigError| ConfigFileError {
        path: config.path.clone(),
        line: None,
        column: None,
        key: Some(format!("{}.{table}.{}", backend.key_prefix, e.key)),
        message: e.message,
    };
    Ok(match &backend.settings {
        BackendSettings::Proxmox(px) => Arc::new(ProxmoxProvider::new(px.clone()).map_err(|e| err("proxmox", e))?),
        BackendSettings::Script(sc) => {
            Arc::new(ScriptProvider::new(sc.clone(), config.base_dir()).map_err(|e| err("script", e))?)
        }
        BackendSettings::Multipass(mc) => {
            Arc::new(MultipassProvider::new(mc.clone(), config.base_dir()).map_err(|e| err("multipass", e))?)
        }
        BackendSettings::Manual(_) => Arc::new(manual_provider(config, Some(&backend.name))?),
        #[cfg(feature = "libvirt")]
        BackendSettings::Libvirt(lc) => {
            Arc::new(berth_libvirt::LibvirtProvider::new(lc.clone(), config.base_dir()).map_err(|e| err("libvirt", e))?)
        }
    })
}

/// The manual backend as its own type, for the operator's commands (complete, fail, pending):
/// the one called `name`, or the file's only manual backend.
pub fn manual_provider(config: &Config, name: Option<&str>) -> Result<ManualProvider, ConfigFileError> {
    let manual: Vec<&BackendConfig> = config
        .backends
        .iter()
        .filter(|b| b.kind() == BackendKind::Manual)
        .collect();
    let chosen = match name {
        Some(_) => config.backend(name)?,
        None if manual.len() == 1 => manual[0],
        None => config.backend(None)?,
    };
    let BackendSettings::Manual(mc) = &chosen.settings else {
        return Err(ConfigFileError {
            path: config.path.clone(),
            line: None,
            column: None,
            key: Some(format!("{}.type", chosen.key_prefix)),
            message: format!(
                "this command is for the manual backend; backend {:?} is \"{}\"",
                chosen.name,
                chosen.kind().as_str()
            ),
        });
    };
    ManualProvider::new(mc.clone(), config.base_dir()).map_err(|e| ConfigFileError {
        path: config.path.clone(),
        line: None,
        column: None,
        key: Some(format!("{}.manual.{}", chosen.key_prefix, e.key)),
        message: e.message,
    })
}
