//! Berth's ownership marker on PVE guests (tags `berth` + `berth-<id>`, and a description line
//! `berth-instance-id: <id>`), and finding a guest by it. A guest is never adopted on its VMID
//! alone: the marker must name the instance.

use berth_core::{InstanceId, InstanceRef, PoolMark, ProviderError};

use super::ProxmoxProvider;
use super::guest::Guest;
use super::vmid::{MAX_CANDIDATES, candidates};
use crate::client::types::ClusterResource;

pub(crate) const TAG: &str = "berth";
const TAG_PREFIX: &str = "berth-";
const DESC_KEY: &str = "berth-instance-id:";

/// A pool machine's tag: `berth-pool.<pool>.<key>` (the dots keep it from reading as an id).
const POOL_TAG_PREFIX: &str = "berth-pool.";

pub(crate) fn pool_tag(mark: &PoolMark) -> String {
    format!("{POOL_TAG_PREFIX}{}", mark.token())
}

/// The pool a tag list marks the guest as kept in.
pub(crate) fn pool_from_tags(tags: &[String]) -> Option<PoolMark> {
    tags.iter()
        .filter_map(|t| t.strip_prefix(POOL_TAG_PREFIX))
        .find_map(PoolMark::from_token)
}

/// The tags of a pool machine handed to `to`: its own marker and pool tag out, `to`'s in.
pub(crate) fn handed_over_tags(existing: &[String], from: &InstanceId, to: &InstanceId) -> String {
    let kept: Vec<String> = existing
        .iter()
        .filter(|t| **t != instance_tag(from) && !t.starts_with(POOL_TAG_PREFIX))
        .cloned()
        .collect();
    merged_tags(&kept, to)
}

/// The per-instance tag.
pub(crate) fn instance_tag(id: &InstanceId) -> String {
    format!("{TAG_PREFIX}{id}")
}

/// The description a Berth guest is born with (clone and create both carry it).
pub(crate) fn description(id: &InstanceId) -> String {
    format!("Managed by Berth; do not edit the line below.\n{DESC_KEY} {id}\n")
}

/// The owner named by a tag list: needs `berth` and one `berth-<id>` that parses as an id.
pub(crate) fn owner_from_tags(tags: &[String]) -> Option<InstanceId> {
    if !tags.iter().any(|t| t == TAG) {
        return None;
    }
    tags.iter()
        .filter_map(|t| t.strip_prefix(TAG_PREFIX))
        .find_map(|id| InstanceId::parse(id).ok())
}

/// The owner named by a description's `berth-instance-id:` line.
pub(crate) fn owner_from_description(desc: &str) -> Option<InstanceId> {
    desc.lines()
        .find_map(|l| l.trim().strip_prefix(DESC_KEY))
        .and_then(|id| InstanceId::parse(id.trim()).ok())
}

/// Whose machine of Berth's control plane a guest is, from its config's `tags` (PVE separates
/// them with `;`, `,` or spaces) and `description`: `instance <id>`, or `warm pool <pool>` for a
/// pool machine; `None` for any other guest. Such a machine has its owner (its orders, the
/// agent): the declarative mode never changes, adopts, exports or prunes it.
pub fn control_plane_owner(tags: &str, description: &str) -> Option<String> {
    let tags: Vec<String> = tags
        .split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(mark) = pool_from_tags(&tags) {
        return Some(format!("warm pool {}", mark.pool));
    }
    owner_from_tags(&tags)
        .or_else(|| owner_from_description(description))
        .map(|id| format!("instance {id}"))
}

