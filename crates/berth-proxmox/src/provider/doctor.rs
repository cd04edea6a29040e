//! `validate()`: the doctor checks, one `Check` each: API reachable (and its version), token
//! valid, node online, template, storage, pool, container template, and the token's effective
//! privileges for Berth's flow (the minimal role of proxmox-facts §6.8).

use berth_core::{Check, CheckStatus};

use super::ProxmoxProvider;
use crate::client::PveError;
use crate::client::types::Permissions;

/// Privileges Berth needs on `/vms` (or the pool).
const VM_PRIVS: &[&str] = &[
    "VM.Allocate",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Cloudinit",
    "VM.Config.Options",
    "VM.Config.Disk",
    "VM.PowerMgmt",
    "VM.Audit",
];
/// Reading guest-agent addresses: PVE 9 name, PVE 8 name.
const AGENT_PRIVS: &[&str] = &["VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted", "VM.Monitor"];
const STORAGE_PRIVS: &[&str] = &["Datastore.AllocateSpace", "Datastore.Audit"];
const TEMPLATE_PRIVS: &[&str] = &["VM.Clone"];

/// What managing the site beyond guests needs (`berth pve`, the declarative mode, `migrate`),
/// per path, and what for. Missing ones warn: provisioning works without them.
const SITE_PRIVS: &[(&str, &[&str], &str)] = &[
    ("/", &["Sys.Audit", "Sys.Modify", "Sys.Console"], "backup jobs and HA"),
    (
        "/storage",
        &["Datastore.Allocate", "Datastore.Audit"],
        "storage definitions",
    ),
    ("/pool", &["Pool.Allocate", "Pool.Audit"], "pools"),
    (
        "/vms",
        &["VM.Migrate", "VM.Snapshot", "VM.Backup"],
        "migration, snapshots, backups",
    ),
];

impl ProxmoxProvider {
    pub(crate) async fn doctor(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        match self.client.version().await {
            Ok(v) => {
                let version = v.version.unwrap_or_else(|| "unknown version".into());
                checks.push(Check::ok(
                    "api",
                    format!("{} answers: Proxmox VE {version}", self.config.api_url),
                ));
                checks.push(Check::ok(
                    "token",
                    format!("API token {} is accepted", self.config.api_token_id),
                ));
            }
            Err(e) => {
                let (api, token) = unreachable_checks(&e, &self.config.api_url, &self.config.api_token_id);
                checks.push(api);
                checks.push(token);
                if checks.iter().any(|c| c.status == CheckStatus::Fail) {
                    checks.push(Check::fail("cluster", "not checked: the API cannot be used"));
                    return checks;
                }
            }
        }
        let node = self.check_node().await;
        // What lives on the node is not asked of a node that is not there (each answer would
        // be an error retried for seconds, saying nothing the node check did not).
        let node_ok = node.status != CheckStatus::Fail;
        checks.push(node);
        checks.push(self.check_template().await);
        checks.push(if node_ok {
            self.check_storage().await
        } else {
            Check::skipped("storage", "node")
        });
        if let Some(pool) = &self.config.pool {
            checks.push(self.check_pool(pool).await);
        }
        if let Some(t) = &self.config.ct_template {
            checks.push(if node_ok {
                self.check_ct(t).await
            } else {
                Check::skipped("ct_template", "node")
            });
        }
        checks.extend(self.check_permissions().await);
        checks.extend(self.check_site_permissions().await);
        checks
    }

    /// One check per path of [`SITE_PRIVS`], plus `Sys.Modify` on the node (its network).
    async fn check_site_permissions(&self) -> Vec<Check> {
        let node_path = format!("/nodes/{}", self.config.node);
        let node_privs: &[&str] = &["Sys.Audit", "Sys.Modify"];
        let all = SITE_PRIVS
            .iter()
            .map(|(p, needed, what)| (p.to_string(), *needed, *what))
            .chain(std::iter::once((node_path, node_privs, "the node's network")));
        let mut out = Vec::new();
        for (path, needed, what) in all {
            let name = format!("site permissions {path}");
            out.push(match self.client.permissions(Some(&path)).await {
                Ok(perms) => match judge(&name, &path, needed, &perms) {
                    c if c.status == CheckStatus::Fail => {
                        Check::warn(name, format!("{} (needed for {what}, not for provisioning)", c.detail))
                    }
                    _ => Check::ok(name, format!("the token may manage {what} ({})", needed.join(", "))),
                },
                Err(e) => Check::warn(name, format!("cannot read the token's permissions: {e}")),
            });
        }
        out
    }

    async fn check_node(&self) -> Check {
        match self.check_node_fits(&self.config.node, None, None).await {
            Ok(()) => Check::ok("node", format!("node '{}' is online", self.config.node)),
            Err(e) => Check::fail("node", e.to_string()),
        }
    }

    async fn check_template(&self) -> Check {
        let tpl = self.config.template_vmid;
        match self.client.cluster_resources(Some("vm")).await {
            Ok(res) => match res.iter().find(|r| r.vmid == Some(tpl) && r.is_guest()) {
                Some(r) if r.template && r.kind.as_deref() == Some("qemu") => Check::ok(
                    "template",
                    format!(
                        "template {tpl} ({}) on node {}",
                        r.name.as_deref().unwrap_or("?"),
                        r.node.as_deref().unwrap_or("?")
                    ),
                ),
                Some(_) => Check::fail(
                    "template",
                    format!("VM {tpl} exists but is not a template (template_vmid)"),
                ),
                None => Check::fail(
                    "template",
                    format!(
                        "no VM {tpl} visible to the token (template_vmid); it is missing or the token lacks VM.Audit on it"
                    ),
                ),
            },
            Err(e) => Check::fail("template", e.to_string()),
        }
    }

