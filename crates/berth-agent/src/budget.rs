//! A completion must fit the control plane's request body limit (the claim says what it is):
//! output tails are cut to fit, then command texts, and a failure's message; an outcome that
//! cannot fit even then becomes a small failure, so a completion is never refused for its size
//! (which would leave the operation to be claimed and refused again, for ever).

use berth_api::wire::{CommandRun, Complete, Completion, OpError};

/// What a control plane that does not say accepts (its default).
pub const DEFAULT_LIMIT: u64 = 64 * 1024;

/// The longest command text kept once output tails alone do not make a completion fit.
const COMMAND_TEXT_CAP: usize = 256;

/// The end of `s`, at most `max` bytes, cut at a character boundary.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// The start of `s`, at most `max` bytes, cut at a character boundary.
fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The size of the completion's request body.
pub fn body_size(generation: i64, outcome: &Completion) -> usize {
    serde_json::to_vec(&Complete {
        generation,
        outcome: outcome.clone(),
    })
    .map(|b| b.len())
    .unwrap_or(usize::MAX)
}

/// The largest `n` in `0..=max` for which `fits(n)`, assuming `fits` holds up to some point
/// and not after; `None` when not even `fits(0)`.
fn largest(max: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    if !fits(0) {
        return None;
    }
    let (mut lo, mut hi) = (0, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

fn cut_runs(runs: &[CommandRun], tail_cap: usize, text_cap: usize) -> Vec<CommandRun> {
    runs.iter()
        .map(|r| CommandRun {
            command: head(&r.command, text_cap).to_owned(),
            exit_status: r.exit_status,
            output_tail: tail(&r.output_tail, tail_cap),
        })
        .collect()
}

/// `outcome`, cut to fit `limit` bytes of request body.
pub fn fit(generation: i64, outcome: Completion, limit: u64) -> Completion {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let size = |o: &Completion| body_size(generation, o);
    if size(&outcome) <= limit {
        return outcome;
    }
    let too_large = |what: &str| {
        Completion::Failed(OpError {
            code: "internal".into(),
            message: format!(
                "the {what} does not fit the control plane's request limit of {limit} bytes (api.body_limit_bytes)"
            ),
        })
    };
    match outcome {
        Completion::Succeeded(r) => {
            let with = |tail_cap: usize, text_cap: usize| {
                let mut r = r.clone();
                r.commands = cut_runs(&r.commands, tail_cap, text_cap);
                Completion::Succeeded(r)
            };
            let longest_tail = r.commands.iter().map(|c| c.output_tail.len()).max().unwrap_or(0);
            let longest_text = r.commands.iter().map(|c| c.command.len()).max().unwrap_or(0);
            if let Some(cap) = largest(longest_tail, |c| size(&with(c, longest_text)) <= limit) {
                return with(cap, longest_text);
            }
            let text_cap = COMMAND_TEXT_CAP.min(longest_text);
            match largest(longest_tail, |c| size(&with(c, text_cap)) <= limit) {
                Some(cap) => with(cap, text_cap),
                None => too_large("outcome"),
            }
        }
        Completion::Failed(e) => {
            let with = |n: usize| {
                Completion::Failed(OpError {
                    code: e.code.clone(),
                    message: format!("{}…", head(&e.message, n)),
                })
            };
            match largest(e.message.len(), |n| size(&with(n)) <= limit) {
                Some(n) => with(n),
                None => too_large("failure"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_api::wire::OpResult;

    use super::*;

    #[test]
    fn tail_keeps_the_end_at_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé€", 4), "é€".chars().skip(1).collect::<String>());
    }

    fn runs(n: usize, output: &str) -> Vec<CommandRun> {
        (0..n)
            .map(|i| CommandRun {
                command: format!("step {i}"),
                exit_status: 0,
                output_tail: output.to_owned(),
            })
            .collect()
    }

    /// 64 commands of 4 KiB of ANSI-coloured output (each escape doubles in JSON) are cut to fit
    /// 64 KiB, keeping the end of every tail and every command.
    #[test]
    fn output_tails_are_cut_to_fit_the_limit() {
        let coloured = "\u{1b}[32mok\u{1b}[0m\n".repeat(300);
        let big = Completion::Succeeded(OpResult {
            commands: runs(64, &coloured),
            ..OpResult::default()
        });
        assert!(body_size(7, &big) > 64 * 1024);
        let Completion::Succeeded(r) = fit(7, big.clone(), DEFAULT_LIMIT) else {
            panic!("a success stays a success")
        };
        let fitted = Completion::Succeeded(r.clone());
        assert!(body_size(7, &fitted) <= 64 * 1024);
        assert!(body_size(7, &fitted) > 60 * 1024, "not cut more than needed");
        assert_eq!(r.commands.len(), 64);
        assert!(
            r.commands
                .iter()
                .all(|c| coloured.ends_with(&c.output_tail) && !c.output_tail.is_empty())
        );
        // Small outcomes are left alone.
        let small = Completion::Succeeded(OpResult::default());
        assert_eq!(fit(7, small.clone(), DEFAULT_LIMIT), small);
    }

    #[test]
    fn a_failure_message_is_cut_and_an_outcome_that_cannot_fit_becomes_a_small_failure() {
        let long = Completion::Failed(OpError {
            code: "post_provision_failed".into(),
            message: format!("command 1 exited 3; output ends with: {}", "x".repeat(100_000)),
        });
        let Completion::Failed(e) = fit(1, long, 4096) else {
            panic!()
        };
        assert_eq!(e.code, "post_provision_failed");
        assert!(e.message.starts_with("command 1 exited 3") && e.message.ends_with('…'));
        assert!(body_size(1, &Completion::Failed(e)) <= 4096);

        let many = Completion::Succeeded(OpResult {
            commands: runs(64, "out"),
            ..OpResult::default()
        });
        let Completion::Failed(e) = fit(1, many, 1024) else {
            panic!("64 commands cannot fit 1 KiB")
        };
        assert!(e.message.contains("1024 bytes"), "{e:?}");
    }
}
