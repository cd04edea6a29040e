//! From a loaded configuration to the `Provider` it names.

use std::sync::Arc;

use berth_core::Provider;
use berth_manual::ManualProvider;
use berth_multipass::MultipassProvider;
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
        BackendKind::Multipass => {
            let mc = config.multipass.clone().unwrap_or_default();
            let provider = MultipassProvider::new(mc, config.base_dir())
                .map_err(|e| err(Some(format!("provisioner.multipass.{}", e.key)), e.message))?;
            Ok(Arc::new(provider))
        }
        BackendKind::Manual => Ok(Arc::new(manual_provider(config)?)),
        #[cfg(feature = "libvirt")]
        BackendKind::Libvirt => {
            let lc = config
                .libvirt
                .clone()
                .ok_or_else(|| err(None, "no [provisioner.libvirt] table".into()))?;
            let provider = berth_libvirt::LibvirtProvider::new(lc, config.base_dir())
                .map_err(|e| err(Some(format!("provisioner.libvirt.{}", e.key)), e.message))?;
            Ok(Arc::new(provider))
        }
        #[cfg(not(feature = "libvirt"))]
        BackendKind::Libvirt => Err(err(
            Some("provisioner.type".into()),
            "backend \"libvirt\" is not available in this build of berth (built without the `libvirt` feature)".into(),
        )),
    }
}

/// The manual backend as its own type, for the operator's commands (complete, fail, pending).
pub fn manual_provider(config: &Config) -> Result<ManualProvider, ConfigFileError> {
    let err = |key: Option<String>, message: String| ConfigFileError {
        path: config.path.clone(),
        line: None,
        column: None,
        key,
        message,
    };
    if config.backend != BackendKind::Manual {
        return Err(err(
            Some("provisioner.type".into()),
            format!(
                "this command is for the manual backend; the configured backend is \"{}\"",
                config.backend.as_str()
            ),
        ));
    }
    let mc = config.manual.clone().unwrap_or_default();
    ManualProvider::new(mc, config.base_dir())
        .map_err(|e| err(Some(format!("provisioner.manual.{}", e.key)), e.message))
}
