//! VMID allocation in `[vmid_min, vmid_max]`. Candidates are pseudo-random but derived from the
//! instance id (SHA-256 of `id:n`), so a re-run of an interrupted create tries the same VMIDs
//! first and meets its own half-made guest there (recognised by the marker, never by the VMID
//! alone). Each candidate is checked with `GET /cluster/nextid?vmid=N`; nothing is reserved, so
//! the clone/create itself may still find the id taken and the caller moves on.

use crate::client::Poll;
use std::collections::HashSet;

use berth_core::{InstanceId, ProviderError};
use sha2::{Digest, Sha256};

use super::ProxmoxProvider;
use super::guest::Guest;
use super::marker::owner_from_description;
use super::preflight::FirstVmid;
use crate::client::GuestType;
use crate::client::types::GuestConfig;

/// Candidates tried before giving up on finding a free VMID; lookups by marker inspect the same
/// candidates, so a guest allocation may have made is always found again.
pub(crate) const MAX_CANDIDATES: u32 = 32;

/// The `n`-th VMID candidate for `id`.
pub(crate) fn candidate(id: &InstanceId, n: u32, min: u32, max: u32) -> u32 {
    let digest = Sha256::digest(format!("{id}:{n}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    let span = u64::from(max - min) + 1;
    min + (u64::from_be_bytes(b) % span) as u32
}

/// The first `count` distinct candidates.
pub(crate) fn candidates(id: &InstanceId, min: u32, max: u32, count: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for n in 0..count {
        let c = candidate(id, n, min, max);
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Where a VMID search stands: the VMIDs known to be in use, the next candidate index (kept
/// across retries, so a retry moves on), and the node a cross-node clone is made on (the
/// template's), where its in-flight guest sits until the clone ends.
pub(crate) struct VmidSearch<'a> {
    pub used: &'a HashSet<u32>,
    pub next: u32,
    pub src_node: Option<&'a str>,
    /// `nextid`'s answer for the first candidate, asked before the search began (used once).
    asked: Option<FirstVmid>,
}

impl<'a> VmidSearch<'a> {
    pub(crate) fn new(used: &'a HashSet<u32>, src_node: Option<&'a str>, asked: FirstVmid) -> Self {
        VmidSearch {
            used,
            next: 0,
            src_node,
            asked: Some(asked),
        }
    }
}

/// What a candidate VMID turned out to be.
#[derive(Debug)]
pub(crate) enum Allocation {
    /// Free when asked: use it.
    Free(u32),
    /// Already holds this instance's guest (an earlier, interrupted attempt).
    Ours(Box<Guest>),
}

impl ProxmoxProvider {
    /// The next usable candidate from `search.next` on. A candidate already in use (`used`, or per
    /// `nextid`) is checked for this instance's marker (waiting while it is still being made),
    /// so an interrupted earlier attempt is found instead of duplicated.
    pub(crate) async fn allocate_vmid(
        &self,
        id: &InstanceId,
        ty: GuestType,
        search: &mut VmidSearch<'_>,
    ) -> Result<Allocation, ProviderError> {
        let (min, max) = (self.config.vmid_min, self.config.vmid_max);
        while search.next < MAX_CANDIDATES {
            let vmid = candidate(id, search.next, min, max);
            search.next += 1;
            if !search.used.contains(&vmid) {
                let free = match search.asked.take() {
                    Some((asked, answer)) if asked == vmid => answer?,
                    _ => self.client.vmid_is_free(vmid).await?,
                };
                if free {
                    return Ok(Allocation::Free(vmid));
                }
            }
            if let Some(g) = self.probe_ours(id, ty, vmid, search.src_node).await? {
                return Ok(Allocation::Ours(Box::new(g)));
            }
        }
        Err(ProviderError::unavailable(format!(
            "no free VMID found in [{min}, {max}] after {MAX_CANDIDATES} tries; widen vmid_min/vmid_max"
        )))
    }

    /// Whether `vmid` is this instance's guest, on whichever node holds it: the node
    /// `/cluster/resources` names, else the configured node, else `src_node` (the template's node,
    /// where PVE keeps a cross-node clone until its task ends). A guest still locked without a
    /// visible marker (lock `clone`/`create`: still being made), on any node, is waited for, then
    /// checked again.
    pub(crate) async fn probe_ours(
        &self,
        id: &InstanceId,
        ty: GuestType,
        vmid: u32,
        src_node: Option<&str>,
    ) -> Result<Option<Guest>, ProviderError> {
        let limit = self.clone_timeout();
        let poll = Poll::new(self.poll_interval());
        loop {
            let Some((node, cfg)) = self.config_anywhere(ty, vmid, src_node).await? else {
                return Ok(None);
            };
            let owner = cfg.get("description").as_deref().and_then(owner_from_description);
            if owner.as_ref() == Some(id) {
                let name = cfg
                    .get(if ty == GuestType::Qemu { "name" } else { "hostname" })
                    .unwrap_or_default();
                return Ok(Some(Guest {
                    vmid,
                    node,
                    ty,
                    name,
                    tagged: super::marker::owner_from_tags(&cfg.tags()).as_ref() == Some(id),
                    owner,
                    pool: super::marker::pool_from_tags(&cfg.tags()),
                    lock: cfg.lock(),
                    status: None,
                    template: false,
                    cores: None,
                    memory_mib: None,
                    disk_gib: None,
                }));
            }
            let being_made = matches!(cfg.lock().as_deref(), Some("clone" | "create"));
            if owner.is_some() || !being_made || poll.elapsed() >= limit {
                return Ok(None);
            }
            poll.sleep(limit).await;
        }
    }

    /// The config of `vmid` and the node it was read on; `None` when no candidate node has it.
    /// Nodes tried in order: the one `/cluster/resources` lists, the configured node, `src_node`
    /// (so a guest that moved between the listing and the read is still found).
    async fn config_anywhere(
        &self,
        ty: GuestType,
        vmid: u32,
        src_node: Option<&str>,
    ) -> Result<Option<(String, GuestConfig)>, ProviderError> {
        let resources = self.client.cluster_resources(Some("vm")).await?;
        let listed = resources
            .iter()
            .find(|r| r.vmid == Some(vmid))
            .and_then(|r| r.node.clone());
        let mut nodes: Vec<String> = Vec::with_capacity(3);
        for n in [listed.as_deref(), Some(self.config.node.as_str()), src_node]
            .into_iter()
            .flatten()
        {
            if !nodes.iter().any(|x| x == n) {
                nodes.push(n.to_owned());
            }
        }
        for node in nodes {
            match self.client.guest_config(&node, ty, vmid).await {
                Ok(c) => return Ok(Some((node, c))),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_stable_and_in_range() {
        let id = InstanceId::parse("web1").unwrap();
        let a = candidates(&id, 10_000, 99_999, 8);
        assert_eq!(a, candidates(&id, 10_000, 99_999, 8));
        assert!(a.iter().all(|v| (10_000..=99_999).contains(v)));
        assert!(a.len() >= 7, "distinct enough: {a:?}");
        let other = candidates(&InstanceId::parse("web2").unwrap(), 10_000, 99_999, 8);
        assert_ne!(a, other);
        assert_eq!(candidates(&id, 500, 500, 4), vec![500]);
    }
}
