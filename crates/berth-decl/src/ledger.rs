//! The ledger: what Berth last applied from a site file, per object the fields the file set. It
//! is the third side of drift (the file, the last apply, the cluster now): a field that differs
//! on the cluster from what was applied changed outside Berth; one where the file differs from
//! what was applied is an edit not applied yet. And it is how an object taken out of the file is
//! known to be Berth's to delete (`--prune`), where an object the file never named is left alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::fields;
use crate::model::{Desired, Kind, Object, Observed};
use crate::plan::{Action, Plan};

/// One object as applied: its kind and the fields the file set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub kind: Kind,
    pub fields: BTreeMap<String, String>,
}

/// What was last applied from one site file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The hash of the file's text that was applied.
    pub file_hash: String,
    /// When, in milliseconds since the epoch.
    pub applied_at: i64,
    pub objects: BTreeMap<String, Applied>,
}

/// A field that differs between two sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldDrift {
    pub addr: String,
    pub field: String,
    /// The value applied (the ledger's).
    pub applied: Option<String>,
    /// The cluster's now (for a change outside Berth) or the file's (for an edit not applied).
    pub now: Option<String>,
}

impl FieldDrift {
    /// `cores: "2" → "4"` (`(unset)` for no value).
    pub fn change(&self) -> String {
        let show = |v: &Option<String>| v.as_deref().map_or("(unset)".to_owned(), |s| format!("{s:?}"));
        format!("{}: {} → {}", self.field, show(&self.applied), show(&self.now))
    }
}

/// Drift against the last apply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Fields the cluster changed outside Berth since the last apply.
    pub outside: Vec<FieldDrift>,
    /// Objects Berth applied that are gone from the cluster.
    pub gone: Vec<String>,
    /// Fields the file changed since the last apply (not applied yet: not drift).
    pub edited: Vec<FieldDrift>,
    /// Objects the file no longer names that Berth applied from it (`--prune` deletes them).
    pub removed: Vec<String>,
}

impl Drift {
    /// Whether the cluster moved away from what Berth applied.
    pub fn is_drift(&self) -> bool {
        !self.outside.is_empty() || !self.gone.is_empty()
    }

    /// Keeps only the objects `targets` (globs) name; none: everything.
    pub fn retain(&mut self, targets: &[String]) {
        if targets.is_empty() {
            return;
        }
        let hit = |a: &str| targets.iter().any(|t| crate::model::glob(t, a));
        self.outside.retain(|f| hit(&f.addr));
        self.edited.retain(|f| hit(&f.addr));
        self.gone.retain(|a| hit(a));
        self.removed.retain(|a| hit(a));
    }
}

impl Ledger {
    /// Records that `plan`, made from `desired` (a file whose text hashes to `file_hash`) against
    /// the cluster `before` (when known), was applied, limited to `targets` (globs; empty:
    /// everything). The objects the file names are Berth's as the file says them; those it asks
    /// to be gone, and those the plan deleted, leave the ledger. An object taken out of the file
    /// stays until it is pruned, or until an apply finds it gone from the cluster (deleted by a
    /// pruning apply that failed part way, or by hand): a later object under its address is not
    /// the one Berth applied.
    pub fn record(
        &mut self,
        desired: &Desired,
        plan: &Plan,
        targets: &[String],
        before: Option<&Observed>,
        file_hash: &str,
        applied_at: i64,
    ) {
        let selected = |addr: &str| targets.is_empty() || targets.iter().any(|t| crate::model::glob(t, addr));
        for o in desired.objects.iter().filter(|o| selected(&o.addr)) {
            if o.absent {
                self.objects.remove(&o.addr);
            } else {
                let applied = Applied {
                    kind: o.kind,
                    fields: o.fields.clone(),
                };
                self.objects.insert(o.addr.clone(), applied);
            }
        }
        for c in plan.changes.iter().filter(|c| c.action == Action::Delete) {
            self.objects.remove(&c.addr);
        }
        if let Some(before) = before {
            self.objects
                .retain(|addr, _| desired.find(addr).is_some() || before.find(addr).is_some());
        }
        self.file_hash = file_hash.to_owned();
        self.applied_at = applied_at;
    }

