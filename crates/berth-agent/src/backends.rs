//! From a configured backend to the `Provider` it names.

use std::sync::Arc;

use berth_core::{ConfigError, Provider};
use berth_manual::{ManualConfig, ManualProvider};
use berth_multipass::MultipassProvider;
use berth_provider_grpc::RemoteProvider;
use berth_proxmox::ProxmoxProvider;
use berth_script::ScriptProvider;

use crate::config::{BackendConfig, BackendKind, BackendSettings, Config, ConfigFileError};

/// The provider for `backend` (one of `config.backends`).
pub fn build_provider(config: &Config, backend: &BackendConfig) -> Result<Arc<dyn Provider>, ConfigFileError> {
    let err = |table: &'static str| move |e| key_error(config, backend, table, e);
    Ok(match &backend.settings {
        BackendSettings::Proxmox(px) => Arc::new(ProxmoxProvider::new(px.clone()).map_err(err("proxmox"))?),
        BackendSettings::Script(sc) => {
            Arc::new(ScriptProvider::new(sc.clone(), config.base_dir()).map_err(err("script"))?)
        }
        BackendSettings::Multipass(mc) => {
            Arc::new(MultipassProvider::new(mc.clone(), config.base_dir()).map_err(err("multipass"))?)
        }
        BackendSettings::Manual(mc) => Arc::new(manual(config, backend, mc)?),
        BackendSettings::Remote(rc) => Arc::new(RemoteProvider::new(rc, &config.base_dir()).map_err(err("remote"))?),
        #[cfg(feature = "libvirt")]
        BackendSettings::Libvirt(lc) => {
            Arc::new(berth_libvirt::LibvirtProvider::new(lc.clone(), config.base_dir()).map_err(err("libvirt"))?)
        }
    })
}

/// The manual backend as its own type, for the operator's commands (complete, fail, pending):
/// the one called `name`, or the file's only manual backend.
pub fn manual_provider(config: &Config, name: Option<&str>) -> Result<ManualProvider, ConfigFileError> {
    let manuals: Vec<&BackendConfig> = config
        .backends
        .iter()
        .filter(|b| b.kind() == BackendKind::Manual)
        .collect();
    let chosen = match name {
        None if manuals.len() == 1 => manuals[0],
        _ => config.backend(name)?,
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
    manual(config, chosen, mc)
}

fn manual(config: &Config, b: &BackendConfig, mc: &ManualConfig) -> Result<ManualProvider, ConfigFileError> {
    ManualProvider::new(mc.clone(), config.base_dir()).map_err(|e| key_error(config, b, "manual", e))
}

/// A backend's own construction error, at its key in the file (`<prefix>.<table>.<key>`).
fn key_error(config: &Config, b: &BackendConfig, table: &str, e: ConfigError) -> ConfigFileError {
    ConfigFileError {
        path: config.path.clone(),
        line: None,
        column: None,
        key: Some(format!("{}.{table}.{}", b.key_prefix, e.key)),
        message: e.message,
    }
}
