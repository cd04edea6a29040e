//! The one schedule for every wait on Proxmox (tasks, config locks, the guest agent, a clone
//! being made): the pause before the next look is a fixed fraction of the time already waited,
//! kept between a small floor and the configured cap (`poll_interval_ms`). A wait therefore ends
//! at most about 1/24 after the thing it waits for happened (Berth's overhead stays proportional,
//! not a whole poll interval), and a long wait asks the API less and less often.
//!
//! Waits of one kind (clones of one template, starts on one node, the guest agent coming up)
//! take similar times, so the client learns how long each kind took (`Durations`). With an
//! expectation, a wait sleeps until shortly before the expected end and then looks every `FLOOR`
//! until a while after it: less overshoot and far fewer requests. An estimate only paces the
//! looks; the cap still bounds every pause, so a wrong estimate costs at most one cap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest pause between two looks.
pub const FLOOR: Duration = Duration::from_millis(25);
/// Without an expectation, the pause is the time waited so far divided by this.
pub const FRACTION: u32 = 24;

#[derive(Debug, Clone, Copy)]
pub struct Poll {
    started: Instant,
    cap: Duration,
    expected: Option<Duration>,
}

impl Poll {
    /// Starts the clock; `cap` is the longest pause (the configured poll interval).
    pub fn new(cap: Duration) -> Self {
        Self::expecting(cap, None)
    }

    /// Like `new`, for a wait expected to take about `expected`.
    pub fn expecting(cap: Duration, expected: Option<Duration>) -> Self {
        Poll {
            started: Instant::now(),
            cap,
            expected,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The pause before the next look, `elapsed` into the wait.
    pub fn pause_at(&self, elapsed: Duration) -> Duration {
        let proportional = (elapsed / FRACTION).max(FLOOR);
        let pause = match self.expected {
            Some(exp) if elapsed < exp.mul_f64(0.9) => proportional.max(exp.mul_f64(0.9) - elapsed),
            Some(exp) if elapsed < exp.mul_f64(1.5) => FLOOR,
            _ => proportional,
        };
        pause.min(self.cap)
    }

    /// Sleeps for the next pause, but not past `limit` (measured from the start of the wait).
    pub async fn sleep(&self, limit: Duration) {
        self.sleep_after(limit, None).await;
    }

    /// Like `sleep`, with the pause counted from when the last look was sent (`sent`), not from
    /// its answer: against an API that takes tens of milliseconds to answer, the looks are still
    /// about a pause apart, so the end of what is waited for is noticed that much sooner.
    pub async fn sleep_after(&self, limit: Duration, sent: Option<Instant>) {
        let elapsed = self.elapsed();
        let answered_in = sent.map_or(Duration::ZERO, |s| s.elapsed());
        let pause = self.pause_after(elapsed, answered_in);
        tokio::time::sleep(pause.min(limit.saturating_sub(elapsed))).await;
    }

    /// The pause left, `elapsed` into the wait, after a look that took `answered_in`.
    pub fn pause_after(&self, elapsed: Duration, answered_in: Duration) -> Duration {
        self.pause_at(elapsed).saturating_sub(answered_in)
    }

    /// Whether this wait has an expectation of how long it takes.
    pub fn expects(&self) -> bool {
        self.expected.is_some()
    }
}

/// How long each kind of wait took lately (an exponentially weighted average per key).
#[derive(Debug, Default)]
pub struct Durations(Mutex<HashMap<String, Duration>>);

impl Durations {
    pub fn expected(&self, key: &str) -> Option<Duration> {
        self.0.lock().ok()?.get(key).copied()
    }

    /// Takes `took` as the expectation for `key` unless one was learned already.
    pub fn seed(&self, key: &str, took: Duration) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(key.to_owned()).or_insert(took);
        }
    }

    pub fn record(&self, key: &str, took: Duration) {
        if let Ok(mut m) = self.0.lock() {
            let avg = m.get(key).map_or(took, |old| old.mul_f64(0.7) + took.mul_f64(0.3));
            m.insert(key.to_owned(), avg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_grows_with_the_wait_between_floor_and_cap() {
        let p = Poll::new(Duration::from_secs(1));
        assert_eq!(p.pause_at(Duration::ZERO), FLOOR);
        assert_eq!(p.pause_at(Duration::from_millis(2400)), Duration::from_millis(100));
        assert_eq!(p.pause_at(Duration::from_secs(600)), Duration::from_secs(1));
        // A cap below the floor wins (tests poll fast).
        let fast = Poll::new(Duration::from_millis(10));
        assert_eq!(fast.pause_at(Duration::from_secs(5)), Duration::from_millis(10));
    }

    #[test]
    fn an_expectation_skips_ahead_then_looks_closely() {
        let p = Poll::expecting(Duration::from_secs(1), Some(Duration::from_secs(2)));
        // Early on: sleep towards 0.9 × expected, never longer than the cap.
        assert_eq!(p.pause_at(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(p.pause_at(Duration::from_millis(1000)), Duration::from_millis(800));
        // Around the expected end: every FLOOR.
        assert_eq!(p.pause_at(Duration::from_millis(1900)), FLOOR);
        assert_eq!(p.pause_at(Duration::from_millis(2900)), FLOOR);
        // Well past it: proportional again.
        assert_eq!(p.pause_at(Duration::from_millis(4800)), Duration::from_millis(200));
    }

    #[test]
    fn a_pause_counts_from_when_the_last_look_was_sent() {
        let p = Poll::expecting(Duration::from_secs(1), Some(Duration::from_millis(100)));
        let ms = Duration::from_millis;
        // In the close-look window: FLOOR from the send, of which the answer took 20 ms.
        assert_eq!(p.pause_after(ms(115), ms(20)), FLOOR - ms(20));
        // An answer slower than the pause: the next look goes at once.
        assert_eq!(p.pause_after(ms(135), ms(40)), Duration::ZERO);
        // Early on, the long sleep towards the expected end is shortened the same way.
        assert_eq!(p.pause_after(ms(30), ms(30)), ms(60) - ms(30));
    }

    #[test]
    fn durations_average_per_key() {
        let d = Durations::default();
        assert_eq!(d.expected("pve1/qmstart"), None);
        d.record("pve1/qmstart", Duration::from_secs(1));
        assert_eq!(d.expected("pve1/qmstart"), Some(Duration::from_secs(1)));
        d.record("pve1/qmstart", Duration::from_secs(2));
        assert_eq!(d.expected("pve1/qmstart"), Some(Duration::from_millis(1300)));
        assert_eq!(d.expected("pve2/qmstart"), None);
    }
}
