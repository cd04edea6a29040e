//! From stored records to what the API shows: the server's own schema of an instance's request
//! and state (kept as JSON by the store), and an operation's stage list folded from its events.

use berth_api::wire::{
    EventReport, EventView, InstanceView, OpError, OpResult, OperationView, ProvisionPayload, StageView,
};
use berth_store::{InstanceRecord, OpEvent, OpStatus, Operation};
use serde::{Deserialize, Serialize};

use crate::problem::{ApiError, ApiResult};

/// What was ordered, as stored in `instances.request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRequest {
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub bandwidth_mbps: Option<u32>,
    pub template: Option<String>,
    pub ssh_public_key: String,
    /// Empty when the order named none.
    pub requester_public_key: String,
    pub skip_post_provision: bool,
    pub post_provision_commands: Vec<String>,
    /// The agent's backend it was placed on (`POST /instances`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// What agents reported, as stored in `instances.state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    #[serde(default)]
    pub vm_id: Option<String>,
    #[serde(default)]
    pub hypervisor: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub ipv6_address: Option<String>,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub login_user: Option<String>,
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub last_error: Option<OpError>,
}

fn stored<T: serde::de::DeserializeOwned>(what: &str, v: &serde_json::Value) -> ApiResult<T> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::Internal(format!("stored {what} does not parse: {e}")))
}

pub fn request_of(i: &InstanceRecord) -> ApiResult<InstanceRequest> {
    stored("instance request", &i.request)
}

pub fn state_of(i: &InstanceRecord) -> ApiResult<InstanceState> {
    stored("instance state", &i.state)
}

pub fn provision_payload(i: &InstanceRecord) -> ApiResult<ProvisionPayload> {
    Ok(payload_of(&i.id, request_of(i)?))
}

/// What a `provision` operation carries for the instance `instance_id` ordered as `r`.
pub fn payload_of(instance_id: &str, r: InstanceRequest) -> ProvisionPayload {
    ProvisionPayload {
        instance_id: instance_id.to_owned(),
        name: r.name,
        cores: r.cores,
        memory_mib: r.memory_mib,
        disk_gib: r.disk_gib,
        bandwidth_mbps: r.bandwidth_mbps,
        template: r.template,
        ssh_public_key: r.ssh_public_key,
        requester_public_key: r.requester_public_key,
        post_provision_commands: if r.skip_post_provision {
            Vec::new()
        } else {
            r.post_provision_commands
        },
        backend: r.backend,
    }
}

pub fn instance_view(i: &InstanceRecord) -> ApiResult<InstanceView> {
    let r = request_of(i)?;
    let s = state_of(i)?;
    Ok(InstanceView {
        id: i.id.clone(),
        provider_id: i.provider_id.clone(),
        customer_id: i.customer_id.clone(),
        offering_id: i.offering_id.clone(),
        name: r.name,
        status: i.status.clone(),
        cores: r.cores,
        memory_mib: r.memory_mib,
        disk_gib: r.disk_gib,
        template: r.template,
        backend: r.backend,
        ssh_public_key: r.ssh_public_key,
        vm_id: s.vm_id,
        hypervisor: s.hypervisor,
        agent_id: s.agent_id.or_else(|| i.agent_id.clone()),
        ip_address: s.ip_address,
        ipv6_address: s.ipv6_address,
        ssh_port: s.ssh_port,
        login_user: s.login_user,
        credentials: s.credentials,
        last_error: s.last_error,
        created_at: i.created_at,
        updated_at: i.updated_at,
    })
}

/// The stages a kind of operation goes through, for the percentage when agents do not say.
fn expected_stages(kind: &str) -> usize {
    match kind {
        "provision" => 6,
        _ => 1,
    }
}

