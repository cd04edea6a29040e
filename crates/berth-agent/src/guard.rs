//! Client-side protection around one backend: a token bucket that throttles the agent's calls
//! (`[provisioner.rate_limit]`) and a circuit breaker that stops calling a backend that keeps
//! failing (`[provisioner.circuit_breaker]`). [`Guarded`] wraps any `Provider` with both.
//!
//! Every guarded call first passes the breaker (an open circuit fails fast with `Unavailable`,
//! without touching the backend), then takes a token (waiting for one if needed: the bucket
//! throttles, it never fails), then calls the backend and reports the outcome to the breaker.
//! A long call (`create`) is one call. `validate` is a diagnostic and bypasses both.
//!
//! Metrics (label `backend` is the name given to [`Guarded::new`]):
//! - `berth_backend_calls_total{backend, method, result="ok"|"error"}` — calls that reached it;
//! - `berth_backend_errors_total{backend, class}` — `class` is the error's `ErrorCode`;
//! - `berth_backend_throttled_total{backend}` — calls that had to wait for a token;
//! - `berth_backend_throttle_wait_seconds{backend}` — histogram of every call's wait (0 if none);
//! - `berth_circuit_state{backend}` — gauge: 0 closed, 1 open, 2 half-open;
//! - `berth_circuit_opened_total{backend}` — times the circuit opened;
//! - `berth_circuit_rejected_total{backend, method}` — calls failed fast by an open circuit.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_core::{Provider, ProviderError};
use serde::Deserialize;
use tokio::time::Instant;

mod provider;
#[cfg(test)]
mod tests;

// The largest values the configuration accepts (`qps` and `burst` share MAX_RATE).
const MAX_RATE: u32 = 10_000;
const MAX_FAILURES: u32 = 1_000;
const MAX_COOLDOWN_SECONDS: u64 = 3_600;

/// `[provisioner.rate_limit]`: at most `qps` calls per second on average, `burst` at once. A
/// field left out keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { qps: 10.0, burst: 20 }
    }
}

impl RateLimit {
    /// `Err((key, message))` names the field (relative to `[provisioner.rate_limit]`) and the
    /// accepted range.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let (qps, burst) = (self.qps, self.burst);
        if !(qps.is_finite() && qps > 0.0 && qps <= f64::from(MAX_RATE)) {
            return invalid(
                "qps",
                format!("must be a number greater than 0 and at most {MAX_RATE}, got {qps}"),
            );
        }
        if !(1..=MAX_RATE).contains(&burst) {
            return invalid("burst", format!("must be between 1 and {MAX_RATE}, got {burst}"));
        }
        Ok(())
    }
}

/// `[provisioner.circuit_breaker]`: open after `failures` consecutive backend faults, try again
/// after `cooldown_seconds`. A field left out keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    pub failures: u32,
    pub cooldown_seconds: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown_seconds: 30,
        }
    }
}

impl BreakerConfig {
    /// `Err((key, message))` names the field (relative to `[provisioner.circuit_breaker]`) and
    /// the accepted range.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let (failures, cooldown) = (self.failures, self.cooldown_seconds);
        if !(1..=MAX_FAILURES).contains(&failures) {
            return invalid(
                "failures",
                format!("must be between 1 and {MAX_FAILURES}, got {failures}"),
            );
        }
        if !(1..=MAX_COOLDOWN_SECONDS).contains(&cooldown) {
            return invalid(
                "cooldown_seconds",
                format!("must be between 1 and {MAX_COOLDOWN_SECONDS}, got {cooldown}"),
            );
        }
        Ok(())
    }
}

/// A token bucket (as a GCRA: each caller reserves the next slot under a short lock, then sleeps
/// until it), so waiters are served in arrival order. Uses `tokio::time`, so paused test time
/// drives it. A caller cancelled while waiting does not give its slot back.
#[derive(Debug)]
pub struct TokenBucket {
    /// Time between two tokens.
    interval: Duration,
    /// How far ahead of now reservations may run before callers wait: `interval × burst`.
    tolerance: Duration,
    /// Theoretical arrival time: when the bucket would be full again.
    tat: Mutex<Instant>,
}

