//! `[provisioner.libvirt]` of berth.toml: the libvirt URI, where templates and instance disks
//! live, the network guests join, clone mode, domain type and limits. `validate()` names the
//! offending key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use berth_core::ConfigError;
pub(crate) use berth_core::spec::is_unix_user;

pub const DEFAULT_URI: &str = "qemu:///system";
pub const DEFAULT_INSTANCES_DIR: &str = "/var/lib/libvirt/images/berth";
pub const DEFAULT_NETWORK: &str = "default";
pub const DEFAULT_MACHINE: &str = "q35";
pub const DEFAULT_USER: &str = "berth";
pub const DEFAULT_NETWORK_TIMEOUT_SECONDS: u64 = 300;
const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;

/// How a VM's disk is made from its template.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CloneMode {
    /// A qcow2 overlay backed by the template (`qemu-img create -b … -F …`): instant, shares
    /// the template's blocks. The template must then never change.
    #[default]
    Linked,
    /// An independent qcow2 copy (`qemu-img convert`): slower, survives template changes.
    Full,
}

/// Which libvirt domain type guests get.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DomainTypeSetting {
    /// `kvm` when a probe guest really runs under KVM at start-up, else `qemu`.
    #[default]
    Auto,
    /// Hardware virtualisation; fails at start if KVM does not work.
    Kvm,
    /// Software emulation (TCG): slow, but works everywhere.
    Qemu,
}

/// Where guests' network interfaces attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkAttachment {
    /// A libvirt virtual network (`<interface type='network'>`), e.g. `default`.
    Network(String),
    /// A host bridge (`<interface type='bridge'>`), e.g. `br0`.
    Bridge(String),
    /// QEMU user networking (slirp): no host setup, guest reachable only from inside.
    User,
}

impl NetworkAttachment {
    /// `NAME` or `network:NAME` (libvirt network), `bridge:NAME`, or `user`.
    pub fn parse(s: &str) -> Result<NetworkAttachment, String> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let parsed = match s.split_once(':') {
            Some(("network", n)) if name_ok(n) => NetworkAttachment::Network(n.to_owned()),
            Some(("bridge", n)) if name_ok(n) => NetworkAttachment::Bridge(n.to_owned()),
            None if s == "user" => NetworkAttachment::User,
            None if name_ok(s) => NetworkAttachment::Network(s.to_owned()),
            _ => {
                return Err(format!(
                    "must be a libvirt network name (\"default\" or \"network:NAME\"), \"bridge:NAME\" or \"user\" (got {s:?})"
                ));
            }
        };
        Ok(parsed)
    }
}

/// The libvirt backend's configuration. Only `images_dir` or `template_pool` is required.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LibvirtConfig {
    /// The libvirt connection URI (`qemu:///system`, `qemu+ssh://root@host/system`, …).
    #[serde(default = "default_uri")]
    pub uri: String,
    /// A directory of template images (`*.qcow2`, `*.img`, `*.raw`); a template's id is its file
    /// name without the extension.
    #[serde(default)]
    pub images_dir: Option<PathBuf>,
    /// A libvirt storage pool whose volumes are the templates (id = volume name without its
    /// extension). Used instead of, or as well as, `images_dir`.
    #[serde(default)]
    pub template_pool: Option<String>,
    /// Where each VM's disk, seed ISO and console log go (one directory per instance).
    #[serde(default = "default_instances_dir")]
    pub instances_dir: PathBuf,
    /// The template used when an order names none.
    #[serde(default)]
    pub template: Option<String>,
    /// What guests' NICs attach to: `default` (a libvirt network), `bridge:br0` or `user`.
    #[serde(default = "default_network")]
    pub network: String,
    /// `linked` (qcow2 overlay on the template) or `full` (an independent copy).
    #[serde(default)]
    pub clone: CloneMode,
    /// `auto` (probe KVM at start-up), `kvm` or `qemu` (TCG).
    #[serde(default)]
    pub domain_type: DomainTypeSetting,
    /// The QEMU machine type.
    #[serde(default = "default_machine")]
    pub machine: String,
    /// The login user cloud-init creates with the order's SSH keys, when the order names none.
    #[serde(default = "default_user")]
    pub user: String,
    /// Live maxima: guests are defined with this many vCPU slots so cores can grow without a
    /// restart up to here. Unset: only the requested count (growing then needs a restart).
    #[serde(default)]
    pub max_cores: Option<u32>,
    /// Live maximum for memory (balloon), in MiB. Unset: the requested memory is the maximum.
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
    /// How long a new guest may take to report an address.
    #[serde(default = "default_network_timeout")]
    pub network_timeout_seconds: u64,
    /// The `qemu-img` executable.
    #[serde(default = "default_qemu_img")]
    pub qemu_img: PathBuf,
}

