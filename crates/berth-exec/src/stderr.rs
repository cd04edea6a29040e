//! Draining a child's stderr: split into lines (each capped), logged redacted as they arrive,
//! optionally forwarded, and a bounded tail kept for errors.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::redact::redact_secrets;

/// Longest stderr line kept; the rest of a longer line is dropped (and marked).
const MAX_LINE: usize = 4096;

/// The last lines of stderr, at most `limit` bytes in total (already redacted).
pub(crate) struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
    limit: usize,
}

impl Tail {
    pub(crate) fn new(limit: usize) -> Self {
        Tail {
            lines: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.limit && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
            }
        }
    }

    pub(crate) fn text(&self) -> String {
        let mut out = self.lines.iter().cloned().collect::<Vec<_>>().join("\n");
        if out.len() > self.limit {
            // Keep (at most) the last `limit` bytes, starting on a char boundary.
            let cut = ((out.len() - self.limit)..=out.len())
                .find(|&i| out.is_char_boundary(i))
                .unwrap_or(out.len());
            out = out[cut..].to_owned();
        }
        out
    }
}

/// Reads `reader` to its end, handling each line as it completes.
pub(crate) async fn drain<R: AsyncRead + Unpin>(
    mut reader: R,
    name: &str,
    tail: &Mutex<Tail>,
    forward: Option<&UnboundedSender<String>>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut overflow = false;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line, overflow, name, tail, forward);
                line.clear();
                overflow = false;
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                overflow = true;
            }
        }
    }
    if !line.is_empty() {
        emit(&line, overflow, name, tail, forward);
    }
    Ok(())
}

fn emit(raw: &[u8], overflow: bool, name: &str, tail: &Mutex<Tail>, forward: Option<&UnboundedSender<String>>) {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    if text.ends_with('\r') {
        text.pop();
    }
    if overflow {
        text.push_str(" [line truncated]");
    }
    let shown = redact_secrets(&text);
    tracing::info!(target: "berth_exec::stderr", cmd = %name, "{shown}");
    tail.lock().unwrap_or_else(|p| p.into_inner()).push(shown);
    if let Some(tx) = forward {
        // The receiver may be gone (the caller stopped listening): that is not an error here.
        let _ = tx.send(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_within_the_limit() {
        let mut t = Tail::new(20);
        for i in 0..10 {
            t.push(format!("line {i}"));
        }
        let text = t.text();
        assert!(text.len() <= 20, "{text:?}");
        assert!(text.ends_with("line 9"), "{text:?}");
        assert!(!text.contains("line 1\n"), "{text:?}");
    }

    #[test]
    fn one_over_long_line_is_cut_to_its_last_bytes_on_a_char_boundary() {
        let mut t = Tail::new(100);
        t.push(format!("{}{}end", "a".repeat(500), "é".repeat(100)));
        let text = t.text();
        assert!(text.len() <= 100, "{} bytes: {text:?}", text.len());
        assert!(text.len() >= 99, "cut more than needed: {} bytes", text.len());
        assert!(text.ends_with("end"), "{text:?}");
        assert!(!text.contains('a'), "{text:?}");
    }
}
