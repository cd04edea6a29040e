//! Following an operation as it happens: the server-sent event stream of its stages, opened
//! again from the last event seen when it ends or breaks, until its `done` event.

use std::time::Duration;

use crate::client::{Client, ClientError, refusal, transport};
use crate::wire::{EventView, OperationView};

/// One event of a `text/event-stream`: its `event:` name and `data:` lines.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    name: String,
    data: String,
}

/// Takes the complete events (each ended by a blank line) off the front of `buf`, the bytes
/// read so far with `\r` left out (so neither a character nor a `\r\n` split between two
/// chunks is lost).
fn take_events(buf: &mut Vec<u8>) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let bytes: Vec<u8> = buf.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&bytes);
        let mut ev = SseEvent::default();
        for line in block.lines() {
            // `:` lines are comments (keep-alives); `id:` is read from the data's `seq`.
            if let Some(v) = line.strip_prefix("event:") {
                ev.name = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !ev.name.is_empty() || !ev.data.is_empty() {
            out.push(ev);
        }
    }
    out
}

impl Client {
    /// Follows operation `id` until it ends or `timeout` runs out: `on_event` gets each stage
    /// event as the control plane records it, the operation comes back once it ended. A stream
    /// the server closes (its `limits.stream_max_seconds`) or that breaks is opened again with
    /// `Last-Event-ID`, so nothing is shown twice or missed.
    pub async fn follow_operation(
        &self,
        id: &str,
        timeout: Duration,
        mut on_event: impl FnMut(&EventView),
    ) -> Result<OperationView, ClientError> {
        let url = format!("{}/api/v1/operations/{id}/events", self.base);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut after: i64 = 0;
        let mut refused = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Transport {
                    url,
                    reason: format!("the operation did not end within {}s", timeout.as_secs()),
                });
            }
            let mut hm = http::HeaderMap::new();
            hm.insert(
                http::header::ACCEPT,
                http::HeaderValue::from_static("text/event-stream"),
            );
            if after > 0
                && let Ok(v) = http::HeaderValue::try_from(after.to_string())
            {
                hm.insert("last-event-id", v);
            }
            self.authorize(&http::Method::GET, &url, &[], &mut hm)?;
            let sent = self.http.get(&url).headers(hm).timeout(left).send().await;
            let mut resp = match sent {
                Ok(r) => {
                    refused = 0;
                    r
                }
                // A control plane restarting: tried again for a while (20 × 0.5 s).
                Err(e) if !e.is_timeout() && refused < 20 => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(transport(&url, &e)),
            };
            let status = resp.status();
            if !status.is_success() {
                let body = resp.bytes().await.unwrap_or_default();
                return Err(refusal(status, url, &body));
            }
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    // Closed by the server, or broken: open it again from `after`, after a
                    // pause (a server that keeps closing is not asked in a tight loop).
                    Ok(None) | Err(_) => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        break;
                    }
                };
                buf.extend(chunk.iter().filter(|b| **b != b'\r'));
                for ev in take_events(&mut buf) {
                    match ev.name.as_str() {
                        "stage" => {
                            if let Ok(e) = serde_json::from_str::<EventView>(&ev.data) {
                                after = after.max(e.seq);
                                on_event(&e);
                            }
                        }
                        "done" => {
                            return serde_json::from_str(&ev.data).map_err(|e| ClientError::Decode {
                                url: url.clone(),
                                reason: e.to_string(),
                            });
                        }
                        "error" => {
                            return Err(ClientError::Transport {
                                url: url.clone(),
                                reason: ev.data,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_taken_whole_and_comments_skipped() {
        let mut buf = b": keep-alive\n\nevent: stage\nid: 3\ndata: {\"a\":1}\n\nevent: done\ndata: x".to_vec();
        let got = take_events(&mut buf);
        assert_eq!(
            got,
            vec![SseEvent {
                name: "stage".into(),
                data: "{\"a\":1}".into()
            }]
        );
        assert_eq!(buf, b"event: done\ndata: x", "an unfinished event waits for the rest");
        buf.extend(b"\n\n");
        assert_eq!(take_events(&mut buf)[0].name, "done");
    }

    /// Chunks may split a character or a `\r\n`: the bytes are joined before anything is read.
    #[test]
    fn chunk_boundaries_lose_nothing() {
        let whole = "event: stage\r\ndata: {\"m\":\"caf\u{e9}\"}\r\n\r\n".as_bytes();
        for cut in 1..whole.len() {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for part in [&whole[..cut], &whole[cut..]] {
                buf.extend(part.iter().filter(|b| **b != b'\r'));
                got.extend(take_events(&mut buf));
            }
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(got[0].data, "{\"m\":\"caf\u{e9}\"}", "cut at {cut}");
        }
    }
}
