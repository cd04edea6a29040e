//! Making a new guest safely: send the clone/create once per VMID, and before any retry find
//! out whether the previous attempt made it (marker on that VMID). `already exists` moves to the
//! next VMID candidate unless the guest there is ours.

use std::future::Future;

use berth_core::{InstanceId, ProviderError};

use super::ProxmoxProvider;
use super::guest::Guest;
use super::vmid::{Allocation, VmidSearch};
use crate::client::{GuestType, PveError, Upid};

/// The outcome of dispatching a clone or create.
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// PVE accepted the request; its task makes the guest.
    Task { vmid: u32, upid: Upid },
    /// An earlier attempt already made (or is making) this instance's guest.
    Ours(Guest),
}

/// Failures after which the request certainly or possibly did nothing, so sending it again is
/// safe once the VMID has been checked for our marker.
fn dispatch_retryable(e: &PveError) -> bool {
    e.is_lock_timeout() || e.is_no_worker() || e.is_proxy_failure() || e.is_transport()
}

impl ProxmoxProvider {
    /// Allocates a VMID and sends `send(vmid)` until PVE accepts it. `map_err` turns a
    /// non-retryable failure into the caller's error.
    pub(crate) async fn dispatch_new<F, Fut>(
        &self,
        id: &InstanceId,
        ty: GuestType,
        search: &mut VmidSearch<'_>,
        mut send: F,
        map_err: impl Fn(PveError) -> ProviderError,
    ) -> Result<Dispatched, ProviderError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Upid, PveError>>,
    {
        let policy = self.client.retry_policy();
        loop {
            let vmid = match self.allocate_vmid(id, ty, search).await? {
                Allocation::Free(v) => v,
                Allocation::Ours(g) => return Ok(Dispatched::Ours(*g)),
            };
            let mut tries = 0;
            loop {
                match send(vmid).await {
                    Ok(upid) => return Ok(Dispatched::Task { vmid, upid }),
                    Err(e) if e.is_already_exists() => {
                        tracing::info!(vmid, "VMID taken meanwhile ({e}); checking whether it is ours");
                        if let Some(g) = self.probe_ours(id, ty, vmid, search.src_node).await? {
                            return Ok(Dispatched::Ours(g));
                        }
                        break;
                    }
                    Err(e) if dispatch_retryable(&e) && tries + 1 < policy.attempts => {
                        let wait = policy.delay(tries);
                        tracing::warn!(vmid, error = %e, "transient failure creating the guest; checking, then retrying");
                        tokio::time::sleep(wait).await;
                        tries += 1;
                        if let Some(g) = self.probe_ours(id, ty, vmid, search.src_node).await? {
                            return Ok(Dispatched::Ours(g));
                        }
                    }
                    Err(e) => return Err(map_err(e)),
                }
            }
        }
    }
}
