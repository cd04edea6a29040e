//! The planner is pure, so its promises are properties over generated clusters and files:
//! applying a plan converges (a second plan is empty), an exported cluster plans to nothing,
//! only what the file names is touched, nothing unowned without its flag, and changes come in
//! dependency order.

use std::collections::{BTreeMap, BTreeSet};

use berth_decl::ledger::Ledger;
use berth_decl::model::{Desired, Kind, Object, Observed};
use berth_decl::plan::{Action, plan, simulate};
use proptest::prelude::*;

fn obj(kind: Kind, addr: String, fields: Vec<(&str, String)>) -> Object {
    let mut o = Object::new(kind, addr);
    o.fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    o
}

fn storage() -> impl Strategy<Value = Object> {
    (
        "[a-z][a-z0-9]{1,6}",
        prop::sample::subsequence(vec!["backup", "images", "iso", "rootdir"], 1..4),
        any::<bool>(),
        prop::option::of(1u32..9),
    )
        .prop_map(|(id, content, disable, keep)| {
            let mut f = vec![
                ("type", "dir".to_owned()),
                ("path", format!("/srv/{id}")),
                ("content", content.join(",")),
            ];
            if disable {
                f.push(("disable", "1".into()));
            }
            if let Some(k) = keep {
                f.push(("prune-backups", format!("keep-last={k}")));
            }
            obj(Kind::Storage, format!("storage.{id}"), f)
        })
}

fn pool() -> impl Strategy<Value = Object> {
    ("[a-z]{2,6}", prop::option::of("[a-z ]{1,12}")).prop_map(|(id, comment)| {
        obj(
            Kind::Pool,
            format!("pool.{id}"),
            comment.into_iter().map(|c| ("comment", c)).collect(),
        )
    })
}

fn interface() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(vec!["pve1", "pve2"]),
        1u8..6,
        any::<bool>(),
        prop::option::of(1280u32..9000),
        any::<bool>(),
    )
        .prop_map(|(node, n, auto, mtu, addr)| {
            let mut f = vec![
                ("type", "bridge".to_owned()),
                ("autostart", if auto { "1" } else { "0" }.to_owned()),
            ];
            if let Some(m) = mtu {
                f.push(("mtu", m.to_string()));
            }
            if addr {
                f.push(("cidr", format!("192.168.{n}.1/24")));
            }
            obj(Kind::Interface, format!("net.{node}.vmbr{n}"), f)
        })
}

fn backup() -> impl Strategy<Value = Object> {
    (
        "[a-z]{2,6}",
        prop::sample::select(vec!["21:00", "sat 02:30", "daily"]),
        any::<bool>(),
        prop::collection::btree_set(100u32..110, 1..3),
    )
        .prop_map(|(id, schedule, enabled, vms)| {
            let vmid: Vec<String> = vms.iter().map(u32::to_string).collect();
            obj(
                Kind::Backup,
                format!("backup.{id}"),
                vec![
                    ("schedule", schedule.to_owned()),
                    ("enabled", if enabled { "1" } else { "0" }.to_owned()),
                    ("vmid", vmid.join(",")),
                    ("storage", "local".to_owned()),
                ],
            )
        })
}

fn dedup(mut v: Vec<Object>) -> Vec<Object> {
    let mut seen = BTreeMap::new();
    v.retain(|o| seen.insert(o.addr.clone(), ()).is_none());
    v
}

/// A cluster: `local` storage plus generated objects on nodes pve1 and pve2.
fn cluster() -> impl Strategy<Value = Observed> {
    (
        prop::collection::vec(storage(), 0..4),
        prop::collection::vec(pool(), 0..3),
        prop::collection::vec(interface(), 0..4),
        prop::collection::vec(backup(), 0..3),
    )
        .prop_map(|(s, p, i, b)| {
            let local = obj(
                Kind::Storage,
                "storage.local".into(),
                vec![
                    ("type", "dir".into()),
                    ("path", "/var/lib/vz".into()),
                    ("content", "backup,iso".into()),
                ],
            );
            let eno = |node: &str| {
                obj(
                    Kind::Interface,
                    format!("net.{node}.eno1"),
                    vec![("type", "eth".into()), ("autostart", "0".into())],
                )
            };
            let mut objects = vec![local, eno("pve1"), eno("pve2")];
            objects.extend(s.into_iter().filter(|o| o.addr != "storage.local"));
            objects.extend(p);
            objects.extend(i);
            objects.extend(b);
            Observed {
                objects: dedup(objects),
                cluster_name: Some("lab".into()),
                nodes: vec!["pve1".into(), "pve2".into()],
                ..Observed::default()
            }
        })
}

/// A file: some of the cluster's objects with fields changed or dropped, plus new ones.
fn file(o: &Observed) -> impl Strategy<Value = Desired> + use<> {
    let existing = o.objects.clone();
    (
        prop::collection::vec((any::<bool>(), any::<bool>(), 0u32..3), existing.len()),
        prop::collection::vec(storage(), 0..2),
        prop::collection::vec(interface(), 0..2),
    )
        .prop_map(move |(picks, new_s, new_i)| {
            let mut objects = Vec::new();
            for (o, (keep, change, which)) in existing.iter().zip(picks) {
                if !keep {
                    continue;
                }
                let mut d = o.clone();
                if change {
                    match (d.kind, which) {
                        (Kind::Storage, 0) => {
                            d.fields.insert("disable".into(), "1".into());
                        }
                        (Kind::Storage, _) => {
                            d.fields.remove("prune-backups");
                        }
                        (Kind::Interface, _) if d.get("type") == Some("bridge") => {
                            d.fields.insert("mtu".into(), "1500".into());
                        }
                        (Kind::Pool, _) => {
                            d.fields.insert("comment".into(), "changed".into());
                        }
                        (Kind::Backup, _) => {
                            d.fields.insert("enabled".into(), "0".into());
                        }
                        _ => {}
                    }
                }
                objects.push(d);
            }
            objects.extend(new_s);
            objects.extend(new_i);
            Desired {
                objects: dedup(objects),
                ..Desired::default()
            }
        })
}

