//! The ledger: what Berth last applied from a site file, per object the fields the file set. It
//! is the third side of drift (the file, the last apply, the cluster now): a field that differs
//! on the cluster from what was applied changed outside Berth; one where the file differs from
//! what was applied is an edit not applied yet. And it is how an object taken out of the file is
//! known to be Berth's to delete (`--prune`), where an object the file never named is left alone.

use std::collections::BTreeMap;

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
}

impl Ledger {
    /// Records that `plan`, made from `desired` (a file whose text hashes to `file_hash`), was
    /// applied, limited to `targets` (globs; empty: everything). The objects the file names are
    /// Berth's as the file says them; those it asks to be gone, and those the plan deleted, leave
    /// the ledger. An object taken out of the file stays until it is pruned.
    pub fn record(&mut self, desired: &Desired, plan: &Plan, targets: &[String], file_hash: &str, applied_at: i64) {
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
        self.file_hash = file_hash.to_owned();
        self.applied_at = applied_at;
    }

    /// The objects Berth applied from the file that it no longer names.
    pub fn removed_from<'a>(&'a self, desired: &'a Desired) -> impl Iterator<Item = &'a str> {
        self.objects
            .keys()
            .filter(|a| desired.find(a).is_none())
            .map(String::as_str)
    }

    /// `desired` with the objects taken out of the file (and still on the cluster) asked to be
    /// gone: planning it deletes them. Only what this ledger says Berth applied is pruned.
    pub fn prune(&self, desired: &Desired, observed: &Observed) -> Desired {
        let mut out = desired.clone();
        for addr in self.removed_from(desired) {
            if let Some(o) = observed.find(addr) {
                let mut gone = Object::new(o.kind, addr);
                gone.absent = true;
                out.objects.push(gone);
            }
        }
        out
    }

    /// The three-way comparison: file, last apply, cluster.
    pub fn drift(&self, desired: &Desired, observed: &Observed) -> Drift {
        let mut d = Drift::default();
        let differs = |kind: Kind, k: &str, a: Option<&str>, b: Option<&str>| !fields::same(kind, k, a, b);
        for (addr, applied) in &self.objects {
            let kind = applied.kind;
            match observed.find(addr) {
                None => d.gone.push(addr.clone()),
                Some(live) => {
                    for (k, v) in &applied.fields {
                        if differs(kind, k, Some(v), live.get(k)) && !write_only(kind, k) {
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
            match desired.find(addr) {
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

/// Fields a guest is made from that the cluster does not keep: never drift.
fn write_only(kind: Kind, field: &str) -> bool {
    (kind == Kind::Vm && field == "clone") || (kind == Kind::Ct && crate::ct::is_creation_input(field))
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
        ledger.record(&applied, &made, &[], "h1", 1);
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
        let pruned = ledger.prune(&file, &live);
        let gone: Vec<&str> = pruned
            .objects
            .iter()
            .filter(|o| o.absent)
            .map(|o| o.addr.as_str())
            .collect();
        assert_eq!(gone, ["pool.old"]);
        // Gone from the cluster is drift too.
        let empty = Observed::default();
        assert_eq!(ledger.drift(&applied, &empty).gone, ["pool.old", "pool.web"]);
    }
}
