//! Operations as callers watch them: `GET /operations/{id}` (optionally long-polling with
//! `?wait=30s` until it is done) and `GET /operations/{id}/events`, a server-sent event stream of
//! its progress that ends with the final state. Both wake on the store's operation signal, which
//! on PostgreSQL is rung by whichever replica wrote the event.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use berth_api::wire::*;
use berth_store::{OpStatus, Operation};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Authed, Caller};
use crate::problem::{ApiError, ApiResult, parse_query};
use crate::views::operation_view;

/// Leases expire silently and a lost notification must not hang a waiter: look again this often.
const RECHECK: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `30s`, `500ms`, `2m` or plain seconds.
pub fn parse_wait(field: &str, s: &str) -> ApiResult<Duration> {
    let bad = || ApiError::invalid(field, format!("{s:?} is not a duration like 30s, 500ms or 2m"));
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    Ok(d)
}

fn done(op: &Operation) -> bool {
    matches!(op.status, OpStatus::Succeeded | OpStatus::Failed)
}

/// The operation, if this caller may see it (through its instance, or as its provider).
pub async fn visible_operation(st: &AppState, caller: &Caller, id: &str) -> ApiResult<Operation> {
    caller.require_authenticated()?;
    let op = st.store.operation(id).await?;
    let visible = match caller {
        Caller::Customer(_) => match st.store.instance(&op.instance_id).await {
            Ok(i) => caller.sees_instance(&i),
            Err(_) => false,
        },
        other => other.manages_provider(&op.provider_id),
    };
    if !visible {
        return Err(ApiError::NotFound(format!("operation {id}")));
    }
    Ok(op)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Long-poll until the operation is done, at most this long (`30s`, max 60s).
    pub wait: Option<String>,
}

impl WaitQuery {
    /// How long to wait: none by default, at most `max`.
    pub fn duration(&self, max: Duration) -> ApiResult<Duration> {
        let asked = self.wait.as_deref().map(|w| parse_wait("wait", w)).transpose()?;
        Ok(asked.unwrap_or_default().min(max))
    }
}

#[utoipa::path(get, path = "/api/v1/operations/{id}", tag = "operations", params(("id" = String, Path), WaitQuery),
    responses((status = 200, body = OperationView), (status = "4XX", body = Problem)))]
pub async fn get_operation(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    req: Authed,
) -> ApiResult<axum::Json<OperationView>> {
    let mut op = visible_operation(&st, &req.caller, &id).await?;
    let q: WaitQuery = parse_query(q.as_deref())?;
    let wait = q.duration(MAX_WAIT)?;
    let deadline = tokio::time::Instant::now() + wait;
    let signal = st.store.operation_signal(&id);
    while !done(&op) {
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        op = st.store.operation(&id).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if done(&op) || left.is_zero() {
            break;
        }
        let _ = tokio::time::timeout(left.min(RECHECK), notified).await;
    }
    let events = st.store.events(&id, 0).await?;
    Ok(axum::Json(operation_view(&op, &events)?))
}

struct Feed {
    st: AppState,
    id: String,
    after: i64,
    finished: bool,
    /// The stream ends here (`limits.stream_max_seconds`); the client resumes with Last-Event-ID.
    until: tokio::time::Instant,
    pending: std::collections::VecDeque<Event>,
}

#[utoipa::path(get, path = "/api/v1/operations/{id}/events", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream",
        description = "`stage` events (an EventView each, id = its seq; resume with Last-Event-ID), then one `done` event with the OperationView. A stream still open after limits.stream_max_seconds ends without `done`: reconnect with Last-Event-ID"),
        (status = "4XX", body = Problem)))]
pub async fn operation_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: Authed,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>>> {
    visible_operation(&st, &req.caller, &id).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let feed = Feed {
        st: st.clone(),
        id,
        after,
        finished: false,
        until: tokio::time::Instant::now() + Duration::from_secs(st.cfg.limits.stream_max_seconds),
        pending: Default::default(),
    };
    let stream = futures::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(e) = f.pending.pop_front() {
                return Some((Ok(e), f));
            }
            if f.finished {
                return None;
            }
            let signal = f.st.store.operation_signal(&f.id);
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (op, events) = match (
                f.st.store.operation(&f.id).await,
                f.st.store.events(&f.id, f.after).await,
            ) {
                (Ok(op), Ok(ev)) => (op, ev),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(operation = %f.id, error = %e, "event stream ends on a store error");
                    f.finished = true;
                    f.pending.push_back(
                        Event::default()
                            .event("error")
                            .data("the server could not read the operation"),
                    );
                    continue;
                }
            };
            for e in &events {
                f.after = e.seq;
                if let Ok(ev) = serde_json::from_value::<EventReport>(e.event.clone()) {
                    let view = EventView {
                        seq: e.seq,
                        at: e.at,
                        event: ev,
                    };
                    if let Ok(ev) = Event::default().event("stage").id(e.seq.to_string()).json_data(&view) {
                        f.pending.push_back(ev);
                    }
                }
            }
            if done(&op) {
                f.finished = true;
                let all = f.st.store.events(&f.id, 0).await.unwrap_or_default();
                if let Ok(view) = operation_view(&op, &all)
                    && let Ok(ev) = Event::default().event("done").json_data(&view)
                {
                    f.pending.push_back(ev);
                }
                continue;
            }
            if f.pending.is_empty() {
                let left = f.until.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return None;
                }
                let _ = tokio::time::timeout(left.min(RECHECK), notified).await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse() {
        assert_eq!(parse_wait("wait", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("wait", "30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("wait", "250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_wait("wait", "2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "s", "3h", "-1s", "1.5s"] {
            assert!(parse_wait("wait", bad).is_err(), "{bad}");
        }
    }
}