pub fn operation_view(op: &Operation, events: &[OpEvent]) -> ApiResult<OperationView> {
    let events: Vec<EventView> = events
        .iter()
        .map(|e| {
            Ok(EventView {
                seq: e.seq,
                at: e.at,
                event: stored::<EventReport>("operation event", &e.event)?,
            })
        })
        .collect::<ApiResult<_>>()?;
    let mut stages: Vec<StageView> = Vec::new();
    let mut percent: Option<u8> = None;
    let mut message = None;
    for e in &events {
        let ev = &e.event;
        if let Some(p) = ev.percent {
            percent = Some(p.min(100));
        }
        if ev.message.is_some() {
            message = ev.message.clone();
        }
        let idx = match stages.iter().position(|s| s.stage == ev.stage) {
            Some(i) => i,
            None => {
                stages.push(StageView {
                    stage: ev.stage.clone(),
                    status: "running".into(),
                    started_at: e.at,
                    finished_at: None,
                    message: None,
                });
                stages.len() - 1
            }
        };
        let s = &mut stages[idx];
        match ev.phase.as_str() {
            "completed" | "skipped" => {
                s.status = ev.phase.clone();
                s.finished_at = Some(e.at);
            }
            _ => {}
        }
        if ev.message.is_some() {
            s.message = ev.message.clone();
        }
    }
    // An operation that ended failed ends the stage it was in as failed, not running forever.
    if op.status == OpStatus::Failed {
        for s in stages.iter_mut().filter(|s| s.status == "running") {
            s.status = "failed".into();
            s.finished_at = Some(op.updated_at.max(s.started_at));
        }
    }
    let done = stages.iter().filter(|s| s.status != "running").count();
    let percent = match op.status {
        OpStatus::Succeeded => 100,
        OpStatus::Queued => 0,
        _ => percent.unwrap_or_else(|| (done * 100 / expected_stages(&op.kind)).min(99) as u8),
    };
    let result = op
        .result
        .as_ref()
        .map(|r| stored::<OpResult>("result", r))
        .transpose()?;
    let error = op.error.as_deref().map(error_of);
    Ok(OperationView {
        id: op.id.clone(),
        instance_id: op.instance_id.clone(),
        kind: op.kind.clone(),
        status: op.status.as_str().into(),
        percent,
        message,
        stages,
        events,
        result,
        error,
        created_at: op.created_at,
        updated_at: op.updated_at,
    })
}

/// The stored error column: an [`OpError`] as JSON (older rows: plain text).
pub fn error_of(s: &str) -> OpError {
    serde_json::from_str(s).unwrap_or_else(|_| OpError {
        code: "internal".into(),
        message: s.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(status: OpStatus) -> Operation {
        Operation {
            id: "o".into(),
            seq: 1,
            provider_id: "p".into(),
            instance_id: "i".into(),
            kind: "provision".into(),
            payload: serde_json::json!({}),
            status,
            lease_holder: None,
            lease_expires_at: None,
            generation: 1,
            result: None,
            error: None,
            agent_id: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn ev(seq: i64, stage: &str, phase: &str) -> OpEvent {
        OpEvent {
            seq,
            at: seq * 10,
            event: serde_json::json!({"stage": stage, "phase": phase}),
        }
    }

    #[test]
    fn stages_fold_from_events() {
        let v = operation_view(
            &op(OpStatus::Running),
            &[
                ev(1, "clone_template", "started"),
                ev(2, "clone_template", "completed"),
                ev(3, "configure_vm", "started"),
            ],
        )
        .unwrap();
        assert_eq!(v.stages.len(), 2);
        assert_eq!(
            (v.stages[0].status.as_str(), v.stages[0].finished_at),
            ("completed", Some(20))
        );
        assert_eq!(v.stages[1].status, "running");
        assert_eq!(v.percent, 16);
        assert_eq!(operation_view(&op(OpStatus::Succeeded), &[]).unwrap().percent, 100);
        let mut failed = op(OpStatus::Failed);
        failed.updated_at = 50;
        let v = operation_view(&failed, &[ev(1, "clone_template", "started")]).unwrap();
        assert_eq!(
            (v.stages[0].status.as_str(), v.stages[0].finished_at),
            ("failed", Some(50)),
            "the stage a failed operation was in ends failed"
        );
    }
}