impl TokenBucket {
    /// A full bucket. `rate` should have passed [`RateLimit::validate`]; out-of-range values are
    /// clamped into it.
    pub fn new(rate: RateLimit) -> Self {
        let qps = if rate.qps.is_finite() { rate.qps } else { 0.0 };
        let qps = qps.clamp(1e-3, f64::from(MAX_RATE));
        let interval = Duration::from_secs_f64(1.0 / qps);
        TokenBucket {
            interval,
            tolerance: interval * rate.burst.clamp(1, MAX_RATE),
            tat: Mutex::new(Instant::now()),
        }
    }

    /// Waits until a token is available and takes it; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let now = Instant::now();
        let ready_at = {
            let mut tat = lock(&self.tat);
            *tat = (*tat).max(now) + self.interval;
            *tat
        };
        let horizon = now + self.tolerance;
        if ready_at <= horizon {
            return Duration::ZERO;
        }
        let wait = ready_at - horizon;
        tokio::time::sleep_until(now + wait).await;
        wait
    }
}

/// What the circuit breaker currently lets through (the discriminant is the value of the
/// `berth_circuit_state` gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed = 0,
    /// Calls fail fast. It stays open until a call arrives after the cooldown.
    Open = 1,
    /// One trial call is (or may be) in flight; the others fail fast.
    HalfOpen = 2,
}

