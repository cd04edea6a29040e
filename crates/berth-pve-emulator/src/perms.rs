//! API tokens and their ACLs: privilege checks with PVE's propagation and 403 wording.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::ApiError;
use crate::state::World;

/// Every privilege PVE 9 knows (what a token with "all privileges on /" has).
pub(crate) const ALL_PRIVS: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// An API token `user@realm!name` with its secret and ACL entries.
#[derive(Clone)]
pub(crate) struct Token {
    pub tokenid: String,
    pub secret: String,
    pub acl: Vec<(String, BTreeSet<String>)>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("tokenid", &self.tokenid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Does an ACL on `acl_path` cover `path` (privileges propagate to sub-paths)?
fn covers(acl_path: &str, path: &str) -> bool {
    let acl = acl_path.trim_end_matches('/');
    acl.is_empty() || path == acl || path.strip_prefix(acl).is_some_and(|rest| rest.starts_with('/'))
}

impl Token {
    pub fn new(tokenid: &str, secret: &str, acl: Vec<(String, Vec<String>)>) -> Token {
        Token {
            tokenid: tokenid.to_string(),
            secret: secret.to_string(),
            acl: acl
                .into_iter()
                .map(|(p, privs)| (p, privs.into_iter().collect()))
                .collect(),
        }
    }

    /// `user@realm` (the part before `!`).
    pub fn user(&self) -> &str {
        self.tokenid.split('!').next().unwrap_or(&self.tokenid)
    }

    pub fn is_root(&self) -> bool {
        self.user() == "root@pam"
    }

    pub fn has(&self, path: &str, privilege: &str) -> bool {
        self.acl
            .iter()
            .any(|(p, privs)| covers(p, path) && privs.contains(privilege))
    }

    /// Privileges effective at `path`.
    pub fn privs_at(&self, path: &str) -> BTreeSet<String> {
        self.acl
            .iter()
            .filter(|(p, _)| covers(p, path))
            .flat_map(|(_, privs)| privs.iter().cloned())
            .collect()
    }

    /// `any = false`: all of `privs` needed; `any = true`: one suffices. 403 names what is missing.
    pub fn check(&self, path: &str, privs: &[&str], any: bool) -> Result<(), ApiError> {
        if any {
            if privs.iter().any(|p| self.has(path, p)) {
                return Ok(());
            }
            return Err(ApiError::Perm(format!("{path}, {}", privs.join("|"))));
        }
        match privs.iter().find(|p| !self.has(path, p)) {
            None => Ok(()),
            Some(p) => Err(ApiError::Perm(format!("{path}, {p}"))),
        }
    }

    pub fn allowed(&self, path: &str, privs: &[&str], any: bool) -> bool {
        self.check(path, privs, any).is_ok()
    }

    /// `check_vm_perm`: the guest's pool ACL counts too; the error names `/vms/<vmid>`.
    pub fn check_vm(&self, world: &World, vmid: u32, privs: &[&str], any: bool) -> Result<(), ApiError> {
        if let Some(pool) = world.pool_of(vmid)
            && self.allowed(&format!("/pool/{pool}"), privs, any)
        {
            return Ok(());
        }
        self.check(&format!("/vms/{vmid}"), privs, any)
    }

    pub fn vm_allowed(&self, world: &World, vmid: u32, privs: &[&str], any: bool) -> bool {
        self.check_vm(world, vmid, privs, any).is_ok()
    }

    /// `GET /access/permissions`: path → {privilege → 1 (propagate)}.
    pub fn permissions(&self, path: Option<&str>) -> BTreeMap<String, BTreeMap<String, u8>> {
        let mut out = BTreeMap::new();
        let paths: Vec<String> = match path {
            Some(p) => vec![p.to_string()],
            None => self.acl.iter().map(|(p, _)| p.clone()).collect(),
        };
        for p in paths {
            let privs: BTreeMap<String, u8> = self.privs_at(&p).into_iter().map(|x| (x, 1)).collect();
            out.insert(p, privs);
        }
        out
    }
}

/// Parses `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET` (value may be URI-escaped).
pub(crate) fn parse_auth_header(value: &str) -> Option<(String, String)> {
    static RE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)").expect("static regex"));
    let raw = RE.captures(value)?.get(1)?.as_str();
    let decoded = crate::propstr::uri_unescape(raw);
    let (id, secret) = decoded.split_once('=')?;
    let id = id.trim();
    if !id.contains('@') || !id.contains('!') {
        return None;
    }
    Some((id.to_string(), secret.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation() {
        let t = Token::new("u@pve!t", "s", vec![("/vms".into(), vec!["VM.Audit".into()])]);
        assert!(t.has("/vms/100", "VM.Audit"));
        assert!(!t.has("/vmsx", "VM.Audit"));
        assert!(!t.has("/", "VM.Audit"));
        let e = t.check("/vms/100", &["VM.Audit", "VM.Allocate"], false).unwrap_err();
        assert!(matches!(e, ApiError::Perm(m) if m == "/vms/100, VM.Allocate"));
    }

    #[test]
    fn auth_header() {
        assert_eq!(
            parse_auth_header("PVEAPIToken=berth@pve!agent=abc-123"),
            Some(("berth@pve!agent".into(), "abc-123".into()))
        );
        assert_eq!(
            parse_auth_header("PVEAPIToken=berth%40pve%21agent%3Dabc"),
            Some(("berth@pve!agent".into(), "abc".into()))
        );
        assert_eq!(parse_auth_header("Bearer x"), None);
    }
}