fn default_uri() -> String {
    DEFAULT_URI.to_owned()
}
fn default_instances_dir() -> PathBuf {
    PathBuf::from(DEFAULT_INSTANCES_DIR)
}
fn default_network() -> String {
    DEFAULT_NETWORK.to_owned()
}
fn default_machine() -> String {
    DEFAULT_MACHINE.to_owned()
}
fn default_user() -> String {
    DEFAULT_USER.to_owned()
}
fn default_network_timeout() -> u64 {
    DEFAULT_NETWORK_TIMEOUT_SECONDS
}
fn default_qemu_img() -> PathBuf {
    PathBuf::from("qemu-img")
}

impl LibvirtConfig {
    /// A configuration with every default and the given template directory.
    pub fn with_images_dir(images_dir: impl Into<PathBuf>) -> LibvirtConfig {
        LibvirtConfig {
            uri: default_uri(),
            images_dir: Some(images_dir.into()),
            template_pool: None,
            instances_dir: default_instances_dir(),
            template: None,
            network: default_network(),
            clone: CloneMode::default(),
            domain_type: DomainTypeSetting::default(),
            machine: default_machine(),
            user: default_user(),
            max_cores: None,
            max_memory_mib: None,
            network_timeout_seconds: DEFAULT_NETWORK_TIMEOUT_SECONDS,
            qemu_img: default_qemu_img(),
        }
    }

    /// Checks every key without touching libvirt (doctor does that) and makes relative paths
    /// absolute against `base_dir`, the config file's directory.
    pub fn validate(&mut self, base_dir: &Path) -> Result<(), ConfigError> {
        if self.uri.trim().is_empty() || !self.uri.contains(':') {
            return Err(ConfigError::new(
                "uri",
                format!("must be a libvirt URI such as \"qemu:///system\" (got {:?})", self.uri),
            ));
        }
        if !crate::accel::is_local_uri(&self.uri) {
            return Err(ConfigError::new(
                "uri",
                format!(
                    "must name libvirt on this machine (\"qemu:///system\"): Berth makes the disks and seed ISOs as local files, so run the agent on each KVM host (got {:?})",
                    crate::conn::redact_uri(&self.uri)
                ),
            ));
        }
        if self.images_dir.is_none() && self.template_pool.is_none() {
            return Err(ConfigError::new(
                "images_dir",
                "is required (a directory of template images), unless `template_pool` names a libvirt storage pool",
            ));
        }
        if let Some(dir) = &mut self.images_dir {
            if dir.as_os_str().is_empty() {
                return Err(ConfigError::new("images_dir", "must not be empty"));
            }
            *dir = base_dir.join(&*dir);
        }
        if self.template_pool.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(ConfigError::new("template_pool", "must not be empty"));
        }
        if self.instances_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("instances_dir", "must not be empty"));
        }
        self.instances_dir = base_dir.join(&self.instances_dir);
        if let Some(t) = &self.template {
            crate::templates::check_template_name(t).map_err(|m| ConfigError::new("template", m))?;
        }
        NetworkAttachment::parse(&self.network).map_err(|m| ConfigError::new("network", m))?;
        if self.machine.is_empty()
            || !self
                .machine
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ConfigError::new(
                "machine",
                format!(
                    "must be a QEMU machine type such as \"q35\" or \"pc\" (got {:?})",
                    self.machine
                ),
            ));
        }
        if !is_unix_user(&self.user) {
            return Err(ConfigError::new(
                "user",
                format!(
                    "must be a Unix user name (lowercase letters, digits, '_' or '-', at most 32) (got {:?})",
                    self.user
                ),
            ));
        }
        if let Some(c) = self.max_cores
            && !(1..=berth_core::VmSpec::MAX_CORES).contains(&c)
        {
            return Err(ConfigError::new(
                "max_cores",
                format!("must be between 1 and {} (got {c})", berth_core::VmSpec::MAX_CORES),
            ));
        }
        if self.max_memory_mib == Some(0) {
            return Err(ConfigError::new("max_memory_mib", "must be at least 1"));
        }
        let t = self.network_timeout_seconds;
        if t == 0 || t > MAX_TIMEOUT_SECONDS {
            return Err(ConfigError::new(
                "network_timeout_seconds",
                format!("must be between 1 and {MAX_TIMEOUT_SECONDS} (got {t})"),
            ));
        }
        if self.qemu_img.as_os_str().is_empty() {
            return Err(ConfigError::new("qemu_img", "must not be empty"));
        }
        if self.qemu_img.components().count() > 1 {
            self.qemu_img = base_dir.join(&self.qemu_img);
        }
        Ok(())
    }

    pub fn attachment(&self) -> NetworkAttachment {
        NetworkAttachment::parse(&self.network).unwrap_or(NetworkAttachment::User)
    }
}

