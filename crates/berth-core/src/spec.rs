//! What a caller asks for: `VmSpec` (a new machine), `Resize` (a change to one), and the
//! validated pieces they are made of (SSH keys, network settings). Validation happens here, once,
//! before any backend is touched, and every error names the field.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ProviderError;
use crate::ids::InstanceId;

/// A full VM or a system container (LXC on Proxmox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GuestKind {
    #[default]
    Vm,
    Container,
}

impl fmt::Display for GuestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            GuestKind::Vm => "vm",
            GuestKind::Container => "container",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub instance_id: InstanceId,
    /// Host name; also the backend's display name. A DNS name (letters, digits, `-`, dots).
    pub name: String,
    #[serde(default)]
    pub kind: GuestKind,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Backend template reference (Proxmox: VMID or name; container: ostemplate volume).
    /// `None` uses the backend's configured default.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub ssh_keys: Vec<SshPublicKey>,
    /// Login user created by cloud-init; `None` uses the backend's default.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub network: NetworkSpec,
}

impl VmSpec {
    pub const MAX_CORES: u32 = 8192;
    pub const MIN_MEMORY_MIB: u64 = 16;

    /// Checks every field that can be checked without a backend.
    pub fn validate(&self) -> Result<(), ProviderError> {
        validate_dns_name("name", &self.name)?;
        if self.cores == 0 || self.cores > Self::MAX_CORES {
            return Err(ProviderError::invalid(
                "cores",
                format!("must be between 1 and {} (got {})", Self::MAX_CORES, self.cores),
            ));
        }
        if self.memory_mib < Self::MIN_MEMORY_MIB {
            return Err(ProviderError::invalid(
                "memory_mib",
                format!(
                    "must be at least {} MiB (got {})",
                    Self::MIN_MEMORY_MIB,
                    self.memory_mib
                ),
            ));
        }
        if self.disk_gib == 0 {
            return Err(ProviderError::invalid("disk_gib", "must be at least 1 GiB (got 0)"));
        }
        if let Some(user) = &self.user {
            let ok = !user.is_empty()
                && user.len() <= 32
                && user
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
                && !user.starts_with('-');
            if !ok {
                return Err(ProviderError::invalid(
                    "user",
                    format!(
                        "must be a Unix user name (lowercase letters, digits, '_' or '-', at most 32) (got {user:?})"
                    ),
                ));
            }
        }
        if let Some(t) = &self.template
            && t.trim().is_empty()
        {
            return Err(ProviderError::invalid("template", "must not be empty"));
        }
        self.network.validate()
    }
}

/// A Unix user name as cloud-init creates it: lowercase letters, digits, `_` and `-`, at most
/// 32 characters, not starting with `-`.
pub fn is_unix_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !user.starts_with('-')
}