    /// After a rollback put the guests `addrs` back as they were before an apply: the fields this
    /// ledger holds for them are taken from the cluster now, so what the rollback restored is not
    /// drift, and the file's values show as edits not applied yet. Creation inputs (a clone's
    /// source) are kept: the cluster does not show them.
    pub fn rolled_back(&mut self, addrs: &[String], observed: &Observed) {
        for addr in addrs {
            let (Some(applied), Some(live)) = (self.objects.get_mut(addr), observed.find(addr)) else {
                continue;
            };
            let kind = applied.kind;
            applied.fields.retain(|k, v| {
                if fields::creation_input(kind, k) {
                    return true;
                }
                // A field PVE leaves out is at its default: kept as that, so a later change
                // to it by hand is drift.
                match live.get(k).or_else(|| fields::default(kind, k)) {
                    Some(now) => {
                        now.clone_into(v);
                        true
                    }
                    None => false,
                }
            });
        }
    }

    /// The objects `desired` names that are on the cluster but not in this ledger (all of them
    /// without one): an apply of the file takes them over (one it says to be absent, to delete
    /// it). Never a machine of the control plane nor its HA resource.
    pub fn adopted(ledger: Option<&Ledger>, desired: &Desired, observed: &Observed) -> Vec<String> {
        desired
            .objects
            .iter()
            .filter(|o| observed.find(&o.addr).is_some() && observed.control_plane_owner(&o.addr).is_none())
            .filter(|o| !ledger.is_some_and(|l| l.objects.contains_key(&o.addr)))
            .map(|o| o.addr.clone())
            .collect()
    }

    /// The objects Berth applied from the file that it no longer names.
    pub fn removed_from<'a>(&'a self, desired: &'a Desired) -> impl Iterator<Item = &'a str> {
        self.objects
            .keys()
            .filter(|a| desired.find(a).is_none())
            .map(String::as_str)
    }

