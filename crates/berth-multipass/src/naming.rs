//! The mapping between Berth's instance ids and Multipass instance names — the only ownership
//! marker Multipass can carry, since it keeps no metadata beside the name.
//!
//! Rule (deterministic, documented in `docs/multipass.md`):
//! - `berth-<instance id>` when that is at most [`MAX_NAME_LEN`] characters (ids of up to 57
//!   characters, which includes every UUID);
//! - otherwise `berth--<first 32 hex digits of SHA-256(instance id)>`. A direct name can never
//!   start with `berth--` (instance ids do not start with `-`), so the two forms never collide;
//!   but a hashed name cannot be turned back into its id.
//!
//! Every name Berth makes matches Multipass's instance-name rule
//! (`^([a-zA-Z]|[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9])$`, see [`is_valid_name`]).

use berth_core::InstanceId;
use sha2::{Digest, Sha256};

/// Prefix of every Multipass instance Berth owns.
pub const NAME_PREFIX: &str = "berth-";
/// Prefix of the hashed form, used for instance ids too long for the direct form.
pub const HASHED_PREFIX: &str = "berth--";
/// Longest name Berth gives an instance: one DNS label, so it also works as a host name.
pub const MAX_NAME_LEN: usize = 63;

/// The Multipass instance name for an instance id.
pub fn name_for(id: &InstanceId) -> String {
    let direct = format!("{NAME_PREFIX}{id}");
    if direct.len() <= MAX_NAME_LEN {
        return direct;
    }
    let digest = Sha256::digest(id.as_str().as_bytes());
    format!("{HASHED_PREFIX}{}", &hex::encode(digest)[..32])
}

/// What a Multipass instance name says about ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Not Berth's (no `berth-` prefix).
    Foreign,
    /// Berth's, with the instance id read from the name.
    Id(InstanceId),
    /// Berth's, hashed form: the id cannot be read back from the name.
    Hashed,
}

/// Reads the ownership marker of a Multipass instance name.
pub fn owner_of(name: &str) -> Owner {
    if name.starts_with(HASHED_PREFIX) {
        return Owner::Hashed;
    }
    match name.strip_prefix(NAME_PREFIX).map(InstanceId::parse) {
        Some(Ok(id)) => Owner::Id(id),
        // `berth-` followed by something that is not an instance id (upper case, say): made by
        // hand, not by Berth.
        Some(Err(_)) | None => Owner::Foreign,
    }
}

/// Multipass's own instance-name rule (`mp::utils::valid_hostname`): a letter, then letters,
/// digits and `-`, not ending with `-`. Berth also caps the length at 63 (one DNS label).
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> InstanceId {
        InstanceId::parse(s).unwrap()
    }

    #[test]
    fn short_ids_map_directly_and_back() {
        let uuid = InstanceId::generate();
        for i in [id("web1"), id("0abc"), uuid, id(&"a".repeat(57))] {
            let name = name_for(&i);
            assert_eq!(name, format!("berth-{i}"));
            assert!(is_valid_name(&name), "{name}");
            assert_eq!(owner_of(&name), Owner::Id(i));
        }
    }

    #[test]
    fn long_ids_are_hashed_deterministically_and_never_collide_with_direct_names() {
        let long = id(&"a".repeat(58));
        let name = name_for(&long);
        assert_eq!(name, name_for(&long));
        assert!(name.starts_with("berth--") && name.len() == 39, "{name}");
        assert!(is_valid_name(&name), "{name}");
        assert_eq!(owner_of(&name), Owner::Hashed);
        assert_ne!(name_for(&id(&"b".repeat(63))), name);
    }

    #[test]
    fn foreign_names_are_not_owned() {
        for n in ["web1", "primary", "berth", "berth-Web1", "berthx-1"] {
            assert_eq!(owner_of(n), Owner::Foreign, "{n}");
        }
    }

    #[test]
    fn multipass_name_rule() {
        for ok in ["a", "primary", "berth-1-2", "A1"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "1abc", "-a", "a-", "a_b", "a.b", "--help", &"a".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
