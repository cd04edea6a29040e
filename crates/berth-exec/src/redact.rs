//! Masking of secret-looking values in free text (a command's stderr, a snippet of bad output)
//! before it reaches a log line or an error message.

use std::sync::LazyLock;

use regex::Regex;

/// `"root_password": "x"`, `api_token=x`, `'secret': 'x'`, `PASSWORD: x` ... : a key containing
/// password/passwd/secret/token/private_key/credential, then `:` or `=`, then a value (quoted, or up
/// to whitespace, a comma, `;`, `&` or a closing brace).
static SECRET_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(["']?[a-z0-9_.\-]*(?:password|passwd|secret|token|private_key|credential)[a-z0-9_.\-]*["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]]+)"#,
    )
    .expect("the secret pattern compiles")
});

/// Replaces the values of secret-looking keys with `<redacted>`, keeping the keys (so a reader
/// still sees which field was there).
pub fn redact_secrets(text: &str) -> String {
    SECRET_VALUE
        .replace_all(text, |caps: &regex::Captures<'_>| {
            let value = &caps[2];
            let masked = if value.starts_with('"') {
                "\"<redacted>\""
            } else if value.starts_with('\'') {
                "'<redacted>'"
            } else {
                "<redacted>"
            };
            format!("{}{masked}", &caps[1])
        })
        .into_owned()
}

/// The start of `output` for an error message: secrets redacted first, trimmed, quoted, and cut
/// to at most `limit` bytes (on a character boundary, then marked with `...`).
pub fn redacted_snippet(output: &str, limit: usize) -> String {
    let clean = redact_secrets(output);
    let clean = clean.trim();
    if clean.len() <= limit {
        return format!("{clean:?}");
    }
    let mut end = limit;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &clean[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_json_and_key_value_forms() {
        let cases = [
            (r#"{"root_password": "hunter2", "ip": "10.0.0.1"}"#, "hunter2"),
            (r#"{"root_password":"hun\"ter2"}"#, "ter2"),
            ("API_TOKEN=abc123 next", "abc123"),
            ("client_secret: s3cr3t, other", "s3cr3t"),
            ("{'password': 'pw-123'}", "pw-123"),
            (r#"{"root_password": "truncated-val"#, "truncated-val"),
        ];
        for (input, secret) in cases {
            let out = redact_secrets(input);
            assert!(!out.contains(secret), "{input} -> {out}");
            assert!(out.contains("<redacted>"), "{input} -> {out}");
        }
    }

    #[test]
    fn snippets_are_redacted_quoted_and_cut_on_a_char_boundary() {
        assert_eq!(redacted_snippet("  token=abc \n", 200), "\"token=<redacted>\"");
        let long = format!("{}é{}", "a".repeat(9), "b".repeat(20));
        assert_eq!(redacted_snippet(&long, 10), format!("{:?}...", "a".repeat(9)));
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let text = r#"{"success": true, "instance": {"external_id": "vm-1", "ip_address": "10.0.0.1"}}"#;
        assert_eq!(redact_secrets(text), text);
        assert_eq!(
            redact_secrets("berth-stage: start_vm started"),
            "berth-stage: start_vm started"
        );
    }
}