impl fmt::Debug for LibvirtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No secrets here, but URIs may carry credentials (`?password=` for some transports).
        let uri = self
            .uri
            .split_once('?')
            .map(|(u, _)| format!("{u}?…"))
            .unwrap_or(self.uri.clone());
        f.debug_struct("LibvirtConfig")
            .field("uri", &uri)
            .field("images_dir", &self.images_dir)
            .field("template_pool", &self.template_pool)
            .field("instances_dir", &self.instances_dir)
            .field("template", &self.template)
            .field("network", &self.network)
            .field("clone", &self.clone)
            .field("domain_type", &self.domain_type)
            .field("machine", &self.machine)
            .field("user", &self.user)
            .field("max_cores", &self.max_cores)
            .field("max_memory_mib", &self.max_memory_mib)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LibvirtConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_table_takes_the_defaults() {
        let mut c = parse("images_dir = \"images\"\n").unwrap();
        c.validate(Path::new("/etc/berth")).unwrap();
        assert_eq!(c.uri, "qemu:///system");
        assert_eq!(c.images_dir.as_deref(), Some(Path::new("/etc/berth/images")));
        assert_eq!(c.instances_dir, Path::new(DEFAULT_INSTANCES_DIR));
        assert_eq!(c.attachment(), NetworkAttachment::Network("default".into()));
        assert_eq!((c.clone, c.domain_type), (CloneMode::Linked, DomainTypeSetting::Auto));
        assert_eq!((c.machine.as_str(), c.user.as_str()), ("q35", "berth"));
    }

    #[test]
    fn network_forms() {
        assert_eq!(
            NetworkAttachment::parse("bridge:br0").unwrap(),
            NetworkAttachment::Bridge("br0".into())
        );
        assert_eq!(
            NetworkAttachment::parse("network:user").unwrap(),
            NetworkAttachment::Network("user".into())
        );
        assert_eq!(NetworkAttachment::parse("user").unwrap(), NetworkAttachment::User);
        for bad in ["", "bridge:", "tap:x", "a b", "bridge:br0'"] {
            assert!(NetworkAttachment::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("", "images_dir"),
            ("images_dir = \"\"\n", "images_dir"),
            ("images_dir = \"i\"\nuri = \"nonsense\"\n", "uri"),
            ("images_dir = \"i\"\nnetwork = \"tap:x\"\n", "network"),
            ("images_dir = \"i\"\nmachine = \"q35 -x\"\n", "machine"),
            ("images_dir = \"i\"\nuser = \"Root\"\n", "user"),
            ("images_dir = \"i\"\ntemplate = \"../etc/passwd\"\n", "template"),
            ("images_dir = \"i\"\nmax_cores = 0\n", "max_cores"),
            ("images_dir = \"i\"\nmax_memory_mib = 0\n", "max_memory_mib"),
            ("images_dir = \"i\"\nuri = \"qemu+ssh://root@kvm1/system\"\n", "uri"),
            (
                "images_dir = \"i\"\nnetwork_timeout_seconds = 999999\n",
                "network_timeout_seconds",
            ),
            ("template_pool = \" \"\n", "template_pool"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap().validate(Path::new("/")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        assert!(
            parse("images_dir = \"i\"\nclone = \"deep\"\n")
                .unwrap_err()
                .contains("clone")
        );
        assert!(parse("images_dri = \"i\"\n").unwrap_err().contains("images_dri"));
    }
}
