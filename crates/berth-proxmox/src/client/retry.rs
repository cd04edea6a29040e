//! Exponential backoff with jitter for transient PVE failures. The caller decides what is
//! transient; this only paces and counts the attempts.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::error::PveError;

/// How often and how fast to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = never retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base: Duration,
    /// Upper bound of one delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    pub const NEVER: RetryPolicy = RetryPolicy {
        attempts: 1,
        base: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The delay after failed attempt `n` (0-based): base·2ⁿ, capped, ±20 % jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << n.min(16));
        let capped = exp.min(self.max);
        let jitter = rand::rng().random_range(0.8..1.2);
        capped.mul_f64(jitter)
    }
}

/// Runs `op` until it succeeds, fails with an error `transient` rejects, or the attempts are
/// used up; returns the last error then.
pub async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    transient: impl Fn(&PveError) -> bool,
    mut op: F,
) -> Result<T, PveError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PveError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 < policy.attempts && transient(&e) => {
                let wait = policy.delay(attempt);
                tracing::warn!(error = %e, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, "{what}: transient failure, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> PveError {
        PveError::Api {
            method: "PUT",
            path: "/x".into(),
            status: 500,
            message: "got no worker upid - start worker failed".into(),
            errors: Default::default(),
        }
    }

    #[tokio::test]
    async fn retries_transient_then_gives_up() {
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(
            policy,
            "t",
            |e| e.is_transient(false),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_errors() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(
            RetryPolicy::default(),
            "t",
            |_| false,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delays_grow_and_cap() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(300),
        };
        assert!(p.delay(0) <= Duration::from_millis(120));
        assert!(p.delay(5) <= Duration::from_millis(360));
        assert!(p.delay(5) >= Duration::from_millis(240));
    }
}