    async fn check_storage(&self) -> Check {
        match self.target_storage("images").await {
            Ok(st) => {
                let detail = format!(
                    "storage '{}' on node '{}' holds VM images",
                    self.config.storage, self.config.node
                );
                if st.has_content("rootdir") {
                    Check::ok("storage", detail)
                } else {
                    Check::warn("storage", format!("{detail}, but not container root disks (rootdir)"))
                }
            }
            Err(e) => Check::fail("storage", e.to_string()),
        }
    }

    async fn check_pool(&self, pool: &str) -> Check {
        match self.client.pools(None).await {
            Ok(pools) if pools.iter().any(|p| p.poolid == pool) => Check::ok("pool", format!("pool '{pool}' exists")),
            Ok(_) => Check::fail(
                "pool",
                format!("pool '{pool}' does not exist or the token lacks Pool.Audit on it"),
            ),
            Err(e) => Check::fail("pool", e.to_string()),
        }
    }

    async fn check_ct(&self, volid: &str) -> Check {
        let storage = volid.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match self
            .client
            .storage_content(&self.config.node, storage, Some("vztmpl"))
            .await
        {
            Ok(v) if v.iter().any(|v| v.volid == volid) => Check::ok("ct_template", format!("'{volid}' is present")),
            Ok(_) => Check::fail(
                "ct_template",
                format!("'{volid}' is not on node '{}'", self.config.node),
            ),
            Err(e) => Check::fail("ct_template", e.to_string()),
        }
    }

    async fn check_permissions(&self) -> Vec<Check> {
        let vm_path = match &self.config.pool {
            Some(p) => format!("/pool/{p}"),
            None => "/vms".to_owned(),
        };
        let storage_path = format!("/storage/{}", self.config.storage);
        let tpl_path = format!("/vms/{}", self.config.template_vmid);
        let mut vm_needed: Vec<&str> = VM_PRIVS.to_vec();
        vm_needed.push(AGENT_PRIVS[0]);
        let mut out = Vec::new();
        for (path, needed) in [
            (&vm_path, vm_needed),
            (&storage_path, STORAGE_PRIVS.to_vec()),
            (&tpl_path, TEMPLATE_PRIVS.to_vec()),
        ] {
            let name = format!("permissions {path}");
            let check = match self.client.permissions(Some(path)).await {
                Ok(perms) => judge(&name, path, &needed, &perms),
                Err(e) => Check::fail(name, format!("cannot read the token's permissions: {e}")),
            };
            out.push(check);
        }
        out
    }
}

/// Compares held privileges with the needed ones; the agent privilege may have either name.
fn judge(name: &str, path: &str, needed: &[&str], perms: &Permissions) -> Check {
    let held = effective(path, perms);
    let has = |p: &str| held.iter().any(|h| h == p);
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|p| {
            if AGENT_PRIVS.contains(p) {
                !AGENT_PRIVS.iter().any(|a| has(a))
            } else {
                !has(p)
            }
        })
        .collect();
    if missing.is_empty() {
        Check::ok(name, format!("the token holds what Berth needs on {path}"))
    } else {
        Check::fail(
            name,
            format!(
                "the token lacks {} on {path}; grant them (e.g. `pveum acl modify {path} --tokens <token> --roles <role>`)",
                missing.join(", ")
            ),
        )
    }
}

/// Privileges effective on `path`: its own entry, else the nearest ancestor's.
fn effective(path: &str, perms: &Permissions) -> Vec<String> {
    let mut p = path.to_owned();
    loop {
        if let Some(m) = perms.get(&p) {
            return m.keys().cloned().collect();
        }
        match p.rfind('/') {
            Some(0) if p != "/" => p = "/".to_owned(),
            Some(i) if i > 0 => p.truncate(i),
            _ => return Vec::new(),
        }
    }
}

fn unreachable_checks(e: &PveError, url: &str, token: &str) -> (Check, Check) {
    match e.status() {
        Some(401) => (
            Check::ok("api", format!("{url} answers")),
            Check::fail(
                "token",
                format!("API token {token} is refused ({e}); check api_token_id and the secret"),
            ),
        ),
        Some(403) => (
            Check::ok("api", format!("{url} answers")),
            Check::warn(
                "token",
                format!("API token {token} is valid but may not read /version: {e}"),
            ),
        ),
        Some(_) => (
            Check::warn("api", format!("{url} answers with an error: {e}")),
            Check::ok("token", "accepted"),
        ),
        None => (
            Check::fail("api", format!("cannot reach {url}: {e}")),
            Check::fail("token", "not checked: the API is not reachable"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn privileges_are_judged_with_inheritance_and_agent_aliases() {
        let perms: Permissions = serde_json::from_value(json!({
            "/": {"VM.Audit": 1},
            "/vms": {"VM.Allocate": 1, "VM.Config.CPU": 1, "VM.Config.Memory": 1, "VM.Config.Network": 1,
                     "VM.Config.Cloudinit": 1, "VM.Config.Options": 1, "VM.Config.Disk": 1, "VM.PowerMgmt": 1,
                     "VM.Audit": 1, "VM.Monitor": 1}
        }))
        .unwrap();
        let mut needed = VM_PRIVS.to_vec();
        needed.push(AGENT_PRIVS[0]);
        assert_eq!(judge("p", "/vms", &needed, &perms).status, CheckStatus::Ok);
        assert_eq!(judge("p", "/vms/9000", &needed, &perms).status, CheckStatus::Ok);
        let c = judge("p", "/storage/local", STORAGE_PRIVS, &perms);
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.contains("Datastore.AllocateSpace"), "{}", c.detail);
    }
}