/// Whether `e` is the backend's fault and counts toward opening the circuit: `Unavailable`,
/// `Timeout`, `Internal` and `RateLimited` (backing off is what the backend asked for).
///
/// The others mean the backend answered and did its job: `NotFound`, `InvalidSpec`, `Conflict`,
/// `Unsupported` and `QuotaExceeded` are about the request. `Unauthorized` does not count
/// either: rejected credentials are a configuration fault that waiting out a cooldown does not
/// fix, and an open circuit would hide the real error ("unauthorized") behind "circuit open";
/// the heartbeat and `validate` report it, and the rate limit already bounds how often it is
/// retried. Such an answer counts as a success: it resets the failure count and closes a
/// half-open circuit.
pub fn is_backend_fault(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::Unavailable { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Internal { .. }
            | ProviderError::RateLimited { .. }
    )
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

impl Phase {
    fn state(&self) -> CircuitState {
        match self {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct BreakerInner {
    phase: Phase,
    /// Consecutive backend faults since the last success.
    failures: u32,
    last_error: String,
    /// Bumped on every transition: outcomes of calls admitted before it do not move the state.
    generation: u64,
}

/// Closed → (`failures` consecutive backend faults) → open: calls fail fast → (cooldown) →
/// half-open: the next call is the one trial, others fail fast → its success closes the circuit,
/// its fault re-opens it for another cooldown.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<BreakerInner>,
}

/// Leave to make one call, from [`CircuitBreaker::admit`]. Report the outcome with
/// [`Permit::record`]; a trial permit dropped without an outcome (the call was cancelled) lets
/// the next caller make the trial.
#[derive(Debug)]
#[must_use = "report the call's outcome with Permit::record"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    trial: bool,
    done: bool,
}

impl CircuitBreaker {
    /// `name` is the `backend` label and appears in errors and logs.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        let name = name.into();
        metrics::gauge!("berth_circuit_state", "backend" => name.clone()).set(CircuitState::Closed as u8);
        CircuitBreaker {
            name,
            threshold: config.failures.max(1),
            cooldown: Duration::from_secs(config.cooldown_seconds),
            inner: Mutex::new(BreakerInner {
                phase: Phase::Closed,
                failures: 0,
                last_error: String::new(),
                generation: 0,
            }),
        }
    }

    pub fn state(&self) -> CircuitState {
        lock(&self.inner).phase.state()
    }

    /// Lets a call through, or fails fast with `Unavailable` saying why and when it will try
    /// again. The first call after the cooldown becomes the half-open trial.
    pub fn admit(&self) -> Result<Permit<'_>, ProviderError> {
        let mut inner = lock(&self.inner);
        let trial = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(self.rejection(&inner, Some(until - now)));
                }
                inner.generation += 1;
                self.set_phase(&mut inner, Phase::HalfOpen { trial_in_flight: true });
                tracing::info!(backend = %self.name, "circuit half-open: letting one trial call through");
                true
            }
            Phase::HalfOpen { trial_in_flight: true } => return Err(self.rejection(&inner, None)),
            Phase::HalfOpen { trial_in_flight: false } => {
                inner.phase = Phase::HalfOpen { trial_in_flight: true };
                true
            }
        };
        Ok(Permit {
            breaker: self,
            generation: inner.generation,
            trial,
            done: false,
        })
    }

    /// After waiting for a token: a permit from before the circuit opened no longer lets the
    /// call through (only the trial may reach a backend that has not recovered yet).
    fn recheck(&self, permit: &Permit<'_>) -> Result<(), ProviderError> {
        let inner = lock(&self.inner);
        match inner.phase {
            _ if inner.generation == permit.generation => Ok(()),
            Phase::Closed => Ok(()),
            Phase::Open { until } => Err(self.rejection(&inner, Some(until.saturating_duration_since(Instant::now())))),
            Phase::HalfOpen { .. } => Err(self.rejection(&inner, None)),
        }
    }

    fn record(&self, generation: u64, fault: Option<&ProviderError>) {
        let mut inner = lock(&self.inner);
        if inner.generation != generation {
            return; // admitted before the last transition: says nothing about the state now
        }
        match fault {
            Some(e) => {
                inner.failures = inner.failures.saturating_add(1);
                inner.last_error = e.to_string();
                let trial_failed = matches!(inner.phase, Phase::HalfOpen { .. });
                if trial_failed || inner.failures >= self.threshold {
                    self.open(&mut inner);
                }
            }
            None => {
                inner.failures = 0;
                if matches!(inner.phase, Phase::HalfOpen { .. }) {
                    inner.generation += 1;
                    self.set_phase(&mut inner, Phase::Closed);
                    tracing::info!(backend = %self.name, "circuit closed: the trial call succeeded");
                }
            }
        }
    }

    fn abandon_trial(&self, generation: u64) {
        let mut inner = lock(&self.inner);
        if inner.generation == generation && matches!(inner.phase, Phase::HalfOpen { trial_in_flight: true }) {
            inner.phase = Phase::HalfOpen { trial_in_flight: false };
        }
    }

    fn open(&self, inner: &mut BreakerInner) {
        inner.generation += 1;
        self.set_phase(
            inner,
            Phase::Open {
                until: Instant::now() + self.cooldown,
            },
        );
        metrics::counter!("berth_circuit_opened_total", "backend" => self.name.clone()).increment(1);
        tracing::warn!(
            backend = %self.name,
            failures = inner.failures,
            cooldown_seconds = self.cooldown.as_secs(),
            last_error = %inner.last_error,
            "circuit open: failing calls fast until the cooldown ends"
        );
    }

    fn set_phase(&self, inner: &mut BreakerInner, phase: Phase) {
        inner.phase = phase;
        metrics::gauge!("berth_circuit_state", "backend" => self.name.clone()).set(inner.phase.state() as u8);
    }

    /// `remaining`: time left in the cooldown; `None` while a half-open trial is in flight.
    fn rejection(&self, inner: &BreakerInner, remaining: Option<Duration>) -> ProviderError {
        let retry = match remaining {
            Some(left) => format!(
                "next attempt in {}s (cooldown {}s)",
                left.as_secs_f64().ceil(),
                self.cooldown.as_secs()
            ),
            None => "half-open: a trial call is in flight, others fail fast until it succeeds".to_owned(),
        };
        ProviderError::unavailable(format!(
            "circuit open for backend \"{}\" after {} consecutive failures (last: {}); {retry}",
            self.name, inner.failures, inner.last_error
        ))
    }
}

