use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use berth_core::{
    Capabilities, Capacity, Check, CheckStatus, DeleteOutcome, ErrorCode, ExecOutput, Instance, InstanceRef,
    ListFilter, PowerOp, ProgressSink, ReconfigureOutcome, Resize, Template, VmSpec,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::*;

/// A backend that counts the calls reaching it and answers what the test tells it to; while
/// `held`, calls wait until the test releases them.
struct Fake {
    calls: AtomicUsize,
    validate_calls: AtomicUsize,
    outcome: Mutex<Option<ProviderError>>,
    held: AtomicBool,
    gate: Semaphore,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            validate_calls: AtomicUsize::new(0),
            outcome: Mutex::new(None),
            held: AtomicBool::new(false),
            gate: Semaphore::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn answer(&self, outcome: Option<ProviderError>) {
        *lock(&self.outcome) = outcome;
    }

    fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Calls from now on go straight through; those already waiting keep waiting.
    fn unhold(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.gate.add_permits(1000);
    }

    async fn step(&self) -> Result<(), ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.held.load(Ordering::SeqCst) {
            self.gate.acquire().await.expect("gate open").forget();
        }
        match lock(&self.outcome).clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Provider for Fake {
    fn backend(&self) -> &'static str {
        "fake"
    }
    async fn validate(&self) -> Vec<Check> {
        self.validate_calls.fetch_add(1, Ordering::SeqCst);
        vec![Check::ok("fake", "reachable")]
    }
    async fn capabilities(&self) -> Result<Capabilities, ProviderError> {
        self.step().await.map(|()| Capabilities::default())
    }
    async fn create(&self, _spec: &VmSpec, _progress: &dyn ProgressSink) -> Result<Instance, ProviderError> {
        self.step().await.and(Err(ProviderError::unsupported("fake create")))
    }
    async fn describe(&self, _id: &InstanceRef) -> Result<Instance, ProviderError> {
        self.step().await.and(Err(ProviderError::unsupported("fake describe")))
    }
    async fn list(&self, _filter: ListFilter) -> Result<Vec<Instance>, ProviderError> {
        self.step().await.map(|()| Vec::new())
    }
    async fn power(&self, _id: &InstanceRef, _op: PowerOp) -> Result<Instance, ProviderError> {
        self.step().await.and(Err(ProviderError::unsupported("fake power")))
    }
    async fn reconfigure(&self, _id: &InstanceRef, _change: &Resize) -> Result<ReconfigureOutcome, ProviderError> {
        self.step().await.map(|()| ReconfigureOutcome {
            restart_required: false,
        })
    }
    async fn delete(&self, _id: &InstanceRef) -> Result<DeleteOutcome, ProviderError> {
        self.step().await.map(|()| DeleteOutcome::AlreadyAbsent)
    }
    async fn list_templates(&self) -> Result<Vec<Template>, ProviderError> {
        self.step().await.map(|()| Vec::new())
    }
    async fn capacity(&self) -> Result<Capacity, ProviderError> {
        self.step().await.map(|()| Capacity::default())
    }
    async fn exec(&self, _id: &InstanceRef, command: &str, _timeout: Duration) -> Result<ExecOutput, ProviderError> {
        self.step().await.map(|()| ExecOutput {
            exit_status: 0,
            stdout: command.to_owned(),
            stderr: String::new(),
            truncated: false,
        })
    }
}

/// A rate limit that never throttles these tests.
const UNLIMITED: RateLimit = RateLimit {
    qps: 10_000.0,
    burst: 10_000,
};

fn breaker(failures: u32) -> BreakerConfig {
    BreakerConfig {
        failures,
        cooldown_seconds: 30,
    }
}

fn guarded(fake: &Arc<Fake>, rate: RateLimit, config: BreakerConfig) -> Arc<Guarded> {
    Arc::new(Guarded::new("pve", fake.clone(), rate, config))
}

async fn list(g: &Guarded) -> Result<Vec<Instance>, ProviderError> {
    g.list(ListFilter::default()).await
}

/// Lets spawned tasks run until `done` holds (tasks blocked on the fake's gate stay blocked).
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("spawned tasks did not get there");
}

/// `f`, or a panic if it never finishes (the paused clock jumps to the deadline when all tasks
/// are stuck, so a wedged test fails instead of hanging).
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .expect("stuck: the call never finished")
}

