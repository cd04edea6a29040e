//! Wake-ups for long-polling claimers and operation watchers: one `Notify` per provider (rung
//! when work for it is queued or given back) and per watched operation (`op:<id>`: an event or
//! the end), in this process and, on PostgreSQL, from any replica (`NOTIFY`). Entries nobody
//! holds any more are dropped once the map passes [`SWEEP_ABOVE`]: a wake-up for them had no
//! one to wake (waiters look at the store before they wait, so a dropped permit loses nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The map is swept of entries nobody waits on when it holds more than this.
const SWEEP_ABOVE: usize = 1024;

#[derive(Default)]
pub struct Signals {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Signals {
    pub fn get(&self, key: &str) -> Arc<Notify> {
        let mut map = self.map.lock().expect("signals lock");
        if map.len() > SWEEP_ABOVE {
            // Only the map holds it: nobody waits there.
            map.retain(|_, n| Arc::strong_count(n) > 1);
        }
        map.entry(key.to_owned()).or_default().clone()
    }

    /// Work for a provider wakes one claimer (one piece of work needs one agent: waking all of
    /// a provider's idle agents for it would be a thundering herd); if that claimer stops
    /// waiting before it looks, tokio hands the wake-up to the next one. An operation's signal
    /// (`op:<id>`) wakes everyone watching it.
    pub fn wake(&self, key: &str) {
        if let Some(n) = self.map.lock().expect("signals lock").get(key) {
            if key.starts_with("op:") {
                n.notify_waiters();
            } else {
                n.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_nobody_waits_on_are_dropped() {
        let s = Signals::default();
        let held: Vec<_> = (0..10).map(|n| s.get(&format!("op:held-{n}"))).collect();
        for n in 0..5 * SWEEP_ABOVE {
            drop(s.get(&format!("op:{n}")));
        }
        let map = s.map.lock().unwrap();
        assert!(map.len() <= SWEEP_ABOVE + 1, "{}", map.len());
        assert!(
            (0..10).all(|n| map.contains_key(&format!("op:held-{n}"))),
            "held entries stay"
        );
        drop(held);
    }

    #[tokio::test]
    async fn work_wakes_one_claimer_and_passes_on_if_it_left() {
        let s = Signals::default();
        let n = s.get("p");
        let mut a = Box::pin(n.notified());
        let mut b = Box::pin(n.notified());
        a.as_mut().enable();
        b.as_mut().enable();
        s.wake("p");
        // Claimer `a` got it but gives up without looking: the wake-up moves on to `b`.
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(1), b)
            .await
            .expect("the wake-up was handed to the next claimer");
        // An operation's watchers all wake.
        let w = s.get("op:1");
        let (x, y) = (w.notified(), w.notified());
        tokio::pin!(x, y);
        x.as_mut().enable();
        y.as_mut().enable();
        s.wake("op:1");
        tokio::time::timeout(std::time::Duration::from_secs(1), async {
            x.await;
            y.await
        })
        .await
        .unwrap();
    }
}
