//! The Provider conformance suite: one set of checks, driven by capabilities, that every backend
//! must pass (design section 3). Test support only; never shipped in the product binary.
//!
//! Each check panics with a message naming the rule that was broken. Every backend call is
//! bounded by a generous timeout so a hang fails loudly instead of stalling CI.

mod crash;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{
    DeleteOutcome, ErrorCode, GuestKind, Instance, InstanceId, InstanceRef, ListFilter, PowerOp, PowerState, Provider,
    Resize, StageEvent, StagePhase, VmSpec,
};

pub use crash::crash_between_stages;

/// Makes a valid spec for a new machine of a kind; the `&str` tag makes names and ids unique.
pub type SpecFactory = Box<dyn Fn(GuestKind, &str) -> VmSpec + Send + Sync>;
type Mutation = Box<dyn Fn(&mut VmSpec)>;

/// What the suite needs to know about the backend under test.
pub struct Fixture {
    pub provider: Arc<dyn Provider>,
    /// A valid spec for a new machine of `kind`; `tag` makes names and ids unique per check.
    pub spec: SpecFactory,
    /// The kinds this backend supports.
    pub kinds: Vec<GuestKind>,
}

impl Fixture {
    pub(crate) fn spec_for(&self, kind: GuestKind, tag: &str) -> VmSpec {
        let mut spec = (self.spec)(kind, tag);
        spec.kind = kind;
        spec
    }
}

/// Upper bound for any single backend call made by the suite.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(180);

pub(crate) async fn step<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("conformance: {what} did not finish within {STEP_TIMEOUT:?}"),
    }
}

/// Records every stage event, for checks that look at progress.
#[derive(Default, Clone)]
pub struct Recorder(pub Arc<Mutex<Vec<StageEvent>>>);

