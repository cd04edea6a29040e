//! Wake-ups for long-polling claimers: one `Notify` per provider, rung when work for it is queued
//! (or given back) in this process, and, on PostgreSQL, when any replica queues it (`NOTIFY`).

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

    pub fn wake(&self, provider_id: &str) {
        if let Some(n) = self.map.lock().expect("signals lock").get(provider_id) {
            n.notify_waiters();
        }
    }
}
