//! The operator's side (what `berth vm complete`, `berth vm fail`, `berth vm cancel` and
//! `berth vm list --pending` call): submit a machine's details, fail or cancel a request, and
//! list what is waiting.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::{GuestKind, Instance, InstanceId, Secret};

use crate::provider::{ManualProvider, to_instance};
use crate::store::{Details, Locked, Record, RequestStatus, StoreError, now};

/// What an operator submits for a machine they built. At least one address is required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorDetails {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// SSH port when it is not 22.
    pub ssh_port: Option<u16>,
    /// A root password the machine was built with. Stored (file mode 0600) only until the
    /// waiting create has returned it; never shown.
    pub root_password: Option<Secret>,
}

/// A request waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub instance_id: InstanceId,
    pub name: String,
    pub kind: GuestKind,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub template: Option<String>,
    pub created_at: SystemTime,
    /// How long it has waited so far.
    pub age: Duration,
    /// When it fails if nobody completes it.
    pub deadline: SystemTime,
    /// Whether the webhook accepted the notification.
    pub notified: bool,
    /// The SSH public keys to install for the login user.
    pub ssh_keys: Vec<String>,
    /// The login user to create (`None`: the operator's usual one).
    pub user: Option<String>,
    /// The addresses and name servers asked for.
    pub network: berth_core::NetworkSpec,
}

impl PendingRequest {
    /// `2 vCPU, 2048 MiB RAM, 20 GiB disk`.
    pub fn size(&self) -> String {
        format!(
            "{} vCPU, {} MiB RAM, {} GiB disk",
            self.cores, self.memory_mib, self.disk_gib
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no manual request for instance {id}")]
    NotFound { id: InstanceId },
    #[error("the manual request for instance {id} is {status}, not pending: only pending requests can be {action}")]
    NotPending {
        id: InstanceId,
        status: RequestStatus,
        action: &'static str,
    },
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const MAX_REASON_CHARS: usize = 1000;

impl OperatorDetails {
    fn validate(&self) -> Result<(), OperatorError> {
        let invalid = |field, message: &str| {
            Err(OperatorError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return invalid("ip", "give at least one address (IPv4 or IPv6) of the machine");
        }
        if let Some(a) = self.ipv4
            && (a.is_unspecified() || a.is_multicast() || a.is_broadcast())
        {
            return invalid("ip", &format!("{a} is not a machine's address"));
        }
        if let Some(a) = self.ipv6
            && (a.is_unspecified() || a.is_multicast())
        {
            return invalid("ip", &format!("{a} is not a machine's address"));
        }
        if self.ssh_port == Some(0) {
            return invalid("ssh_port", "must be between 1 and 65535 (got 0)");
        }
        if self.root_password.as_ref().is_some_and(Secret::is_empty) {
            return invalid("password", "must not be empty (leave it out instead)");
        }
        Ok(())
    }
}

fn check_reason(reason: &str) -> Result<String, OperatorError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(OperatorError::Invalid {
            field: "reason",
            message: "must not be empty: say why, it is shown to whoever asked for the machine".into(),
        });
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(OperatorError::Invalid {
            field: "reason",
            message: format!("must be at most {MAX_REASON_CHARS} characters"),
        });
    }
    Ok(reason.to_owned())
}

/// The request for `id`, which must still be pending for an operator to `action` it.
fn load_pending(l: &Locked<'_>, id: &InstanceId, action: &'static str) -> Result<Record, OperatorError> {
    let r = l.load(id)?.ok_or_else(|| OperatorError::NotFound { id: id.clone() })?;
    if r.status != RequestStatus::Pending {
        return Err(OperatorError::NotPending {
            id: id.clone(),
            status: r.status,
            action,
        });
    }
    Ok(r)
}

impl ManualProvider {
    /// Submits the details of the machine an operator built for a pending request; the waiting
    /// create (in this process or another) returns it. Returns the machine as `describe` shows it.
    pub async fn complete(&self, id: &InstanceId, details: OperatorDetails) -> Result<Instance, OperatorError> {
        details.validate()?;
        let id = id.clone();
        self.blocking(move |s| {
            s.locked(|l| {
                let mut r = load_pending(l, &id, "completed")?;
                let t = now();
                r.status = RequestStatus::Completed;
                r.details = Some(Details {
                    ipv4: details.ipv4,
                    ipv6: details.ipv6,
                    ssh_port: details.ssh_port,
                    completed_at: t,
                });
                r.root_password = details.root_password;
                r.updated_at = t;
                l.save(&r)?;
                tracing::info!(instance = %id, "manual request completed by an operator");
                Ok(to_instance(&r))
            })
        })
        .await
    }

    /// Ends a pending request: the operator cannot build the machine. The waiting create fails
    /// with `reason`.
    pub async fn fail(&self, id: &InstanceId, reason: &str) -> Result<(), OperatorError> {
        self.end(id, reason, RequestStatus::Failed, "failed").await
    }

    /// Withdraws a pending request (nobody should build it). The waiting create fails with
    /// `reason`.
    pub async fn cancel(&self, id: &InstanceId, reason: &str) -> Result<(), OperatorError> {
        self.end(id, reason, RequestStatus::Cancelled, "cancelled").await
    }

    async fn end(
        &self,
        id: &InstanceId,
        reason: &str,
        status: RequestStatus,
        action: &'static str,
    ) -> Result<(), OperatorError> {
        let reason = check_reason(reason)?;
        let id = id.clone();
        self.blocking(move |s| {
            s.locked(|l| {
                let mut r = load_pending(l, &id, action)?;
                r.status = status;
                r.reason = Some(reason);
                r.updated_at = now();
                l.save(&r)?;
                tracing::info!(instance = %id, "manual request {action} by an operator");
                Ok(())
            })
        })
        .await
    }

    /// Every request waiting for an operator, oldest first.
    pub async fn pending(&self) -> Result<Vec<PendingRequest>, OperatorError> {
        let records = self.blocking(|s| s.all()).await?;
        let now = SystemTime::now();
        let deadline = self.deadline;
        Ok(records
            .into_iter()
            .filter(|r| r.status == RequestStatus::Pending)
            .map(|r| {
                let created_at = UNIX_EPOCH + Duration::from_secs(r.created_at);
                PendingRequest {
                    instance_id: r.instance_id,
                    name: r.spec.name,
                    kind: r.spec.kind,
                    cores: r.spec.cores,
                    memory_mib: r.spec.memory_mib,
                    disk_gib: r.spec.disk_gib,
                    template: r.spec.template,
                    created_at,
                    age: now.duration_since(created_at).unwrap_or_default(),
                    deadline: created_at + deadline,
                    notified: r.notified,
                    ssh_keys: r.spec.ssh_keys.iter().map(|k| k.as_str().to_owned()).collect(),
                    user: r.spec.user,
                    network: r.spec.network,
                }
            })
            .collect())
    }
}
