//! The planner: pure, from what the file asks for and what the cluster is, to the changes and
//! their real effect. Only fields the file sets are compared (a field PVE leaves out counts as its
//! default); only objects the file names are touched; deletes only for `ensure = "absent"`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fields;
use crate::model::{Desired, Kind, Object, Observed};

/// What applying a change does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create,
    /// Every changed field applies in place.
    Update,
    /// Applied now, but these fields wait for the running guest's next restart.
    UpdateRestart {
        restart: Vec<String>,
    },
    /// The guest moves to another node (then the other fields are applied).
    Move {
        to: String,
    },
    /// A create-only field changed: the object is removed and made anew.
    Replace {
        because: String,
    },
    Delete,
    /// Cannot be done at all (the reason says why); the plan fails.
    Impossible {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One object's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub addr: String,
    pub kind: Kind,
    #[serde(flatten)]
    pub action: Action,
    pub fields: Vec<FieldChange>,
    /// Everything the object is to be (for create and replace: what is sent).
    pub after: BTreeMap<String, String>,
    /// The object as observed when planned (none for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<BTreeMap<String, String>>,
    /// Secrets by reference, resolved only when sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// The file's line.
    pub line: usize,
}

/// A plan: the changes in apply order, and what each touched object looked like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub changes: Vec<Change>,
    /// Objects the file names that need nothing.
    pub unchanged: usize,
    /// Per touched address, a hash of the object as observed ("absent" when it was not there):
    /// apply refuses when it differs.
    pub fingerprints: BTreeMap<String, String>,
    /// The site file's hash.
    pub file_hash: String,
    /// The cluster it was made against (its name and nodes): applied only there.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Objects the file names that are on the cluster but that Berth has not applied from this
    /// file before (not in its ledger): the apply takes them over. No API call; not a change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopt: Vec<String>,
}

/// A problem found while planning (a reference to something that does not exist, a cycle).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}: {addr}: {message}")]
pub struct PlanError {
    pub line: usize,
    pub addr: String,
    pub message: String,
}

/// The object as observed, hashed.
pub fn fingerprint(o: Option<&Object>) -> String {
    match o {
        None => "absent".into(),
        Some(o) => {
            let mut h = Sha256::new();
            for (k, v) in &o.fields {
                h.update(format!("{k}={v}\n"));
            }
            hex::encode(h.finalize())
        }
    }
}

fn storage_type<'a>(d: &'a Object, o: Option<&'a Object>) -> Option<&'a str> {
    d.get("type").or_else(|| o.and_then(|o| o.get("type")))
}

/// Plans `desired` against `observed`.
pub fn plan(desired: &Desired, observed: &Observed, file_hash: &str) -> Result<Plan, Vec<PlanError>> {
    check_references(desired, observed)?;
    let mut changes = Vec::new();
    let mut unchanged = 0;
    if let Some(c) = cluster(desired, observed) {
        changes.push(c);
    }
    for d in &desired.objects {
        let o = observed.find(&d.addr);
        let change = match (d.absent, o) {
            (true, None) => None,
            (true, Some(o)) => Some(change(d, Action::Delete, diff_all(o, None), BTreeMap::new())),
            (false, None) => Some(create(d, observed)),
            (false, Some(o)) => update(d, o),
        };
        // A machine of Berth's control plane is its orders' to change, never a site file's.
        let change = match (change, observed.control_plane_owner(&d.addr)) {
            (Some(c), Some(owner)) if !matches!(c.action, Action::Impossible { .. }) => Some(Change {
                action: Action::Impossible {
                    reason: format!(
                        "{} belongs to Berth's control plane ({owner}): its orders change it, never a site file",
                        d.addr
                    ),
                },
                ..c
            }),
            (c, _) => c,
        };
        match change {
            Some(mut c) => {
                c.before = o.map(|o| o.fields.clone());
                changes.push(c)
            }
            None => unchanged += 1,
        }
    }
    // Creates and updates in dependency order, deletes after them in reverse.
    changes.sort_by_key(|c| match c.action {
        Action::Delete => (1, 10 - c.kind as u8),
        _ => (0, c.kind as u8),
    });
    let fingerprints = changes
        .iter()
        .filter(|c| c.kind != Kind::Cluster)
        .map(|c| (c.addr.clone(), fingerprint(observed.find(&c.addr))))
        .collect();
    Ok(Plan {
        version: 1,
        changes,
        unchanged,
        fingerprints,
        file_hash: file_hash.to_owned(),
        cluster: observed.cluster_name.clone(),
        nodes: observed.nodes.clone(),
        adopt: Vec::new(),
    })
}

