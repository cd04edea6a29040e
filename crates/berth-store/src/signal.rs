//! Wake-ups for long-polling claimers and operation watchers: one `Notify` per provider (rung
//! when work for it is queued or given back) and per watched operation (`op:<id>`: an event or
//! the end), in this process and, on PostgreSQL, from any replica (`NOTIFY`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Signals {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Signals {
    pub fn get(&self, provider_id: &str) -> Arc<Notify> {
        self.map
            .lock()
            .expect("signals lock")
            .entry(provider_id.to_owned())
            .or_default()
            .clone()
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
