//! Live progress for the browser: `GET /ui/operations/{id}/live` is a server-sent event stream of
//! the rendered progress region. It follows the API's own event stream (`/operations/{id}/events`,
//! called in process as the viewer, so it wakes on the same store signal, PostgreSQL NOTIFY
//! included, and resumes with `Last-Event-ID`): whenever events arrive it re-reads the operation
//! and pushes the region as an unnamed message (htmx swaps it in), with the last event's id;
//! at the end one named `done` event closes it. Nothing is pushed that the agent did not report.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

use crate::Web;
use crate::api::seg;
use crate::pages::operations::{Progress, ProgressFragment};
use crate::session::Viewer;

/// What one block of the API's stream said.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    last_id: Option<String>,
    done: bool,
    any: bool,
}

/// Takes the complete blocks (ended by a blank line) out of `buf`.
fn take_blocks(buf: &mut String) -> Seen {
    let mut seen = Seen::default();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut event = "message";
        let mut is_event = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim();
                is_event = true;
            } else if let Some(v) = line.strip_prefix("id:") {
                seen.last_id = Some(v.trim().to_owned());
            } else if line.starts_with("data:") {
                is_event = true;
            }
        }
        if is_event {
            seen.any = true;
            seen.done |= event == "done" || event == "error";
        }
    }
    seen
}

struct Feed {
    web: Web,
    viewer: Viewer,
    id: String,
    body: axum::body::BodyDataStream,
    buf: String,
    finished: bool,
    pending: VecDeque<Event>,
}

/// The progress region as one unnamed message, with the id of the last event it shows.
async fn fragment(web: &Web, viewer: &Viewer, id: &str, last_id: Option<String>) -> Option<Event> {
    let p = match Progress::read(web, viewer, id).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(operation = %id, error = %e.detail, "live progress could not read the operation");
            return None;
        }
    };
    let html = askama::Template::render(&ProgressFragment { p })
        .ok()?
        .replace('\r', "");
    let ev = Event::default().data(html);
    Some(match last_id {
        Some(id) => ev.id(id),
        None => ev,
    })
}

pub async fn stream(State(web): State<Web>, viewer: Viewer, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned);
    let resume: Vec<(&str, &str)> = last.iter().map(|l| ("last-event-id", l.as_str())).collect();
    let path = format!("/api/v1/operations/{}/events", seg(&id));
    let resp = match web
        .api
        .send(&viewer.caller, Method::GET, &path, None::<&()>, &resume)
        .await
    {
        Ok(r) => r,
        Err(p) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, p.detail).into_response();
        }
    };
    let feed = Feed {
        web,
        viewer,
        id,
        body: resp.into_body().into_data_stream(),
        buf: String::new(),
        finished: false,
        pending: VecDeque::new(),
    };
    let events = futures::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(e) = f.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), f));
            }
            if f.finished {
                return None;
            }
            match f.body.next().await {
                Some(Ok(chunk)) => f.buf.push_str(&String::from_utf8_lossy(&chunk)),
                // The API's stream ended or broke: end here too; the browser reconnects.
                Some(Err(_)) | None => return None,
            }
            let seen = take_blocks(&mut f.buf);
            if !seen.any {
                continue;
            }
            if let Some(ev) = fragment(&f.web, &f.viewer, &f.id, seen.last_id).await {
                f.pending.push_back(ev);
            }
            if seen.done {
                f.finished = true;
                f.pending.push_back(Event::default().event("done").data("done"));
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_across_chunks() {
        let mut buf = "event: stage\nid: 3\ndata: {}\n\nevent: sta".to_owned();
        assert_eq!(
            take_blocks(&mut buf),
            Seen {
                last_id: Some("3".into()),
                done: false,
                any: true
            }
        );
        buf.push_str("ge\nid: 4\ndata: {}\n\n: keep-alive\n\nevent: done\ndata: {}\n\n");
        assert_eq!(
            take_blocks(&mut buf),
            Seen {
                last_id: Some("4".into()),
                done: true,
                any: true
            }
        );
        assert!(buf.is_empty());
        let mut comment = ":\n\n".to_owned();
        assert!(!take_blocks(&mut comment).any, "keep-alive comments are not progress");
    }
}