/// Checks a DNS name the way Proxmox's `dns-name` format does (no underscores), with the usual
/// length limits.
pub fn validate_dns_name(field: &str, name: &str) -> Result<(), ProviderError> {
    let bad = |why: &str| {
        ProviderError::invalid(
            field,
            format!("{why}; expected a DNS name like \"web1\" or \"web1.example.com\" (got {name:?})"),
        )
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.len() > 253 {
        return Err(bad("is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated part must have 1 to 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad("may contain only letters, digits, '-' and '.'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a part may not start or end with '-'"));
        }
    }
    Ok(())
}

/// An OpenSSH public key line (`TYPE BASE64 [COMMENT]`), checked: known type, valid base64
/// whose blob names the same type.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SshPublicKey(String);

impl SshPublicKey {
    const TYPES: &'static [&'static str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];

    pub fn parse(line: &str) -> Result<Self, ProviderError> {
        let line = line.trim();
        // Said before anything of it is shown: a private key is never echoed, not even in part.
        if line.contains("PRIVATE KEY") {
            return Err(ProviderError::invalid(
                "ssh_key",
                "this is a private key; pass the public key (the .pub file beside it)",
            ));
        }
        let shown: String = line.chars().take(40).collect();
        let bad = |why: String| {
            ProviderError::invalid(
                "ssh_key",
                format!(
                    "{why}; expected an OpenSSH public key line like \"ssh-ed25519 AAAAC3Nz... user@host\" (got {shown:?}...)"
                ),
            )
        };
        if line.contains('\n') || line.contains('\r') {
            return Err(bad("must be a single line".into()));
        }
        let mut parts = line.split_whitespace();
        let ty = parts.next().ok_or_else(|| bad("is empty".into()))?;
        if !Self::TYPES.contains(&ty) {
            return Err(bad(format!("unknown key type {ty:?}")));
        }
        let b64 = parts.next().ok_or_else(|| bad("has no key data".into()))?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("key data is not valid base64".into()))?;
        let inner_ty = blob
            .get(..4)
            .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
            .and_then(|n| blob.get(4..4 + n))
            .ok_or_else(|| bad("key data is truncated".into()))?;
        if inner_ty != ty.as_bytes() {
            return Err(bad(format!("key data does not match its type {ty:?}")));
        }
        Ok(SshPublicKey(line.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SshPublicKey({})", self.0)
    }
}

impl FromStr for SshPublicKey {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SshPublicKey::parse(s)
    }
}

impl Serialize for SshPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SshPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SshPublicKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    #[serde(default)]
    pub ipv4: Ipv4Config,
    #[serde(default)]
    pub ipv6: Option<Ipv6Config>,
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
}

