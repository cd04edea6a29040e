//! Typed identifiers. An `InstanceId` is Berth's stable key for a machine: create is idempotent
//! by it and every backend stores it in its ownership marker, so its alphabet is the one every
//! backend can carry (Proxmox tags, libvirt metadata, Multipass names): lowercase letters,
//! digits and `-`, starting with a letter or digit, at most 63 characters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ProviderError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct InstanceId(String);

/// Whose machine an id names, read from the id itself (so from every backend's marker alike).
/// The control plane's store makes the id of every instance it hands its agents: a UUID.
/// `berth vm create` makes ids of another form and refuses UUIDs, so a machine made by hand
/// next to a running agent is never taken by that agent's reconcile for one the control plane
/// lost. (Machines made by hand before this rule carry UUIDs; to an agent they look like its own.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Made for a control plane's instance: its agent reconciles it.
    ControlPlane,
    /// Made directly (`berth vm create`, the declarative mode): no agent touches it.
    Local,
}

impl InstanceId {
    pub const MAX_LEN: usize = 63;

    pub fn parse(s: &str) -> Result<Self, ProviderError> {
        let invalid = |reason: &str| ProviderError::invalid("instance_id", format!("{reason} (got {s:?})"));
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("must be at most 63 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("may contain only lowercase letters, digits and '-'"));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(invalid("must start and end with a letter or digit"));
        }
        Ok(InstanceId(s.to_owned()))
    }

    /// A fresh random id in the control plane's scope (a UUID v4 in its hyphenated form).
    pub fn generate() -> Self {
        InstanceId(uuid::Uuid::new_v4().to_string())
    }

    /// A fresh random id in the local scope: `vm-` and 16 hex digits.
    pub fn generate_local() -> Self {
        InstanceId(format!("vm-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]))
    }

    /// Whose machine this id names; see [`Scope`].
    pub fn scope(&self) -> Scope {
        if self.0.len() == 36 && uuid::Uuid::try_parse(&self.0).is_ok() {
            Scope::ControlPlane
        } else {
            Scope::Local
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl FromStr for InstanceId {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceId::parse(s)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        InstanceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How a caller names a machine: by Berth's instance id, or by the backend's own id (a Proxmox
/// VMID, a libvirt domain name). Backends only act on machines they can prove Berth owns when
/// the call mutates; `describe` works for any machine the backend can see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InstanceRef {
    Id(InstanceId),
    Backend(String),
}

impl fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceRef::Id(id) => write!(f, "instance {id}"),
            InstanceRef::Backend(b) => write!(f, "backend id {b}"),
        }
    }
}

impl From<InstanceId> for InstanceRef {
    fn from(id: InstanceId) -> Self {
        InstanceRef::Id(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_scope_is_read_from_the_id() {
        let cp = InstanceId::generate();
        assert_eq!(cp.scope(), Scope::ControlPlane);
        let local = InstanceId::generate_local();
        assert_eq!(local.scope(), Scope::Local);
        assert!(InstanceId::parse(local.as_str()).is_ok(), "{local}");
        for s in [
            "web1",
            "orphan-2",
            "3f2b8c1e9d7a4b6c8e0f1a2b3c4d5e6f",
            "3f2b8c1e-9d7a-4b6c-8e0f-1a2b3c4d5e6",
        ] {
            assert_eq!(InstanceId::parse(s).unwrap().scope(), Scope::Local, "{s}");
        }
    }

    #[test]
    fn accepts_uuid_and_slugs() {
        assert!(InstanceId::parse(&InstanceId::generate().to_string()).is_ok());
        assert!(InstanceId::parse("web1").is_ok());
        assert!(InstanceId::parse("a").is_ok());
    }

    #[test]
    fn rejects_bad_ids_naming_the_field() {
        for bad in ["", "Web1", "web_1", "-web", "web-", "a b", &"a".repeat(64)] {
            let err = InstanceId::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid instance_id:"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn parse_roundtrips_valid_ids(s in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let id = InstanceId::parse(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
            let json = serde_json::to_string(&id).unwrap();
            let back: InstanceId = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, id);
        }
    }
}
