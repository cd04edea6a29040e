//! The server side (the SDK): serves any [`berth_core::Provider`] over the protocol, with a
//! bearer token or mutual TLS, and the standard `grpc.health.v1` health service.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use berth_core::{Provider, StageEvent};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tonic::{Request, Response, Status};

use crate::convert::{self as cv, Bad};
use crate::pb;
use crate::status::to_status;

/// The protocol revision this crate speaks (`CapabilitiesResponse.protocol_minor`).
pub const PROTOCOL_MINOR: u32 = 0;

/// One provider behind the generated service.
pub struct Service {
    provider: Arc<dyn Provider>,
    creating: Gates,
}

impl Service {
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Service {
            provider,
            creating: Gates::default(),
        }
    }
}

/// One create per instance id at a time. A client whose connection died unnoticed (no reset
/// reached this side) may retry on a new one while its first create still runs here: the
/// retry waits for it, then finds the machine it made (create is idempotent).
#[derive(Default, Clone)]
struct Gates(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

/// Holds an instance's gate; forgets it when the last holder goes (also when aborted).
struct Gate {
    gates: Gates,
    id: String,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Gates {
    fn gate(&self, id: &str) -> Gate {
        let gate = self.0.lock().expect("gates").entry(id.to_owned()).or_default().clone();
        Gate {
            gates: self.clone(),
            id: id.to_owned(),
            gate,
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut map = self.gates.0.lock().expect("gates");
        // The map's own reference and this one: nobody else waits.
        if Arc::strong_count(&self.gate) == 2 {
            map.remove(&self.id);
        }
    }
}

fn refused(b: Bad) -> Status {
    to_status(&b.refused())
}

fn answer<T, U>(r: Result<T, berth_core::ProviderError>, f: impl FnOnce(T) -> U) -> Result<Response<U>, Status> {
    r.map(|v| Response::new(f(v))).map_err(|e| to_status(&e))
}

/// A create's stream of events. The create runs in its own task, cancelled when the client
/// goes away (the stream is dropped): like a crash at an await point, which the contract
/// makes safe, and the client's retry is then the only create of that instance running.
pub struct CreateStream {
    rx: mpsc::UnboundedReceiver<Result<pb::CreateEvent, Status>>,
    _task: AbortOnDropHandle<()>,
}

impl Stream for CreateStream {
    type Item = Result<pb::CreateEvent, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[tonic::async_trait]
impl pb::provider_server::Provider for Service {
    type CreateStream = CreateStream;

    async fn validate(&self, _: Request<pb::ValidateRequest>) -> Result<Response<pb::ValidateResponse>, Status> {
        let checks = self.provider.validate().await;
        Ok(Response::new(pb::ValidateResponse {
            checks: checks.iter().map(cv::check_to).collect(),
        }))
    }

    async fn capabilities(
        &self,
        _: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        answer(self.provider.capabilities().await, |c| pb::CapabilitiesResponse {
            capabilities: Some(cv::capabilities_to(&c)),
            backend: self.provider.backend().to_owned(),
            protocol_minor: PROTOCOL_MINOR,
        })
    }

    async fn create(&self, req: Request<pb::CreateRequest>) -> Result<Response<CreateStream>, Status> {
        let spec = req.into_inner().spec.ok_or_else(|| refused(Bad::missing("spec")))?;
        let spec = cv::spec_from(spec).map_err(refused)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let provider = self.provider.clone();
        let gate = self.creating.gate(spec.instance_id.as_str());
        let task = tokio::spawn(async move {
            let _held = gate.gate.lock().await;
            let events = tx.clone();
            let sink = move |e: StageEvent| {
                let _ = events.send(Ok(pb::CreateEvent {
                    event: Some(pb::create_event::Event::Stage(cv::event_to(&e))),
                }));
            };
            let last = match provider.create(&spec, &sink).await {
                Ok(i) => Ok(pb::CreateEvent {
                    event: Some(pb::create_event::Event::Instance(cv::instance_to(&i))),
                }),
                Err(e) => Err(to_status(&e)),
            };
            let _ = tx.send(last);
        });
        Ok(Response::new(CreateStream {
            rx,
            _task: AbortOnDropHandle::new(task),
        }))
    }

    async fn describe(&self, req: Request<pb::DescribeRequest>) -> Result<Response<pb::Instance>, Status> {
        let id = cv::ref_from(req.into_inner().id).map_err(refused)?;
        answer(self.provider.describe(&id).await, |i| cv::instance_to(&i))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let filter = cv::filter_from(req.get_ref()).map_err(refused)?;
        answer(self.provider.list(filter).await, |l| pb::ListResponse {
            instances: l.iter().map(cv::instance_to).collect(),
        })
    }

    async fn power(&self, req: Request<pb::PowerRequest>) -> Result<Response<pb::Instance>, Status> {
        let req = req.into_inner();
        let id = cv::ref_from(req.id).map_err(refused)?;
        let op = cv::power_from(req.op).map_err(refused)?;
        answer(self.provider.power(&id, op).await, |i| cv::instance_to(&i))
    }

    async fn reconfigure(
        &self,
        req: Request<pb::ReconfigureRequest>,
    ) -> Result<Response<pb::ReconfigureResponse>, Status> {
        let req = req.into_inner();
        let change = cv::resize_from(&req).map_err(refused)?;
        let id = cv::ref_from(req.id).map_err(refused)?;
        answer(self.provider.reconfigure(&id, &change).await, |o| {
            pb::ReconfigureResponse {
                restart_required: o.restart_required,
            }
        })
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let id = cv::ref_from(req.into_inner().id).map_err(refused)?;
        answer(self.provider.delete(&id).await, |o| pb::DeleteResponse {
            outcome: cv::delete_to(o),
        })
    }

    async fn list_templates(
        &self,
        _: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        answer(self.provider.list_templates().await, |t| pb::ListTemplatesResponse {
            templates: t.iter().map(cv::template_to).collect(),
        })
    }

    async fn capacity(&self, _: Request<pb::CapacityRequest>) -> Result<Response<pb::HostCapacity>, Status> {
        answer(self.provider.capacity().await, |c| cv::capacity_to(&c))
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        let req = req.into_inner();
        let id = cv::ref_from(req.id).map_err(refused)?;
        if req.timeout_ms == 0 {
            return Err(refused(Bad::missing("timeout_ms")));
        }
        let timeout = std::time::Duration::from_millis(req.timeout_ms);
        answer(self.provider.exec(&id, &req.command, timeout).await, |o| {
            pb::ExecResponse {
                exit_status: o.exit_status,
                stdout: o.stdout,
                stderr: o.stderr,
                truncated: o.truncated,
            }
        })
    }
}
