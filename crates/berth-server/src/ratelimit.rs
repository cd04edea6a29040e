//! Request rates: every client address, and every credential it presents (an API token, a
//! dashboard session, an agent's key id), gets a bucket (`[limits]` `*_rate` per second, up to
//! `*_burst` at once; GCRA). Over it, `429 rate_limited` with `Retry-After`. A credential is
//! keyed by a hash, never kept itself. The tables hold at most `rate_limit_keys` entries each:
//! entries whose bucket is full again are dropped first, and when every entry is still in debt a
//! new key passes unmetered (the address bucket and the connection cap still hold) rather than
//! lock anyone out. `/healthz` is never limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use crate::access::Client;
use crate::config::Limits;
use crate::problem::ApiError;

/// One kind of bucket: `interval` apart on average, `tolerance` ahead at most (the burst).
struct Gcra<K> {
    interval: Duration,
    tolerance: Duration,
    cap: usize,
    /// Theoretical arrival time of each key's next request.
    tat: Mutex<HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq> Gcra<K> {
    fn new(rate: u32, burst: u32, cap: usize) -> Gcra<K> {
        let interval = Duration::from_secs(1) / rate.max(1);
        Gcra {
            interval,
            tolerance: interval * burst.max(1),
            cap,
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request for `key` at `now`; `Err(wait)` when it is over its rate.
    fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let mut map = self.tat.lock().expect("rate table");
        let tat = map.get(&key).copied().unwrap_or(now).max(now);
        let next = tat + self.interval;
        let ahead = next - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        if !map.contains_key(&key) && map.len() >= self.cap {
            map.retain(|_, t| *t > now);
            if map.len() >= self.cap {
                return Ok(());
            }
        }
        map.insert(key, next);
        Ok(())
    }
}

pub struct RateLimiter {
    addresses: Gcra<IpAddr>,
    credentials: Gcra<[u8; 16]>,
}

impl RateLimiter {
    pub fn new(l: &Limits) -> RateLimiter {
        RateLimiter {
            addresses: Gcra::new(l.address_rate, l.address_burst, l.rate_limit_keys),
            credentials: Gcra::new(l.credential_rate, l.credential_burst, l.rate_limit_keys),
        }
    }
}

/// What a request presents as its credential, hashed: bearer token, agent key id (a signature's
/// own parameters change with every request) or session cookie.
fn credential(req: &Request) -> Option<[u8; 16]> {
    let h = req.headers();
    let presented = match h.get(axum::http::header::AUTHORIZATION) {
        Some(a) => a.as_bytes().to_vec(),
        None => match berth_api::httpsig::signature_keyid(h) {
            Ok(keyid) => format!("keyid:{keyid}").into_bytes(),
            Err(_) => h.get(axum::http::header::COOKIE)?.as_bytes().to_vec(),
        },
    };
    let digest = Sha256::digest(&presented);
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    Some(key)
}

fn refuse(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::RateLimited(secs.max(1)).into_response()
}

pub async fn limit(State(rl): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let now = Instant::now();
    // The access log, outside this layer, has worked out who the client is.
    if let Some(Client(client)) = req.extensions().get::<Client>()
        && let Err(wait) = rl.addresses.take(*client, now)
    {
        return refuse(wait);
    }
    if let Some(key) = credential(&req)
        && let Err(wait) = rl.credentials.take(key, now)
    {
        return refuse(wait);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_then_it_recovers() {
        let g = Gcra::<u8>::new(10, 5, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(g.take(1, t0).is_ok());
        }
        let wait = g.take(1, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        // Another key has its own bucket.
        assert!(g.take(2, t0).is_ok());
        // After the wait, one more passes.
        assert!(g.take(1, t0 + wait).is_ok());
        assert!(g.take(1, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let g = Gcra::<u32>::new(1, 1, 10);
        let t0 = Instant::now();
        for k in 0..1000 {
            assert!(g.take(k, t0).is_ok(), "full of debtors: a new key passes unmetered");
        }
        assert!(g.tat.lock().unwrap().len() <= 10);
        // Later, the old entries are paid up and make room.
        assert!(g.take(5000, t0 + Duration::from_secs(5)).is_ok());
        assert!(g.tat.lock().unwrap().contains_key(&5000));
    }
}