/// Opens the circuit of `g` (threshold `failures`) with `Unavailable` answers.
async fn open_circuit(g: &Guarded, fake: &Fake, failures: u32) {
    fake.answer(Some(ProviderError::unavailable("connection refused")));
    for _ in 0..failures {
        assert_eq!(list(g).await.unwrap_err().code(), ErrorCode::Unavailable);
    }
    assert_eq!(g.state(), CircuitState::Open);
}

fn assert_fails_fast(result: Result<Vec<Instance>, ProviderError>, says: &str) {
    let e = result.expect_err("an open circuit fails fast");
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("circuit open for backend \"pve\""), "{msg}");
    assert!(msg.contains(says), "{msg} should say {says:?}");
}

// --- configuration ---

#[test]
fn config_defaults_and_toml_shape() {
    assert_eq!(RateLimit::default(), RateLimit { qps: 10.0, burst: 20 });
    assert_eq!(
        BreakerConfig::default(),
        BreakerConfig {
            failures: 5,
            cooldown_seconds: 30
        }
    );
    let rate: RateLimit = toml::from_str("qps = 10\nburst = 20").unwrap();
    assert_eq!(rate, RateLimit { qps: 10.0, burst: 20 });
    let rate: RateLimit = toml::from_str("qps = 2.5").unwrap();
    assert_eq!(rate, RateLimit { qps: 2.5, burst: 20 });
    let b: BreakerConfig = toml::from_str("failures = 3\ncooldown_seconds = 60").unwrap();
    assert_eq!(
        b,
        BreakerConfig {
            failures: 3,
            cooldown_seconds: 60
        }
    );
    let e = toml::from_str::<RateLimit>("qps = 10\nburts = 20").unwrap_err();
    assert!(e.to_string().contains("burts"), "{e}");
    assert!(toml::from_str::<BreakerConfig>("cooldown = 5").is_err());
}

#[test]
fn validation_names_the_field_and_the_range() {
    assert_eq!(RateLimit::default().validate(), Ok(()));
    assert_eq!(BreakerConfig::default().validate(), Ok(()));
    assert_eq!(
        RateLimit {
            qps: 10_000.0,
            burst: 10_000
        }
        .validate(),
        Ok(())
    );
    for qps in [0.0, -1.0, f64::NAN, f64::INFINITY, 10_000.5] {
        let (key, msg) = RateLimit { qps, burst: 20 }.validate().unwrap_err();
        assert_eq!(key, "qps");
        assert!(msg.contains("greater than 0 and at most 10000"), "{msg}");
    }
    for burst in [0, 10_001] {
        let (key, msg) = RateLimit { qps: 1.0, burst }.validate().unwrap_err();
        assert_eq!(key, "burst");
        assert!(msg.contains("between 1 and 10000"), "{msg}");
    }
    let (key, msg) = BreakerConfig {
        failures: 0,
        cooldown_seconds: 30,
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        (key.as_str(), msg.contains("between 1 and 1000")),
        ("failures", true),
        "{msg}"
    );
    for cooldown_seconds in [0, 3_601] {
        let (key, msg) = BreakerConfig {
            failures: 5,
            cooldown_seconds,
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            (key.as_str(), msg.contains("between 1 and 3600")),
            ("cooldown_seconds", true),
            "{msg}"
        );
    }
}

// --- token bucket ---