fn scenario() -> impl Strategy<Value = (Observed, Desired)> {
    cluster().prop_flat_map(|o| {
        let f = file(&o);
        (Just(o), f)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// plan(D, apply(plan(D, O), O)) = ∅.
    #[test]
    fn applying_a_plan_converges((observed, desired) in scenario()) {
        let p = plan(&desired, &observed, "h").unwrap();
        prop_assume!(p.impossible().next().is_none());
        let after = simulate(&p, &observed);
        let again = plan(&desired, &after, "h").unwrap();
        prop_assert!(again.is_empty(), "{:#?}", again.changes);
    }

    /// Only what the file names is touched, and creates come in dependency order.
    #[test]
    fn only_named_objects_change_in_order((observed, desired) in scenario()) {
        let p = plan(&desired, &observed, "h").unwrap();
        for c in &p.changes {
            prop_assert!(desired.find(&c.addr).is_some(), "{} is not in the file", c.addr);
            prop_assert!(c.action != Action::Delete, "nothing is deleted without ensure = absent");
        }
        let kinds: Vec<Kind> = p.changes.iter().map(|c| c.kind).collect();
        let mut sorted = kinds.clone();
        sorted.sort();
        prop_assert_eq!(kinds, sorted);
        // The fingerprint of every touched object is what was observed.
        for c in &p.changes {
            prop_assert_eq!(&p.fingerprints[&c.addr], &berth_decl::plan::fingerprint(observed.find(&c.addr)));
        }
    }

    /// Nothing unowned is touched without its flag: with a ledger holding some of the cluster's
    /// objects, every change to one it does not hold is an adopted change (`--adopt` needed),
    /// and pruning deletes only what the ledger holds and the file no longer names.
    #[test]
    fn nothing_unowned_is_touched_without_its_flag(
        (observed, desired) in scenario(),
        owned in prop::collection::vec(any::<bool>(), 16),
        absent in prop::collection::vec(any::<bool>(), 16),
    ) {
        // Some entries say `ensure = "absent"`.
        let mut desired = desired;
        for (o, gone) in desired.objects.iter_mut().zip(&absent) {
            if *gone {
                o.absent = true;
                o.fields.clear();
            }
        }
        let past = Desired {
            objects: observed.objects.iter().zip(&owned).filter(|(_, o)| **o).map(|(x, _)| x.clone()).collect(),
            ..Desired::default()
        };
        let mut ledger = Ledger::default();
        let nothing = plan(&Desired::default(), &observed, "h0").unwrap();
        ledger.record(&past, &nothing, &[], Some(&observed), "h0", 0);
        let pruned = ledger.prune(&desired, &observed, &BTreeSet::new());
        // Pruning what the file still refers to (a backup job's storage) is an error, not a plan.
        let Ok(mut p) = plan(&pruned, &observed, "h") else {
            return Ok(());
        };
        p.adopt = Ledger::adopted(Some(&ledger), &desired, &observed);
        let gated: BTreeSet<&str> = p.adopted_changes().map(|c| c.addr.as_str()).collect();
        for c in p.changes.iter().filter(|c| !matches!(c.action, Action::Impossible { .. })) {
            let held = ledger.objects.contains_key(&c.addr);
            if observed.find(&c.addr).is_some() && !held {
                prop_assert!(gated.contains(c.addr.as_str()), "{} changes without --adopt", c.addr);
            }
            if c.action == Action::Delete {
                let asked = desired.find(&c.addr).is_some_and(|o| o.absent);
                let pruned = held && desired.find(&c.addr).is_none();
                prop_assert!(asked || pruned, "{} deleted", c.addr);
            }
        }
    }

    /// plan(export(O), O) = ∅: the exported file parses and describes the cluster exactly.
    #[test]
    fn an_exported_cluster_plans_to_nothing(observed in cluster()) {
        let text = berth_decl::export::export(&observed, Some("pve"));
        let desired = berth_decl::parse("site.toml", &text).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        let p = plan(&desired, &observed, "h").unwrap();
        prop_assert!(p.is_empty(), "{:#?}\n{}", p.changes, text);
    }
}

#[test]
fn deletes_come_last_in_reverse_order() {
    let observed = Observed {
        objects: vec![
            obj(Kind::Storage, "storage.old".into(), vec![("type", "dir".into())]),
            obj(Kind::Backup, "backup.old".into(), vec![("schedule", "21:00".into())]),
        ],
        nodes: vec!["pve1".into()],
        ..Observed::default()
    };
    let gone = |kind, addr: &str| {
        let mut o = Object::new(kind, addr);
        o.absent = true;
        o
    };
    let desired = Desired {
        objects: vec![
            gone(Kind::Storage, "storage.old"),
            gone(Kind::Backup, "backup.old"),
            obj(Kind::Pool, "pool.new".into(), vec![]),
            gone(Kind::Pool, "pool.never"),
        ],
        ..Desired::default()
    };
    let p = plan(&desired, &observed, "h").unwrap();
    let order: Vec<(&str, &Action)> = p.changes.iter().map(|c| (c.addr.as_str(), &c.action)).collect();
    assert_eq!(
        order,
        [
            ("pool.new", &Action::Create),
            ("backup.old", &Action::Delete),
            ("storage.old", &Action::Delete)
        ]
    );
    assert_eq!(p.unchanged, 1, "an absent object already gone needs nothing");
}