impl Permit<'_> {
    /// Reports the call's outcome: the backend fault it ended with (an error for which
    /// [`is_backend_fault`] holds), or `None` when the backend answered (success or any other
    /// error).
    pub fn record(mut self, fault: Option<&ProviderError>) {
        self.done = true;
        self.breaker.record(self.generation, fault);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.done {
            self.breaker.abandon_trial(self.generation);
        }
    }
}

/// A `Provider` behind a rate limit and a circuit breaker. Cheap to share behind an `Arc`.
pub struct Guarded {
    name: String,
    inner: Arc<dyn Provider>,
    bucket: TokenBucket,
    breaker: CircuitBreaker,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, state) = (&self.name, self.state());
        write!(f, "Guarded {{ name: {name:?}, state: {state:?} }}")
    }
}

impl Guarded {
    /// `name` labels the metrics and names the backend in errors (the configured endpoint, or
    /// the backend kind when there is one endpoint).
    pub fn new(name: impl Into<String>, inner: Arc<dyn Provider>, rate: RateLimit, breaker: BreakerConfig) -> Self {
        let name = name.into();
        Guarded {
            breaker: CircuitBreaker::new(name.clone(), breaker),
            bucket: TokenBucket::new(rate),
            name,
            inner,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The circuit's state, for the heartbeat (an open circuit is an unhealthy backend).
    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Breaker, token, backend, outcome.
    async fn call<'a, T, F, Fut>(&'a self, method: &'static str, f: F) -> Result<T, ProviderError>
    where
        F: FnOnce(&'a dyn Provider) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        self.call_with(method, is_backend_fault, f).await
    }

    /// `call` where `is_fault` says which errors count against the backend.
    async fn call_with<'a, T, F, Fut>(&'a self, method: &'static str, is_fault: Fault, f: F) -> Result<T, ProviderError>
    where
        F: FnOnce(&'a dyn Provider) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let permit = self.breaker.admit().inspect_err(|_| self.rejected(method))?;
        let waited = self.bucket.acquire().await;
        metrics::histogram!("berth_backend_throttle_wait_seconds", "backend" => self.name.clone())
            .record(waited.as_secs_f64());
        if !waited.is_zero() {
            metrics::counter!("berth_backend_throttled_total", "backend" => self.name.clone()).increment(1);
            self.breaker.recheck(&permit).inspect_err(|_| self.rejected(method))?;
        }
        let result = f(self.inner.as_ref()).await;
        let error = result.as_ref().err();
        permit.record(error.filter(|e| is_fault(e)));
        let outcome = if error.is_some() { "error" } else { "ok" };
        metrics::counter!("berth_backend_calls_total", "backend" => self.name.clone(), "method" => method, "result" => outcome)
            .increment(1);
        if let Some(e) = error {
            metrics::counter!("berth_backend_errors_total", "backend" => self.name.clone(), "class" => e.code().as_str())
                .increment(1);
        }
        result
    }

    fn rejected(&self, method: &'static str) {
        metrics::counter!("berth_circuit_rejected_total", "backend" => self.name.clone(), "method" => method)
            .increment(1);
    }
}

/// Registers the descriptions and units of the metrics above with the installed recorder.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("berth_backend_calls_total", "Calls that reached the backend");
    describe_counter!("berth_backend_errors_total", "Backend errors by class");
    describe_counter!("berth_backend_throttled_total", "Calls that waited for a token");
    describe_histogram!("berth_backend_throttle_wait_seconds", Unit::Seconds, "Wait for a token");
    describe_gauge!("berth_circuit_state", "0 closed, 1 open, 2 half-open");
    describe_counter!("berth_circuit_opened_total", "Times the circuit opened");
    describe_counter!("berth_circuit_rejected_total", "Calls failed fast by an open circuit");
}

/// Which errors count toward opening the circuit.
type Fault = fn(&ProviderError) -> bool;

fn exec_fault(e: &ProviderError) -> bool {
    is_backend_fault(e) && !matches!(e, ProviderError::Timeout { .. })
}

fn invalid(key: &str, message: String) -> Result<(), (String, String)> {
    Err((key.to_owned(), message))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
