//! From a loaded configuration to the `Provider` it names.

use std::sync::Arc;

use berth_core::Provider;
use berth_proxmox::ProxmoxProvider;
use berth_script::ScriptProvider;

use crate::config::{BackendKind, Config, ConfigFileError};

pub fn build_provider(config: &Config) -> Result<Arc<dyn Provider>, ConfigFileError> {
    let err = |key: Option<String>, message: String| ConfigFileError {
        path: config.path.clone(),
        line: None,
        column: None,
        key,
        message,
    };
    match config.backend {
        BackendKind::Proxmox => {
            let px = config
                .proxmox
                .clone()
                .ok_or_else(|| err(None, "no [provisioner.proxmox] table".into()))?;
            let provider =
                ProxmoxProvider::new(px).map_err(|e| err(Some(format!("provisioner.proxmox.{}", e.key)), e.message))?;
            Ok(Arc::new(provider))
        }
        BackendKind::Script => {
            let sc = config
                .script
                .clone()
                .ok_or_else(|| err(None, "no [provisioner.script] table".into()))?;
            let provider = ScriptProvider::new(sc, config.base_dir())
                .map_err(|e| err(Some(format!("provisioner.script.{}", e.key)), e.message))?;
            Ok(Arc::new(provider))
        }
        other => Err(err(
            Some("provisioner.type".into()),
            format!("backend \"{}\" is not available in this build of berth", other.as_str()),
        )),
    }
}