impl berth_core::ProgressSink for Recorder {
    fn event(&self, event: StageEvent) {
        self.0.lock().expect("recorder lock").push(event);
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<StageEvent> {
        self.0.lock().expect("recorder lock").clone()
    }
}

/// Runs every check for every kind the fixture supports.
pub async fn run_all(f: &Fixture) {
    for &kind in &f.kinds {
        unknown_is_not_found(f, kind).await;
        invalid_spec_creates_nothing(f, kind).await;
        lifecycle(f, kind).await;
        create_is_idempotent(f, kind).await;
        delete_is_idempotent(f, kind).await;
        list_filters_owned(f, kind).await;
        crash_between_stages(f, kind).await;
    }
}

pub(crate) async fn create(f: &Fixture, spec: &VmSpec, sink: &Recorder) -> Instance {
    step("create", f.provider.create(spec, sink))
        .await
        .unwrap_or_else(|e| panic!("conformance: create {} failed: {e}", spec.instance_id))
}

pub(crate) async fn delete(f: &Fixture, r: &InstanceRef) -> DeleteOutcome {
    step("delete", f.provider.delete(r))
        .await
        .unwrap_or_else(|e| panic!("conformance: delete {r} failed: {e}"))
}

/// Every machine (owned or not) whose name is `name`: catches half-made duplicates that carry
/// no marker yet.
/// Every machine (owned or not) that belongs to `spec`: carrying its instance id, or named as
/// it asked (a half-made duplicate may not carry the marker yet; a backend may report its own
/// name, e.g. Multipass's `berth-<id>`, so the id alone must also count).
pub(crate) async fn machines_of(f: &Fixture, spec: &VmSpec) -> Vec<Instance> {
    let all = step(
        "list --all",
        f.provider.list(ListFilter {
            all: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("conformance: list(all) failed: {e}"));
    all.into_iter()
        .filter(|i| i.name == spec.name || i.instance_id.as_ref() == Some(&spec.instance_id))
        .collect()
}

fn id_ref(spec: &VmSpec) -> InstanceRef {
    InstanceRef::Id(spec.instance_id.clone())
}

async fn power(f: &Fixture, r: &InstanceRef, op: PowerOp, want: PowerState) {
    let inst = step("power", f.provider.power(r, op))
        .await
        .unwrap_or_else(|e| panic!("conformance: {op} of {r} failed: {e}"));
    assert_eq!(inst.state, want, "conformance: after {op}, {r} should be {want}");
    let seen = describe(f, r).await;
    assert_eq!(
        seen.state, want,
        "conformance: describe after {op} of {r} should say {want}"
    );
}

async fn describe(f: &Fixture, r: &InstanceRef) -> Instance {
    step("describe", f.provider.describe(r))
        .await
        .unwrap_or_else(|e| panic!("conformance: describe {r} failed: {e}"))
}

async fn expect_not_found(f: &Fixture, r: &InstanceRef) {
    match step("describe", f.provider.describe(r)).await {
        Err(e) if e.code() == ErrorCode::NotFound => {}
        other => panic!("conformance: describe {r} should be NotFound, got {other:?}"),
    }
}

/// create → describe (by both ids) → power cycle → reconfigure → delete → gone.
pub async fn lifecycle(f: &Fixture, kind: GuestKind) {
    let caps = step("capabilities", f.provider.capabilities())
        .await
        .expect("capabilities");
    let spec = f.spec_for(kind, "life");
    let sink = Recorder::default();
    let inst = create(f, &spec, &sink).await;
    assert_eq!(
        inst.instance_id.as_ref(),
        Some(&spec.instance_id),
        "conformance: create returns the instance id"
    );
    assert_eq!(inst.name, spec.name, "conformance: create keeps the name");
    assert_eq!(inst.kind, kind, "conformance: create makes the requested kind");
    assert_eq!(inst.state, PowerState::Running, "conformance: a created machine runs");
    assert!(
        inst.ipv4.is_some() || inst.ipv6.is_some(),
        "conformance: a created machine has an address: {inst:?}"
    );
    let events = sink.events();
    assert!(
        events.iter().any(|e| e.phase == StagePhase::Completed),
        "conformance: create reports completed stages, got {events:?}"
    );

    let id = id_ref(&spec);
    let by_id = describe(f, &id).await;
    assert_eq!(
        by_id.backend_id, inst.backend_id,
        "conformance: describe by instance id"
    );
    let by_backend = describe(f, &InstanceRef::Backend(inst.backend_id.clone())).await;
    assert_eq!(
        by_backend.instance_id,
        Some(spec.instance_id.clone()),
        "conformance: describe by backend id"
    );

    if caps.power {
        power_cycle(f, &id, &caps).await;
    }
    // Reconfiguring is checked on a stopped machine, so it needs power control too.
    if caps.reconfigure && caps.power {
        let change = Resize {
            cores: Some(spec.cores + 1),
            memory_mib: Some(spec.memory_mib * 2),
            disk_gib: None,
        };
        let out = step("reconfigure", f.provider.reconfigure(&id, &change))
            .await
            .unwrap_or_else(|e| panic!("conformance: reconfigure {id} failed: {e}"));
        assert!(
            !out.restart_required,
            "conformance: reconfiguring a stopped machine needs no restart"
        );
        let after = describe(f, &id).await;
        assert_eq!(
            after.cores,
            Some(spec.cores + 1),
            "conformance: reconfigure changed cores"
        );
        assert_eq!(
            after.memory_mib,
            Some(spec.memory_mib * 2),
            "conformance: reconfigure changed memory"
        );
        power(f, &id, PowerOp::Start, PowerState::Running).await;
        let live = Resize {
            cores: Some(spec.cores),
            memory_mib: None,
            disk_gib: None,
        };
        let out = step("reconfigure", f.provider.reconfigure(&id, &live))
            .await
            .unwrap_or_else(|e| panic!("conformance: live reconfigure {id} failed: {e}"));
        let _ = out.restart_required; // backend-specific: hotplug may or may not apply it live
    }

    assert_eq!(
        delete(f, &id).await,
        DeleteOutcome::Deleted,
        "conformance: delete of a live machine"
    );
    expect_not_found(f, &id).await;
    assert!(
        machines_of(f, &spec).await.is_empty(),
        "conformance: delete leaves nothing named {}",
        spec.name
    );
}

/// stop, start (each twice: idempotent), reboot, graceful shutdown, as the backend can.
async fn power_cycle(f: &Fixture, id: &InstanceRef, caps: &berth_core::Capabilities) {
    power(f, id, PowerOp::Stop, PowerState::Stopped).await;
    power(f, id, PowerOp::Stop, PowerState::Stopped).await;
    power(f, id, PowerOp::Start, PowerState::Running).await;
    power(f, id, PowerOp::Start, PowerState::Running).await;
    if caps.reboot {
        power(f, id, PowerOp::Reboot, PowerState::Running).await;
    }
    if caps.graceful_shutdown {
        power(f, id, PowerOp::Shutdown { timeout_secs: 60 }, PowerState::Stopped).await;
    } else {
        power(f, id, PowerOp::Stop, PowerState::Stopped).await;
    }
}

/// Two creates with one key make one machine.
pub async fn create_is_idempotent(f: &Fixture, kind: GuestKind) {
    let spec = f.spec_for(kind, "idem");
    let first = create(f, &spec, &Recorder::default()).await;
    let second = create(f, &spec, &Recorder::default()).await;
    assert_eq!(
        first.backend_id, second.backend_id,
        "conformance: create twice with one key returns the same machine"
    );
    let named = machines_of(f, &spec).await;
    assert_eq!(
        named.len(),
        1,
        "conformance: create twice with one key makes exactly one machine, found {named:?}"
    );
    delete(f, &id_ref(&spec)).await;
}

/// Delete twice is fine; the second says nothing was there.
pub async fn delete_is_idempotent(f: &Fixture, kind: GuestKind) {
    let spec = f.spec_for(kind, "del2");
    create(f, &spec, &Recorder::default()).await;
    let id = id_ref(&spec);
    assert_eq!(delete(f, &id).await, DeleteOutcome::Deleted);
    assert_eq!(
        delete(f, &id).await,
        DeleteOutcome::AlreadyAbsent,
        "conformance: second delete is AlreadyAbsent"
    );
}

/// Unknown ids: describe and power say NotFound; delete succeeds.
pub async fn unknown_is_not_found(f: &Fixture, _kind: GuestKind) {
    let id = InstanceRef::Id(InstanceId::generate());
    expect_not_found(f, &id).await;
    let caps = step("capabilities", f.provider.capabilities())
        .await
        .expect("capabilities");
    if caps.power {
        match step("power", f.provider.power(&id, PowerOp::Start)).await {
            Err(e) if e.code() == ErrorCode::NotFound => {}
            other => panic!("conformance: start of an unknown id should be NotFound, got {other:?}"),
        }
    }
    assert_eq!(
        delete(f, &id).await,
        DeleteOutcome::AlreadyAbsent,
        "conformance: delete of an unknown id succeeds"
    );
}

/// A spec the backend must refuse: refused with the field named, and nothing made.
/// Beyond the backend-independent checks: more memory than the host has (backends that know
/// their capacity) and an unknown template (backends with templates).
pub async fn invalid_spec_creates_nothing(f: &Fixture, kind: GuestKind) {
    let caps = step("capabilities", f.provider.capabilities())
        .await
        .expect("capabilities");
    let mut cases: Vec<(&str, Mutation)> = vec![
        ("cores", Box::new(|s| s.cores = 0)),
        ("memory_mib", Box::new(|s| s.memory_mib = 8)),
        ("disk_gib", Box::new(|s| s.disk_gib = 0)),
    ];
    if caps.capacity {
        cases.push(("memory_mib", Box::new(|s| s.memory_mib = 1 << 40)));
    }
    if caps.list_templates {
        cases.push((
            "template",
            Box::new(|s| s.template = Some("no-such-template-berth".into())),
        ));
    }
    for (field, mutate) in cases {
        let mut spec = f.spec_for(kind, "bad");
        mutate(&mut spec);
        match step("create", f.provider.create(&spec, &Recorder::default())).await {
            Err(berth_core::ProviderError::InvalidSpec { field: got, .. }) => {
                assert_eq!(got, field, "conformance: the error names the field")
            }
            other => panic!("conformance: create with a bad {field} should be InvalidSpec({field}), got {other:?}"),
        }
        assert!(
            machines_of(f, &spec).await.is_empty(),
            "conformance: a refused create (bad {field}) leaves nothing behind"
        );
    }
}

/// `list` shows only Berth's machines unless asked for all, and filters by kind.
pub async fn list_filters_owned(f: &Fixture, kind: GuestKind) {
    let spec = f.spec_for(kind, "list");
    let inst = create(f, &spec, &Recorder::default()).await;
    let owned = step("list", f.provider.list(ListFilter::default()))
        .await
        .expect("list");
    assert!(
        owned.iter().all(|i| i.instance_id.is_some()),
        "conformance: list shows only owned machines"
    );
    assert!(
        owned.iter().any(|i| i.backend_id == inst.backend_id),
        "conformance: list shows the new machine"
    );
    let all = step(
        "list",
        f.provider.list(ListFilter {
            all: true,
            ..Default::default()
        }),
    )
    .await
    .expect("list all");
    for o in &owned {
        assert!(
            all.iter().any(|i| i.backend_id == o.backend_id),
            "conformance: list --all includes every owned machine, missing {}",
            o.backend_id
        );
    }
    let other = match kind {
        GuestKind::Vm => GuestKind::Container,
        GuestKind::Container => GuestKind::Vm,
    };
    let filtered = step(
        "list",
        f.provider.list(ListFilter {
            all: true,
            kind: Some(other),
            ..Default::default()
        }),
    )
    .await
    .expect("list");
    assert!(filtered.iter().all(|i| i.kind == other), "conformance: kind filter");
    assert!(
        !filtered.iter().any(|i| i.backend_id == inst.backend_id),
        "conformance: kind filter excludes {kind}"
    );
    // Without addresses (for counting what machines take): the same machines, the same sizes.
    let counted = step(
        "list",
        f.provider.list(ListFilter {
            without_addresses: true,
            ..Default::default()
        }),
    )
    .await
    .expect("list without addresses");
    // (Only the new machine is compared: other tests may share the backend.)
    let sizes = |l: &[Instance]| {
        l.iter()
            .find(|i| i.backend_id == inst.backend_id)
            .map(|i| (i.instance_id.clone(), i.cores, i.memory_mib, i.disk_gib))
    };
    assert!(
        sizes(&counted).is_some(),
        "conformance: a list without addresses shows the new machine"
    );
    assert_eq!(
        sizes(&counted),
        sizes(&owned),
        "conformance: a list without addresses gives the same sizes"
    );
    delete(f, &id_ref(&spec)).await;
}