fn change(d: &Object, action: Action, fields: Vec<FieldChange>, after: BTreeMap<String, String>) -> Change {
    Change {
        addr: d.addr.clone(),
        kind: d.kind,
        action,
        fields,
        after,
        before: None,
        secrets: d.secrets.clone(),
        line: d.line,
    }
}

fn diff_all(o: &Object, after: Option<&Object>) -> Vec<FieldChange> {
    o.fields
        .iter()
        .map(|(k, v)| FieldChange {
            field: k.clone(),
            before: Some(v.clone()),
            after: after.and_then(|a| a.get(k)).map(str::to_owned),
        })
        .collect()
}

fn create(d: &Object, observed: &Observed) -> Change {
    let fields = d
        .fields
        .iter()
        .map(|(k, v)| FieldChange {
            field: k.clone(),
            before: None,
            after: Some(v.clone()),
        })
        .collect();
    if matches!(d.kind, Kind::Vm | Kind::Ct) {
        let other = if d.kind == Kind::Vm { Kind::Ct } else { Kind::Vm };
        if observed.find(&format!("{}.{}", other.as_str(), d.id())).is_some() {
            let what = if other == Kind::Vm { "a VM" } else { "a container" };
            let reason = format!("VMID {} is {what} on the cluster", d.id());
            return change(d, Action::Impossible { reason }, fields, d.fields.clone());
        }
    }
    if d.kind == Kind::Ct && d.get("ostemplate").is_none() {
        let reason = "a container is made from an OS template: set ostemplate (e.g. \"local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst\")".to_owned();
        return change(d, Action::Impossible { reason }, fields, d.fields.clone());
    }
    // A network card is hardware: it cannot be made, only configured.
    if d.kind == Kind::Interface && d.get("type") == Some("eth") {
        let reason = format!("{} is not a network card of this node", d.id());
        return change(d, Action::Impossible { reason }, fields, d.fields.clone());
    }
    if d.kind == Kind::Interface
        && let Some((node, _)) = d.node_iface()
        && !observed.nodes.iter().any(|n| n == node)
    {
        let reason = format!("node {node} is not a node of this cluster");
        return change(d, Action::Impossible { reason }, fields, d.fields.clone());
    }
    change(d, Action::Create, fields, d.fields.clone())
}

fn update(d: &Object, o: &Object) -> Option<Change> {
    let ty = storage_type(d, Some(o));
    let diffs: Vec<FieldChange> = d
        .fields
        .iter()
        // `clone`, `ostemplate` and the first keys only say what a guest was made from.
        .filter(|(k, _)| !fields::creation_input(d.kind, k))
        .filter(|(k, v)| !fields::same(d.kind, k, Some(v), o.get(k)))
        .map(|(k, v)| FieldChange {
            field: k.clone(),
            before: o.get(k).map(str::to_owned),
            after: Some(v.clone()),
        })
        .collect();
    if diffs.is_empty() {
        return None;
    }
    // The object as it is, with the file's fields over it.
    let mut after = o.fields.clone();
    after.extend(d.fields.clone());
    if d.kind == Kind::Vm {
        let action = vm_action(&diffs, o);
        return Some(change(d, action, diffs, after));
    }
    if d.kind == Kind::Ct {
        let action = ct_action(&diffs, o);
        return Some(change(d, action, diffs, after));
    }
    let action = match diffs.iter().find(|c| fields::create_only(d.kind, &c.field, ty)) {
        Some(c) if d.kind == Kind::Storage && c.field == "type" => Action::Impossible {
            reason: "a storage definition does not change type; give the new one another id".into(),
        },
        Some(c) => Action::Replace {
            because: format!("{} (only set when {} is created)", c.field, d.addr),
        },
        None => Action::Update,
    };
    Some(change(d, action, diffs, after))
}

/// What a VM's changes do: a disk never shrinks, a node change is a move, and fields a running
/// guest cannot take live wait for its restart.
fn vm_action(diffs: &[FieldChange], o: &Object) -> Action {
    guest_action(diffs, o, |f| crate::vm::live(f, o.get("hotplug")))
}

/// What a container's changes do: as a VM's, and a create-only option (`unprivileged`) is never
/// changed by destroying the container.
fn ct_action(diffs: &[FieldChange], o: &Object) -> Action {
    if let Some(c) = diffs
        .iter()
        .find(|c| !crate::vm::is_meta(&c.field) && fields::create_only(Kind::Ct, &c.field, None))
    {
        return Action::Impossible {
            reason: format!(
                "{} is set when a container is created; make a new container (another vmid) and move the data",
                c.field
            ),
        };
    }
    // pve-container moves a volume of a stopped container only.
    let stays_running = o.get("state") == Some("running")
        && !diffs
            .iter()
            .any(|c| c.field == "state" && c.after.as_deref() == Some("stopped"));
    if stays_running && let Some(c) = diffs.iter().find(|c| c.field.ends_with(".storage")) {
        return Action::Impossible {
            reason: format!(
                "{} moves to another storage only while the container is stopped: set state = \"stopped\" for that apply",
                crate::vm::key_of(&c.field)
            ),
        };
    }
    guest_action(diffs, o, crate::ct::live)
}