#[tokio::test(start_paused = true)]
async fn bucket_enforces_qps_after_the_burst() {
    let bucket = TokenBucket::new(RateLimit { qps: 10.0, burst: 5 });
    let start = Instant::now();
    for i in 0..20 {
        let waited = bucket.acquire().await;
        if i < 5 {
            assert_eq!(waited, Duration::ZERO, "call {i} is within the burst");
        } else {
            assert_eq!(waited, Duration::from_millis(100), "call {i}");
        }
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1600), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn bucket_refills_up_to_the_burst_only() {
    let bucket = TokenBucket::new(RateLimit { qps: 10.0, burst: 3 });
    for _ in 0..3 {
        assert_eq!(bucket.acquire().await, Duration::ZERO);
    }
    assert_eq!(bucket.acquire().await, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(10)).await;
    for _ in 0..3 {
        assert_eq!(bucket.acquire().await, Duration::ZERO);
    }
    assert_eq!(bucket.acquire().await, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn bucket_serves_every_concurrent_waiter_its_own_slot() {
    let bucket = Arc::new(TokenBucket::new(RateLimit { qps: 10.0, burst: 2 }));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..12 {
        let bucket = bucket.clone();
        tasks.spawn(async move {
            bucket.acquire().await;
            start.elapsed()
        });
    }
    let mut done: Vec<Duration> = tasks.join_all().await;
    done.sort();
    let expected: Vec<Duration> = (0..12u64)
        .map(|i| Duration::from_millis(i.saturating_sub(1) * 100))
        .collect();
    assert_eq!(done, expected);
}

#[tokio::test(start_paused = true)]
async fn guarded_calls_are_throttled_and_all_get_through() {
    let fake = Fake::new();
    let g = guarded(&fake, RateLimit { qps: 10.0, burst: 5 }, BreakerConfig::default());
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let g = g.clone();
        tasks.spawn(async move { list(&g).await });
    }
    for r in tasks.join_all().await {
        r.unwrap();
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1600), "{elapsed:?}");
    assert_eq!(fake.calls(), 20);
}

// --- circuit breaker ---

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_n_faults_then_fails_fast_without_calling_the_backend() {
    let fake = Fake::new();
    let g = guarded(&fake, UNLIMITED, breaker(3));
    fake.answer(Some(ProviderError::unavailable("connection refused")));
    for i in 0..3 {
        assert_eq!(g.state(), CircuitState::Closed, "before fault {i}");
        assert_eq!(list(&g).await.unwrap_err().code(), ErrorCode::Unavailable);
    }
    assert_eq!(g.state(), CircuitState::Open);
    assert_eq!(fake.calls(), 3);
    fake.answer(None);
    for _ in 0..10 {
        assert_fails_fast(list(&g).await, "after 3 consecutive failures");
    }
    assert_fails_fast(
        g.capacity().await.map(|_| Vec::new()),
        "next attempt in 30s (cooldown 30s)",
    );
    assert_fails_fast(list(&g).await, "(last: backend unavailable: connection refused)");
    assert_eq!(fake.calls(), 3, "an open circuit does not call the backend");
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_fails_fast(list(&g).await, "next attempt in 1s");
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn every_backend_fault_class_counts() {
    let faults = [
        ProviderError::unavailable("down"),
        ProviderError::Timeout {
            what: "task".into(),
            after: Duration::from_secs(5),
        },
        ProviderError::internal("bug"),
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        },
    ];
    for fault in faults {
        let fake = Fake::new();
        let g = guarded(&fake, UNLIMITED, breaker(2));
        fake.answer(Some(fault.clone()));
        list(&g).await.unwrap_err();
        list(&g).await.unwrap_err();
        assert_eq!(g.state(), CircuitState::Open, "{fault}");
        assert_fails_fast(list(&g).await, "2 consecutive failures");
        assert_eq!(fake.calls(), 2, "{fault}");
    }
}

#[tokio::test(start_paused = true)]
async fn errors_about_the_request_do_not_open_the_circuit() {
    let answers = [
        ProviderError::not_found("vm 100"),
        ProviderError::invalid("cores", "must be at least 1"),
        ProviderError::conflict("not Berth's"),
        ProviderError::unsupported("containers"),
        ProviderError::unauthorized("token rejected"),
        ProviderError::QuotaExceeded {
            message: "pool full".into(),
        },
    ];
    for answer in answers {
        assert!(!is_backend_fault(&answer), "{answer}");
        let fake = Fake::new();
        let g = guarded(&fake, UNLIMITED, breaker(2));
        fake.answer(Some(answer.clone()));
        for _ in 0..6 {
            assert_eq!(list(&g).await.unwrap_err(), answer);
        }
        assert_eq!(g.state(), CircuitState::Closed, "{answer}");
        assert_eq!(fake.calls(), 6, "{answer}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_resets_the_consecutive_count() {
    for answer in [None, Some(ProviderError::not_found("vm 100"))] {
        let fake = Fake::new();
        let g = guarded(&fake, UNLIMITED, breaker(3));
        for _ in 0..3 {
            fake.answer(Some(ProviderError::unavailable("flaky")));
            list(&g).await.unwrap_err();
            list(&g).await.unwrap_err();
            fake.answer(answer.clone());
            let _ = list(&g).await;
        }
        assert_eq!(g.state(), CircuitState::Closed, "{answer:?}");
        assert_eq!(fake.calls(), 9);
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_exactly_one_trial_through_and_its_success_closes() {
    let fake = Fake::new();
    let g = guarded(&fake, UNLIMITED, breaker(2));
    open_circuit(&g, &fake, 2).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    fake.answer(None);
    fake.hold();
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let g = g.clone();
        tasks.spawn(async move { list(&g).await });
    }
    // Nine fail fast; the trial waits inside the backend.
    let mut rejected = 0;
    while rejected < 9 {
        let r = within(tasks.join_next()).await.expect("ten tasks").unwrap();
        assert_fails_fast(r, "half-open: a trial call is in flight");
        rejected += 1;
    }
    assert_eq!(fake.calls(), 3, "exactly one trial reached the backend");
    assert_eq!(g.state(), CircuitState::HalfOpen);
    assert_fails_fast(within(list(&g)).await, "half-open");
    fake.release();
    within(tasks.join_next()).await.expect("the trial").unwrap().unwrap();
    assert_eq!(g.state(), CircuitState::Closed);
    list(&g).await.unwrap();
    assert_eq!(fake.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_for_another_cooldown() {
    let fake = Fake::new();
    let g = guarded(&fake, UNLIMITED, breaker(2));
    open_circuit(&g, &fake, 2).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    fake.answer(Some(ProviderError::Timeout {
        what: "status".into(),
        after: Duration::from_secs(10),
    }));
    assert_eq!(
        list(&g).await.unwrap_err().code(),
        ErrorCode::Timeout,
        "the trial reaches the backend"
    );
    assert_eq!(fake.calls(), 3);
    assert_eq!(g.state(), CircuitState::Open);
    assert_fails_fast(list(&g).await, "after 3 consecutive failures");
    assert_fails_fast(list(&g).await, "next attempt in 30s");
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_fails_fast(list(&g).await, "next attempt in 10s");
    assert_eq!(fake.calls(), 3);
    tokio::time::advance(Duration::from_secs(10)).await;
    fake.answer(None);
    list(&g).await.unwrap();
    assert_eq!(g.state(), CircuitState::Closed);
    assert_eq!(fake.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_trial_lets_the_next_call_try() {
    let fake = Fake::new();
    let g = guarded(&fake, UNLIMITED, breaker(1));
    open_circuit(&g, &fake, 1).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    fake.answer(None);
    fake.hold();
    let trial = tokio::spawn({
        let g = g.clone();
        async move { list(&g).await }
    });
    settle(|| fake.calls() == 2).await;
    assert_fails_fast(within(list(&g)).await, "half-open");
    trial.abort();
    assert!(trial.await.unwrap_err().is_cancelled());
    assert_eq!(g.state(), CircuitState::HalfOpen);
    fake.release();
    within(list(&g)).await.unwrap();
    assert_eq!(fake.calls(), 3);
    assert_eq!(g.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_from_before_the_circuit_opened_does_not_move_it() {
    let fake = Fake::new();
    let g = guarded(&fake, UNLIMITED, breaker(2));
    fake.hold();
    let stale = tokio::spawn({
        let g = g.clone();
        async move { list(&g).await }
    });
    settle(|| fake.calls() == 1).await;
    fake.unhold();
    open_circuit(&g, &fake, 2).await;
    fake.answer(None);
    fake.release();
    within(stale).await.unwrap().unwrap();
    assert_eq!(g.state(), CircuitState::Open);
    assert_fails_fast(list(&g).await, "after 2 consecutive failures");
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_a_token_fails_fast_once_the_circuit_opens() {
    let fake = Fake::new();
    let g = guarded(&fake, RateLimit { qps: 1.0, burst: 1 }, breaker(1));
    fake.answer(Some(ProviderError::unavailable("down")));
    fake.hold();
    let first = tokio::spawn({
        let g = g.clone();
        async move { list(&g).await }
    });
    settle(|| fake.calls() == 1).await;
    // Admitted while the circuit is closed, then waits a second for its token.
    let second = tokio::spawn({
        let g = g.clone();
        async move { list(&g).await }
    });
    tokio::task::yield_now().await;
    fake.release();
    assert_eq!(within(first).await.unwrap().unwrap_err().code(), ErrorCode::Unavailable);
    assert_eq!(g.state(), CircuitState::Open);
    assert_fails_fast(within(second).await.unwrap(), "after 1 consecutive failures");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn validate_and_backend_bypass_breaker_and_bucket() {
    let fake = Fake::new();
    let g = guarded(&fake, RateLimit { qps: 1.0, burst: 1 }, breaker(1));
    assert_eq!(g.backend(), "fake");
    open_circuit(&g, &fake, 1).await;
    let start = Instant::now();
    for _ in 0..5 {
        let checks = g.validate().await;
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, CheckStatus::Ok);
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "validate takes no token");
    assert_eq!(fake.validate_calls.load(Ordering::SeqCst), 5);
    assert_eq!(g.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn every_method_is_forwarded_through_the_guard() {
    let fake = Fake::new();
    let g = guarded(&fake, UNLIMITED, breaker(1));
    let id = InstanceRef::Backend("100".into());
    g.capabilities().await.unwrap();
    g.list(ListFilter::default()).await.unwrap();
    g.list_templates().await.unwrap();
    g.capacity().await.unwrap();
    g.delete(&id).await.unwrap();
    g.describe(&id).await.unwrap_err();
    g.power(&id, PowerOp::Start).await.unwrap_err();
    assert_eq!(fake.calls(), 7);
    open_circuit(&g, &fake, 1).await;
    assert_eq!(fake.calls(), 8);
    assert_eq!(g.delete(&id).await.unwrap_err().code(), ErrorCode::Unavailable);
    assert_eq!(g.capabilities().await.unwrap_err().code(), ErrorCode::Unavailable);
    assert_eq!(g.list_templates().await.unwrap_err().code(), ErrorCode::Unavailable);
    assert_eq!(fake.calls(), 8, "the breaker guards every method");
}

#[tokio::test(start_paused = true)]
async fn exec_is_guarded_but_a_guest_timeout_is_not_the_backends_fault() {
    let fake = Fake::new();
    let g = guarded(&fake, UNLIMITED, breaker(1));
    let id = InstanceRef::Backend("100".into());
    let out = g.exec(&id, "uptime", Duration::from_secs(5)).await.unwrap();
    assert_eq!(out.stdout, "uptime");
    fake.answer(Some(ProviderError::Timeout {
        what: "uptime".into(),
        after: Duration::from_secs(5),
    }));
    for _ in 0..3 {
        let e = g.exec(&id, "uptime", Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Timeout);
    }
    assert_eq!(g.state(), CircuitState::Closed);
    fake.answer(Some(ProviderError::unavailable("guest agent socket refused")));
    g.exec(&id, "uptime", Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(g.state(), CircuitState::Open);
    let e = g.exec(&id, "uptime", Duration::from_secs(5)).await.unwrap_err();
    assert!(e.to_string().contains("circuit open"), "{e}");
    assert_eq!(fake.calls(), 5);
}

// --- metrics ---

#[tokio::test(start_paused = true)]
async fn metrics_are_recorded() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);

    let fake = Fake::new();
    let g = guarded(&fake, RateLimit { qps: 10.0, burst: 1 }, breaker(2));
    list(&g).await.unwrap();
    g.capacity().await.unwrap();
    fake.answer(Some(ProviderError::unavailable("down")));
    list(&g).await.unwrap_err();
    list(&g).await.unwrap_err();
    assert_eq!(g.state(), CircuitState::Open);
    list(&g).await.unwrap_err();

    let text = handle.render();
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    has(r#"berth_backend_calls_total{backend="pve",method="list",result="ok"} 1"#);
    has(r#"berth_backend_calls_total{backend="pve",method="capacity",result="ok"} 1"#);
    has(r#"berth_backend_calls_total{backend="pve",method="list",result="error"} 2"#);
    has(r#"berth_backend_errors_total{backend="pve",class="unavailable"} 2"#);
    has(r#"berth_circuit_state{backend="pve"} 1"#);
    has(r#"berth_circuit_opened_total{backend="pve"} 1"#);
    has(r#"berth_circuit_rejected_total{backend="pve",method="list"} 1"#);
    // Four calls took a token; the last three waited 100 ms each.
    has(r#"berth_backend_throttled_total{backend="pve"} 3"#);
    has(r#"berth_backend_throttle_wait_seconds_count{backend="pve"} 4"#);
    let sum = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"berth_backend_throttle_wait_seconds_sum{backend="pve"} "#))
        .unwrap_or_else(|| panic!("no wait sum in:\n{text}"));
    assert!((sum.parse::<f64>().unwrap() - 0.3).abs() < 1e-6, "{sum}");

    tokio::time::advance(Duration::from_secs(30)).await;
    fake.answer(None);
    fake.hold();
    let trial = tokio::spawn({
        let g = g.clone();
        async move { list(&g).await }
    });
    settle(|| fake.calls() == 5).await;
    has_in(&handle.render(), r#"berth_circuit_state{backend="pve"} 2"#);
    fake.release();
    within(trial).await.unwrap().unwrap();
    has_in(&handle.render(), r#"berth_circuit_state{backend="pve"} 0"#);
}

fn has_in(text: &str, line: &str) {
    assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
}