impl NetworkSpec {
    fn validate(&self) -> Result<(), ProviderError> {
        if let Ipv4Config::Static { prefix_len, .. } = self.ipv4
            && !(1..=32).contains(&prefix_len)
        {
            return Err(ProviderError::invalid(
                "ip",
                format!("prefix length must be 1-32 (got {prefix_len})"),
            ));
        }
        if let Some(Ipv6Config::Static { prefix_len, .. }) = self.ipv6
            && !(1..=128).contains(&prefix_len)
        {
            return Err(ProviderError::invalid(
                "ip6",
                format!("prefix length must be 1-128 (got {prefix_len})"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Ipv4Config {
    #[default]
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    },
}

impl Ipv4Config {
    /// The CLI form: `dhcp`, or `CIDR[,gw=GATEWAY]` (`10.0.0.5/24,gw=10.0.0.1`).
    pub fn parse(s: &str) -> Result<Self, ProviderError> {
        let bad = |why: &str| {
            ProviderError::invalid(
                "ip",
                format!(
                    "{why}; expected \"dhcp\" or \"ADDRESS/PREFIX[,gw=GATEWAY]\" like \"10.0.0.5/24,gw=10.0.0.1\" (got {s:?})"
                ),
            )
        };
        if s.eq_ignore_ascii_case("dhcp") {
            return Ok(Ipv4Config::Dhcp);
        }
        let mut parts = s.split(',');
        let cidr = parts.next().unwrap_or_default();
        let (addr, prefix) = cidr.split_once('/').ok_or_else(|| bad("missing /PREFIX"))?;
        let address: Ipv4Addr = addr.parse().map_err(|_| bad("address is not an IPv4 address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        if !(1..=32).contains(&prefix_len) {
            return Err(bad("prefix must be 1-32"));
        }
        let mut gateway = None;
        for p in parts {
            let (k, v) = p.split_once('=').ok_or_else(|| bad("options must be key=value"))?;
            match k {
                "gw" => gateway = Some(v.parse().map_err(|_| bad("gw is not an IPv4 address"))?),
                _ => return Err(bad(&format!("unknown option {k:?}"))),
            }
        }
        Ok(Ipv4Config::Static {
            address,
            prefix_len,
            gateway,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Ipv6Config {
    Dhcp,
    /// Stateless autoconfiguration (SLAAC).
    Auto,
    Static {
        address: Ipv6Addr,
        prefix_len: u8,
        gateway: Option<Ipv6Addr>,
    },
}

/// A change of size for an existing machine. `None` leaves the value as it is. Disks only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resize {
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
}

impl Resize {
    pub fn validate(&self) -> Result<(), ProviderError> {
        if self.cores.is_none() && self.memory_mib.is_none() && self.disk_gib.is_none() {
            return Err(ProviderError::invalid(
                "resize",
                "nothing to change: give cores, memory_mib or disk_gib",
            ));
        }
        if let Some(c) = self.cores
            && (c == 0 || c > VmSpec::MAX_CORES)
        {
            return Err(ProviderError::invalid(
                "cores",
                format!("must be between 1 and {} (got {c})", VmSpec::MAX_CORES),
            ));
        }
        if let Some(m) = self.memory_mib
            && m < VmSpec::MIN_MEMORY_MIB
        {
            return Err(ProviderError::invalid(
                "memory_mib",
                format!("must be at least 16 MiB (got {m})"),
            ));
        }
        if self.disk_gib == Some(0) {
            return Err(ProviderError::invalid("disk_gib", "must be at least 1 GiB (got 0)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

    fn spec() -> VmSpec {
        VmSpec {
            instance_id: InstanceId::parse("web1").unwrap(),
            name: "web1".into(),
            kind: GuestKind::Vm,
            cores: 2,
            memory_mib: 2048,
            disk_gib: 20,
            template: None,
            ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
            user: None,
            network: NetworkSpec::default(),
        }
    }

    #[test]
    fn valid_spec_passes() {
        spec().validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut VmSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.cores = 0), "cores"),
            (Box::new(|s| s.memory_mib = 8), "memory_mib"),
            (Box::new(|s| s.disk_gib = 0), "disk_gib"),
            (Box::new(|s| s.name = "my_vm".into()), "name"),
            (Box::new(|s| s.name = String::new()), "name"),
            (Box::new(|s| s.user = Some("Root User".into())), "user"),
        ];
        for (mutate, field) in cases {
            let mut s = spec();
            mutate(&mut s);
            match s.validate() {
                Err(ProviderError::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn ssh_keys_are_checked() {
        assert!(SshPublicKey::parse(KEY).is_ok());
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-foo AAAA",
            "ssh-ed25519 not-base64!!",
            // valid base64, but the blob says ssh-rsa
            "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
            "ssh-ed25519 AAAA\nssh-rsa AAAA",
        ] {
            let err = SshPublicKey::parse(bad).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidSpec, "{bad:?}");
            assert!(err.to_string().starts_with("invalid ssh_key"), "{err}");
        }
        let private =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = SshPublicKey::parse(private).unwrap_err().to_string();
        assert!(err.contains("this is a private key; pass the public key"), "{err}");
        assert!(!err.contains("b3Bl"), "nothing of the key is shown: {err}");
    }

    #[test]
    fn ipv4_cli_forms() {
        assert_eq!(Ipv4Config::parse("dhcp").unwrap(), Ipv4Config::Dhcp);
        assert_eq!(
            Ipv4Config::parse("10.0.0.5/24,gw=10.0.0.1").unwrap(),
            Ipv4Config::Static {
                address: "10.0.0.5".parse().unwrap(),
                prefix_len: 24,
                gateway: Some("10.0.0.1".parse().unwrap())
            }
        );
        for bad in [
            "10.0.0.5",
            "10.0.0.5/33",
            "x/24",
            "10.0.0.5/24,gw=nope",
            "10.0.0.5/24,foo=1",
        ] {
            assert!(
                Ipv4Config::parse(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("invalid ip:"),
                "{bad}"
            );
        }
    }

    #[test]
    fn resize_needs_something() {
        assert!(Resize::default().validate().is_err());
        assert!(
            Resize {
                cores: Some(4),
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
        assert!(
            Resize {
                cores: Some(0),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