/// A guest's changes: a disk never shrinks, a node change is a move, and fields a running guest
/// does not take `live` wait for its restart.
fn guest_action(diffs: &[FieldChange], o: &Object, live: impl Fn(&str) -> bool) -> Action {
    let bytes = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
    for c in diffs.iter().filter(|c| c.field.ends_with(".size")) {
        if let (Some(b), Some(a)) = (bytes(&c.before), bytes(&c.after))
            && a < b
        {
            let key = crate::vm::key_of(&c.field);
            return Action::Impossible {
                reason: format!(
                    "{key} would shrink from {} to {}: PVE grows disks only",
                    crate::vm::size_text(b),
                    crate::vm::size_text(a)
                ),
            };
        }
    }
    if let Some(c) = diffs.iter().find(|c| c.field == "node") {
        return Action::Move {
            to: c.after.clone().unwrap_or_default(),
        };
    }
    let running = o.get("state") == Some("running")
        && !diffs
            .iter()
            .any(|c| c.field == "state" && c.after.as_deref() == Some("stopped"));
    let restart: Vec<String> = diffs
        .iter()
        .filter(|c| running && !live(&c.field))
        .map(|c| c.field.clone())
        .collect();
    if restart.is_empty() {
        Action::Update
    } else {
        Action::UpdateRestart { restart }
    }
}

/// The cluster is asserted: a name or node list that differs cannot be applied.
fn cluster(d: &Desired, o: &Observed) -> Option<Change> {
    let mut fields = Vec::new();
    if let Some(name) = &d.cluster_name
        && o.cluster_name.as_ref() != Some(name)
    {
        fields.push(FieldChange {
            field: "name".into(),
            before: o.cluster_name.clone(),
            after: Some(name.clone()),
        });
    }
    if !d.nodes.is_empty() && d.nodes != o.nodes {
        fields.push(FieldChange {
            field: "nodes".into(),
            before: Some(o.nodes.join(",")),
            after: Some(d.nodes.join(",")),
        });
    }
    (!fields.is_empty()).then(|| Change {
        addr: "cluster".into(),
        kind: Kind::Cluster,
        action: Action::Impossible {
            reason: "the cluster is asserted, never changed: create or join nodes with pvecm (root@pam)".into(),
        },
        fields,
        after: BTreeMap::new(),
        before: None,
        secrets: BTreeMap::new(),
        line: 0,
    })
}

