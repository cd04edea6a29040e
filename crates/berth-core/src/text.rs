//! Text that people see: names and labels a provider or customer chooses are shown in other
//! people's terminals and browsers, so they may not carry control characters (ANSI escapes,
//! carriage returns) or the bidirectional overrides that make text read differently than it is.

use std::borrow::Cow;

/// Control characters and the Unicode bidirectional embedding, override and isolate marks.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A name of 1 to `max` bytes, not only spaces, without [`is_unsafe`] characters; the error
/// says what was expected.
pub fn check_name(s: &str, max: usize) -> Result<(), String> {
    let chars = s.chars().count();
    if s.trim().is_empty() || chars > max {
        return Err(format!("must be 1-{max} characters, not only spaces (got {chars})"));
    }
    if let Some(c) = s.chars().find(|c| is_unsafe(*c)) {
        return Err(format!(
            "must not contain control or bidirectional-override characters (found U+{:04X})",
            c as u32
        ));
    }
    Ok(())
}

/// `s` with every [`is_unsafe`] character but newline and tab written as `\u{…}`, for printing
/// text that came from someone else.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) && c != '\n' && c != '\t' {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_escapes_and_overrides() {
        assert!(check_name("small vm", 128).is_ok());
        assert!(check_name("", 128).is_err());
        assert!(check_name("  ", 128).is_err());
        assert!(check_name(&"x".repeat(129), 128).is_err());
        let e = check_name("red\u{1b}[31m", 128).unwrap_err();
        assert!(e.contains("U+001B"), "{e}");
        assert!(check_name("abc\u{202E}gpj.exe", 128).is_err());
        assert!(check_name("line\nbreak", 128).is_err());
    }

    #[test]
    fn printing_escapes_what_a_terminal_would_obey() {
        assert_eq!(printable("plain\tand\nlines"), "plain\tand\nlines");
        assert_eq!(printable("x\u{1b}[2Jy"), "x\\u{1b}[2Jy");
        assert_eq!(printable("a\rb\u{202E}"), "a\\u{d}b\\u{202e}");
    }
}
