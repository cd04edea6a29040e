//! Snapshots of Berth's guests: list, take, roll back and delete, each task awaited. PVE keeps
//! them in the guest's config, so they go when the guest does.

use berth_core::{DeleteOutcome, Instance, InstanceRef, ProviderError, Snapshot};

use super::ProxmoxProvider;
use super::guest::Guest;
use crate::client::types::SnapshotInfo;

/// PVE's `pve-configid` (letters, digits, `_`, `-`; a letter first; 2-40 characters) without the
/// names PVE reserves.
fn check_name(name: &str) -> Result<(), ProviderError> {
    let ok = (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(ProviderError::invalid(
            "name",
            format!("a snapshot name is 2-40 letters, digits, '_' or '-', starting with a letter (got {name:?})"),
        ));
    }
    if name.eq_ignore_ascii_case("current") || name.eq_ignore_ascii_case("pending") {
        return Err(ProviderError::invalid(
            "name",
            format!("'{name}' is a name PVE reserves"),
        ));
    }
    Ok(())
}

fn to_snapshot(s: SnapshotInfo) -> Snapshot {
    Snapshot {
        name: s.name,
        parent: s.parent,
        taken_at: s.snaptime,
        description: s.description.unwrap_or_default(),
        vmstate: s.vmstate,
    }
}

impl ProxmoxProvider {
    async fn snapshots_of(&self, g: &Guest) -> Result<Vec<Snapshot>, ProviderError> {
        let all: Vec<Snapshot> = self
            .client
            .snapshots(&g.node, g.ty, g.vmid)
            .await?
            .into_iter()
            .map(to_snapshot)
            .collect();
        // Oldest first: down the parent chain (two taken within one second share a `snaptime`).
        let depth = |s: &Snapshot| {
            let mut d = 0;
            let mut cur = s.parent.clone();
            while let Some(p) = cur.filter(|_| d < all.len()) {
                d += 1;
                cur = all.iter().find(|x| x.name == p).and_then(|x| x.parent.clone());
            }
            d
        };
        let mut keyed: Vec<(usize, Snapshot)> = all.iter().map(|s| (depth(s), s.clone())).collect();
        keyed.sort_by_key(|(d, s)| (*d, s.taken_at));
        Ok(keyed.into_iter().map(|(_, s)| s).collect())
    }

    pub(crate) async fn snapshots_ref(&self, r: &InstanceRef) -> Result<Vec<Snapshot>, ProviderError> {
        let g = self.owned(r).await?;
        self.snapshots_of(&g).await
    }

    pub(crate) async fn snapshot_ref(
        &self,
        r: &InstanceRef,
        name: &str,
        description: &str,
        vmstate: bool,
    ) -> Result<Snapshot, ProviderError> {
        check_name(name)?;
        let g = self.owned(r).await?;
        if self.snapshots_of(&g).await?.iter().any(|s| s.name == name) {
            return Err(ProviderError::conflict(format!(
                "{} already has a snapshot called {name}",
                g.label()
            )));
        }
        let what = format!("snapshot {name} of {}", g.label());
        let upid = self
            .client
            .create_snapshot(&g.node, g.ty, g.vmid, name, description, vmstate)
            .await
            .map_err(|e| ProviderError::from(e).context(&what))?;
        self.run_task(&upid, self.task_timeout(), &what).await?;
        self.snapshots_of(&g)
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ProviderError::internal(format!("{what}: taken, but not listed afterwards")))
    }

    pub(crate) async fn rollback_ref(
        &self,
        r: &InstanceRef,
        name: &str,
        start: bool,
    ) -> Result<Instance, ProviderError> {
        let g = self.owned(r).await?;
        if !self.snapshots_of(&g).await?.iter().any(|s| s.name == name) {
            return Err(ProviderError::not_found(format!("snapshot {name} of {}", g.label())));
        }
        let what = format!("rollback of {} to snapshot {name}", g.label());
        let upid = self
            .client
            .rollback_snapshot(&g.node, g.ty, g.vmid, name, start)
            .await
            .map_err(|e| ProviderError::from(e).context(&what))?;
        self.run_task(&upid, self.task_timeout(), &what).await?;
        self.describe_ref(r).await
    }

    pub(crate) async fn delete_snapshot_ref(
        &self,
        r: &InstanceRef,
        name: &str,
    ) -> Result<DeleteOutcome, ProviderError> {
        let g = self.owned(r).await?;
        if !self.snapshots_of(&g).await?.iter().any(|s| s.name == name) {
            return Ok(DeleteOutcome::AlreadyAbsent);
        }
        let what = format!("deletion of snapshot {name} of {}", g.label());
        let upid = self
            .client
            .delete_snapshot(&g.node, g.ty, g.vmid, name)
            .await
            .map_err(|e| ProviderError::from(e).context(&what))?;
        self.run_task(&upid, self.task_timeout(), &what).await?;
        Ok(DeleteOutcome::Deleted)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_names_follow_pves_format() {
        for ok in ["before-upgrade", "s1", "Nightly_2026"] {
            super::check_name(ok).unwrap();
        }
        for bad in ["1st", "a", "has space", "dot.ted", "current", &"x".repeat(41)] {
            let e = super::check_name(bad).unwrap_err();
            assert_eq!(e.code(), berth_core::ErrorCode::InvalidSpec, "{bad}: {e}");
        }
    }
}