/// What the file names must exist (in the file or the cluster), and bridges may not enslave
/// each other in a circle.
fn check_references(d: &Desired, o: &Observed) -> Result<(), Vec<PlanError>> {
    let mut errors = Vec::new();
    let present = |addr: &str| {
        let wanted = d.find(addr);
        wanted.is_some_and(|w| !w.absent) || (wanted.is_none() && o.find(addr).is_some())
    };
    for obj in d.objects.iter().filter(|x| !x.absent) {
        let mut need = |addr: String, what: &str, field: &str| {
            let addr = addr.as_str();
            if !present(addr) {
                errors.push(PlanError {
                    line: obj.line,
                    addr: format!("{}.{field}", obj.addr),
                    message: format!("{what} does not exist (in the file or on the cluster)"),
                });
            }
        };
        match obj.kind {
            Kind::Ha => {
                // `vm:150` → `vm.150`, `ct:210` → `ct.210`.
                let guest = obj.id().replacen(':', ".", 1);
                need(guest.clone(), &guest, "guest");
            }
            Kind::Backup => {
                if let Some(s) = obj.get("storage") {
                    need(format!("storage.{s}"), &format!("storage {s}"), "storage");
                }
                if let Some(p) = obj.get("pool") {
                    need(format!("pool.{p}"), &format!("pool {p}"), "pool");
                }
            }
            Kind::Vm | Kind::Ct => {
                let node = obj.get("node").unwrap_or_default();
                // A container's template is a volume of a storage (`local:vztmpl/…`).
                if let Some((s, _)) = obj.get("ostemplate").and_then(|t| t.split_once(':')) {
                    need(format!("storage.{s}"), &format!("storage {s}"), "ostemplate");
                }
                for (k, v) in &obj.fields {
                    if k.ends_with(".storage") {
                        need(format!("storage.{v}"), &format!("storage {v}"), k);
                    } else if k.ends_with(".bridge") {
                        need(format!("net.{node}.{v}"), &format!("bridge {v} of {node}"), k);
                    }
                }
                if let Some(p) = obj.get("pool") {
                    need(format!("pool.{p}"), &format!("pool {p}"), "pool");
                }
            }
            Kind::Interface => {
                let (node, _) = obj.node_iface().unwrap_or_default();
                for f in ["bridge_ports", "slaves", "vlan-raw-device"] {
                    for port in obj.get(f).unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
                        need(format!("net.{node}.{port}"), &format!("interface {port} of {node}"), f);
                    }
                }
            }
            _ => {}
        }
    }
    // Ports form a graph per node: a cycle can never be brought up.
    let mut edges: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for obj in d.objects.iter().filter(|x| x.kind == Kind::Interface && !x.absent) {
        let (node, _) = obj.node_iface().unwrap_or_default();
        let ports = ["bridge_ports", "slaves", "vlan-raw-device"]
            .iter()
            .flat_map(|f| obj.get(f).unwrap_or_default().split(','))
            .filter(|p| !p.is_empty())
            .map(|p| format!("net.{node}.{p}"))
            .collect();
        edges.insert(&obj.addr, ports);
    }
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_string()];
        while let Some(at) = stack.pop() {
            for next in edges.get(at.as_str()).into_iter().flatten() {
                if next == start {
                    let line = d.find(start).map_or(0, |x| x.line);
                    errors.push(PlanError {
                        line,
                        addr: start.to_string(),
                        message: "its ports lead back to itself (a cycle)".into(),
                    });
                    stack.clear();
                    break;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

impl Plan {
    /// The changes to objects the plan adopts: an apply makes them only when told to (`--adopt`),
    /// since nothing says the object is Berth's yet.
    pub fn adopted_changes(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| !matches!(c.action, Action::Impossible { .. }) && self.adopt.contains(&c.addr))
    }

    /// Only the changes to objects matching one of `targets` (`vm.150`, globs with `*`); the
    /// whole plan when empty. References were checked against the whole file.
    pub fn only(mut self, targets: &[String]) -> Plan {
        if targets.is_empty() {
            return self;
        }
        let hit = |addr: &str| targets.iter().any(|t| crate::model::glob(t, addr));
        self.changes.retain(|c| hit(&c.addr));
        self.fingerprints.retain(|a, _| hit(a));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
    pub fn impossible(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| matches!(c.action, Action::Impossible { .. }))
    }
    /// `Plan: 2 create, 1 update, 0 replace, 0 delete; 3 unchanged`.
    pub fn summary(&self) -> String {
        let n = |f: fn(&Action) -> bool| self.changes.iter().filter(|c| f(&c.action)).count();
        let restarts: Vec<&str> = self
            .changes
            .iter()
            .filter(|c| matches!(c.action, Action::UpdateRestart { .. }))
            .map(|c| c.addr.as_str())
            .collect();
        let mut s = format!(
            "Plan: {} create, {} update{}, {} move, {} replace, {} delete; {} unchanged",
            n(|a| *a == Action::Create),
            n(|a| matches!(a, Action::Update | Action::UpdateRestart { .. })),
            if restarts.is_empty() {
                String::new()
            } else {
                format!(" ({} needs a restart: {})", restarts.len(), restarts.join(", "))
            },
            n(|a| matches!(a, Action::Move { .. })),
            n(|a| matches!(a, Action::Replace { .. })),
            n(|a| *a == Action::Delete),
            self.unchanged
        );
        let bad = n(|a| matches!(a, Action::Impossible { .. }));
        if bad > 0 {
            s.push_str(&format!("; {bad} impossible"));
        }
        s
    }
}

/// The pure model of applying a plan: what the cluster's objects become. Used by the property
/// tests; the real apply must end where this does.
pub fn simulate(plan: &Plan, observed: &Observed) -> Observed {
    let mut out = observed.clone();
    for c in &plan.changes {
        match &c.action {
            Action::Create
            | Action::Update
            | Action::UpdateRestart { .. }
            | Action::Move { .. }
            | Action::Replace { .. } => {
                out.objects.retain(|o| o.addr != c.addr);
                let mut o = Object::new(c.kind, c.addr.clone());
                o.fields = c.after.clone();
                out.objects.push(o);
            }
            Action::Delete => out.objects.retain(|o| o.addr != c.addr),
            Action::Impossible { .. } => {}
        }
    }
    out
}