    /// What pruning deletes: the objects Berth applied from the file that it no longer names,
    /// still on the cluster, that no other file's ledger (`held`) holds; never a network card's
    /// stanza (`eth`: the file only configured it), nor a machine of the control plane.
    pub fn prunable<'a>(
        &'a self,
        desired: &'a Desired,
        observed: &'a Observed,
        held: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = &'a Object> {
        self.removed_from(desired)
            .filter(|a| !held.contains(*a))
            .filter_map(|a| observed.find(a))
            .filter(|o| !(o.kind == Kind::Interface && o.get("type") == Some("eth")))
            .filter(|o| observed.control_plane_owner(&o.addr).is_none())
    }

    /// `desired` with the [`prunable`](Self::prunable) objects asked to be gone: planning it
    /// deletes them.
    pub fn prune(&self, desired: &Desired, observed: &Observed, held: &BTreeSet<String>) -> Desired {
        let mut out = desired.clone();
        for o in self.prunable(desired, observed, held) {
            let mut gone = Object::new(o.kind, &o.addr);
            gone.absent = true;
            out.objects.push(gone);
        }
        out
    }

    /// The three-way comparison: file, last apply, cluster.
    pub fn drift(&self, desired: &Desired, observed: &Observed) -> Drift {
        let mut d = Drift::default();
        let differs = |kind: Kind, k: &str, a: Option<&str>, b: Option<&str>| !fields::same(kind, k, a, b);
        for (addr, applied) in &self.objects {
            let kind = applied.kind;
            let want = desired.find(addr);
            match observed.find(addr) {
                // Taken out of the file and gone: nothing to say.
                None if want.is_none() => continue,
                None => d.gone.push(addr.clone()),
                Some(live) => {
                    for (k, v) in &applied.fields {
                        // A change the file has taken over since (file = cluster) is no drift.
                        let adopted = want.is_some_and(|w| !differs(kind, k, w.get(k), live.get(k)));
                        if differs(kind, k, Some(v), live.get(k)) && !fields::creation_input(kind, k) && !adopted {
                            d.outside.push(FieldDrift {
                                addr: addr.clone(),
                                field: k.clone(),
                                applied: Some(v.clone()),
                                now: live.get(k).map(str::to_owned),
                            });
                        }
                    }
                }
            }
            match want {
                None => d.removed.push(addr.clone()),
                Some(want) => {
                    let keys = applied.fields.keys().chain(want.fields.keys());
                    let mut seen: Vec<&String> = keys.collect();
                    seen.sort();
                    seen.dedup();
                    for k in seen {
                        let (a, w) = (applied.fields.get(k), want.fields.get(k));
                        if differs(kind, k, a.map(String::as_str), w.map(String::as_str)) {
                            d.edited.push(FieldDrift {
                                addr: addr.clone(),
                                field: k.clone(),
                                applied: a.cloned(),
                                now: w.cloned(),
                            });
                        }
                    }
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(addr: &str, fields: &[(&str, &str)]) -> Object {
        let mut o = Object::new(Kind::Pool, addr);
        for (k, v) in fields {
            o.fields.insert((*k).into(), (*v).into());
        }
        o
    }

    #[test]
    fn drift_separates_changes_outside_from_edits_and_removals() {
        let applied = Desired {
            objects: vec![obj("pool.web", &[("comment", "front")]), obj("pool.old", &[])],
            ..Desired::default()
        };
        let mut ledger = Ledger::default();
        let made = crate::plan::plan(&applied, &Observed::default(), "h1").unwrap();
        ledger.record(&applied, &made, &[], None, "h1", 1);
        // The file now: web's comment edited, old taken out, new added.
        let file = Desired {
            objects: vec![obj("pool.web", &[("comment", "front ends")]), obj("pool.new", &[])],
            ..Desired::default()
        };
        // The cluster: web's comment changed by hand; old still there.
        let live = Observed {
            objects: vec![obj("pool.web", &[("comment", "by hand")]), obj("pool.old", &[])],
            ..Observed::default()
        };
        let d = ledger.drift(&file, &live);
        assert_eq!(d.outside.len(), 1);
        assert_eq!(
            (d.outside[0].applied.as_deref(), d.outside[0].now.as_deref()),
            (Some("front"), Some("by hand"))
        );
        assert_eq!(d.edited[0].now.as_deref(), Some("front ends"));
        assert_eq!(d.removed, ["pool.old"]);
        assert!(d.gone.is_empty() && d.is_drift());
        // Pruning asks only for what Berth applied and the file dropped to be gone.
        let pruned = ledger.prune(&file, &live, &BTreeSet::new());
        let gone: Vec<&str> = pruned
            .objects
            .iter()
            .filter(|o| o.absent)
            .map(|o| o.addr.as_str())
            .collect();
        assert_eq!(gone, ["pool.old"]);
        // Not what another file's ledger holds.
        let held = BTreeSet::from(["pool.old".to_owned()]);
        assert_eq!(ledger.prunable(&file, &live, &held).count(), 0);
        // Gone from the cluster is drift too.
        let empty = Observed::default();
        assert_eq!(ledger.drift(&applied, &empty).gone, ["pool.old", "pool.web"]);

        // An apply of the file (without pool.old) keeps pool.old while the cluster has it...
        let noop = crate::plan::plan(&file, &live, "h2").unwrap();
        let mut kept = ledger.clone();
        kept.record(&file, &noop, &[], Some(&live), "h2", 2);
        assert!(kept.objects.contains_key("pool.old"), "kept until pruned");
        // ...and forgets it once an apply finds it gone: a pool made later under that id by
        // someone else is not Berth's to prune.
        let without_old = Observed {
            objects: vec![obj("pool.web", &[("comment", "by hand")])],
            ..Observed::default()
        };
        kept.record(&file, &noop, &[], Some(&without_old), "h2", 3);
        assert!(!kept.objects.contains_key("pool.old"));
        assert!(
            kept.objects.contains_key("pool.new"),
            "what the file names stays, made or not"
        );
    }

    #[test]
    fn a_rollback_sets_the_guests_it_put_back_as_the_cluster_has_them() {
        let mut applied = Object::new(Kind::Vm, "vm.100");
        for (k, v) in [("cores", "4"), ("onboot", "1"), ("clone", "9000")] {
            applied.fields.insert(k.into(), v.into());
        }
        let desired = Desired {
            objects: vec![applied.clone()],
            ..Desired::default()
        };
        let mut ledger = Ledger::default();
        let nothing = crate::plan::plan(&Desired::default(), &Observed::default(), "h").unwrap();
        ledger.record(&desired, &nothing, &[], None, "h", 1);
        let mut live = Object::new(Kind::Vm, "vm.100");
        live.fields.insert("cores".into(), "2".into());
        let observed = Observed {
            objects: vec![live],
            ..Observed::default()
        };
        ledger.rolled_back(&["vm.100".into(), "vm.404".into()], &observed);
        let fields = &ledger.objects["vm.100"].fields;
        assert_eq!(fields.get("cores").map(String::as_str), Some("2"));
        assert_eq!(
            fields.get("clone").map(String::as_str),
            Some("9000"),
            "a creation input stays"
        );
        assert_eq!(
            fields.get("onboot").map(String::as_str),
            crate::fields::default(Kind::Vm, "onboot"),
            "left out by PVE: its default"
        );
        // The file's values are now edits not applied, not drift.
        let d = ledger.drift(&desired, &observed);
        assert!(!d.is_drift(), "{d:?}");
        assert!(d.edited.iter().any(|f| f.field == "cores"), "{d:?}");
    }
}