/// Tags to set: what the guest has, plus Berth's two (PVE separates with `;`).
pub(crate) fn merged_tags(existing: &[String], id: &InstanceId) -> String {
    let mut tags: Vec<String> = existing.to_vec();
    for t in [TAG.to_owned(), instance_tag(id)] {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags.join(";")
}

impl ProxmoxProvider {
    /// Finds the guest carrying `id`'s marker. Tags first (one call already made); then the
    /// description of untagged, non-template guests that could be an interrupted create: those
    /// named `name` (the clone carries the name) and those at any VMID candidate allocation may
    /// have used for `id` (the same `MAX_CANDIDATES`).
    pub(crate) async fn find_owned(
        &self,
        id: &InstanceId,
        name: Option<&str>,
        resources: &[ClusterResource],
    ) -> Result<Option<Guest>, ProviderError> {
        let guests: Vec<Guest> = resources
            .iter()
            .filter_map(Guest::from_resource)
            .filter(|g| !g.template)
            .collect();
        let tagged: Vec<&Guest> = guests.iter().filter(|g| g.owner.as_ref() == Some(id)).collect();
        match tagged.as_slice() {
            [one] => return Ok(Some((*one).clone())),
            [] => {}
            many => {
                let ids: Vec<String> = many.iter().map(|g| g.vmid.to_string()).collect();
                return Err(ProviderError::conflict(format!(
                    "{} guests carry the marker of instance {id} (VMIDs {}); remove the duplicate",
                    many.len(),
                    ids.join(", ")
                )));
            }
        }
        let cands = candidates(id, self.config.vmid_min, self.config.vmid_max, MAX_CANDIDATES);
        for g in guests.iter().filter(|g| !g.tagged) {
            let named = name.is_some_and(|n| n == g.name);
            if !(named || cands.contains(&g.vmid)) {
                continue;
            }
            if let Some(found) = self.check_description(g, id).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Reads a guest's config and returns it as owned by `id` if its description says so.
    async fn check_description(&self, g: &Guest, id: &InstanceId) -> Result<Option<Guest>, ProviderError> {
        let cfg = match self.client.guest_config(&g.node, g.ty, g.vmid).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let owner = cfg.get("description").as_deref().and_then(owner_from_description);
        if owner.as_ref() != Some(id) {
            return Ok(None);
        }
        let mut found = g.clone();
        found.owner = owner;
        found.lock = cfg.lock();
        Ok(Some(found))
    }

    /// Locates a guest by Berth id (marker) or by VMID (`100` or `qemu/100`). `None` = absent.
    pub(crate) async fn locate(&self, r: &InstanceRef) -> Result<Option<Guest>, ProviderError> {
        let resources = self.client.cluster_resources(Some("vm")).await?;
        match r {
            InstanceRef::Id(id) => self.find_owned(id, None, &resources).await,
            InstanceRef::Backend(s) => {
                let vmid = parse_backend_id(s)?;
                let Some(mut g) = resources
                    .iter()
                    .filter_map(Guest::from_resource)
                    .find(|g| g.vmid == vmid)
                else {
                    return Ok(None);
                };
                if g.owner.is_none() && !g.template {
                    // Only a config that is gone means "no owner"; any other failure is reported.
                    match self.client.guest_config(&g.node, g.ty, g.vmid).await {
                        Ok(cfg) => g.owner = cfg.get("description").as_deref().and_then(owner_from_description),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Some(g))
            }
        }
    }

    /// Mutations act only on guests with Berth's marker.
    pub(crate) fn require_owned(g: &Guest) -> Result<(), ProviderError> {
        if g.owner.is_some() && !g.template {
            Ok(())
        } else {
            Err(ProviderError::conflict(format!(
                "{} {} is not managed by Berth (it has no Berth ownership marker)",
                g.ty.label(),
                g.vmid
            )))
        }
    }
}

/// `100` or `qemu/100` / `lxc/100`.
fn parse_backend_id(s: &str) -> Result<u32, ProviderError> {
    let n = s.rsplit('/').next().unwrap_or(s).trim();
    n.parse::<u32>().ok().filter(|v| *v >= 100).ok_or_else(|| {
        ProviderError::invalid(
            "id",
            format!("expected a Proxmox VMID like 100 or qemu/100 (got {s:?})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> InstanceId {
        InstanceId::parse(s).unwrap()
    }

    #[test]
    fn tags_need_both_parts() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(owner_from_tags(&t(&["berth", "berth-web-1"])), Some(id("web-1")));
        assert_eq!(owner_from_tags(&t(&["berth-web-1"])), None);
        assert_eq!(owner_from_tags(&t(&["berth", "prod"])), None);
        assert_eq!(merged_tags(&t(&["prod"]), &id("a1")), "prod;berth;berth-a1");
        assert_eq!(merged_tags(&t(&["berth", "berth-a1"]), &id("a1")), "berth;berth-a1");
    }

    #[test]
    fn description_roundtrip() {
        let d = description(&id("0f7c-web"));
        assert_eq!(owner_from_description(&d), Some(id("0f7c-web")));
        assert_eq!(
            owner_from_description("hello\nberth-instance-id:  x9 \n"),
            Some(id("x9"))
        );
        assert_eq!(owner_from_description("berth-instance-id: Not_Valid"), None);
        assert_eq!(owner_from_description(""), None);
    }

    #[test]
    fn a_control_plane_machine_is_known_by_its_tags_or_its_description() {
        assert_eq!(
            control_plane_owner("prod;berth;berth-a1", "").as_deref(),
            Some("instance a1")
        );
        assert_eq!(
            control_plane_owner("berth,berth-a1", "").as_deref(),
            Some("instance a1")
        );
        assert_eq!(
            control_plane_owner("", &description(&id("b2"))).as_deref(),
            Some("instance b2")
        );
        let pool = pool_tag(&PoolMark::new("small", "k1").unwrap());
        assert_eq!(
            control_plane_owner(&format!("berth;{pool}"), "").as_deref(),
            Some("warm pool small")
        );
        assert_eq!(control_plane_owner("berth;prod", "made by hand"), None);
        assert_eq!(control_plane_owner("", ""), None);
    }

    #[test]
    fn backend_ids() {
        assert_eq!(parse_backend_id("100").unwrap(), 100);
        assert_eq!(parse_backend_id("qemu/4711").unwrap(), 4711);
        assert!(parse_backend_id("web1").is_err());
        assert!(parse_backend_id("99").is_err());
    }
}
