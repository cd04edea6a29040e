//! Turns TOML and validation errors into `file:line:column: key: message`, finding the line of a
//! key in the source text, and keeping secret values out of the message.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key path, e.g. `provisioner.proxmox.template_vmid`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": key '{key}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigFileError {}

/// Keys whose values must never be repeated: anything named like a secret, and every value of an
/// `env` table (the variables handed to scripts and tools often are credentials).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let k = key.rsplit('.').next().unwrap_or(&key);
    let named = (k.contains("secret") || k.contains("password") || k.contains("private") || k.contains("token"))
        && !k.ends_with("_file")
        && !k.ends_with("_id");
    named || key.contains(".env.") || key.ends_with(".env")
}

pub(crate) struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Locator<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Locator { path, text }
    }

    fn error(
        &self,
        line: Option<usize>,
        column: Option<usize>,
        key: Option<String>,
        message: String,
    ) -> ConfigFileError {
        ConfigFileError {
            path: self.path.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    /// 1-based line and column of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
        (line, col)
    }

    /// The table header (`[a.b]`) in force at a 1-based line.
    fn table_at(&self, line: usize) -> String {
        self.text
            .lines()
            .take(line)
            .filter_map(header_name)
            .last()
            .unwrap_or_default()
    }

    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigFileError {
        let raw = e.message().trim().to_owned();
        let Some(span) = e.span() else {
            return self.error(None, None, None, raw);
        };
        let (line, col) = self.line_col(span.start);
        let src_line = self.text.lines().nth(line - 1).unwrap_or_default();
        let table = self.table_at(line);
        let join = |k: &str| {
            if table.is_empty() {
                k.to_owned()
            } else {
                format!("{table}.{k}")
            }
        };
        let key = if let Some(field) = between(&raw, "missing field `", "`") {
            Some(join(&field))
        } else if let Some(h) = header_name(src_line) {
            Some(h)
        } else {
            key_of_line(src_line).map(|k| join(&k))
        };
        let mut message = humanize(&raw);
        if key.as_deref().is_some_and(is_secret_key) && message.contains("invalid type") {
            message = "invalid type (value not shown: it is a secret); expected a string".to_owned();
        }
        self.error(Some(line), Some(col), key, message)
    }

    /// An error about `key` (dotted path): points at the line that sets it, else at its table's
    /// header, else at no line.
    pub fn at_key(&self, key: &str, message: &str) -> ConfigFileError {
        // `pool[2].cores`: a key of the third `[[pool]]` table.
        if let Some((array, rest)) = key.split_once('[')
            && let Some((n, leaf)) = rest.split_once("].")
            && let Ok(n) = n.parse::<usize>()
        {
            return self.at_array_key(array, n, leaf, key, message);
        }
        let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        let mut current = String::new();
        let mut table_line = None;
        for (i, l) in self.text.lines().enumerate() {
            if let Some(h) = header_name(l) {
                current = h;
                if current == key {
                    return self.error(Some(i + 1), Some(1), Some(key.to_owned()), message.to_owned());
                }
                if current == table {
                    table_line = Some(i + 1);
                }
                continue;
            }
            if current == table && key_of_line(l).as_deref() == Some(leaf) {
                let col = l.len() - l.trim_start().len() + 1;
                return self.error(Some(i + 1), Some(col), Some(key.to_owned()), message.to_owned());
            }
        }
        // A key inside an inline table (`env = { A = "x" }`) has no line of its own: point at the
        // line that sets its parent.
        if table_line.is_none() && table.contains('.') {
            let parent = self.at_key(table, message);
            if parent.line.is_some() {
                return ConfigFileError {
                    key: Some(key.to_owned()),
                    ..parent
                };
            }
        }
        self.error(
            table_line,
            table_line.map(|_| 1),
            Some(key.to_owned()),
            message.to_owned(),
        )
    }
}

impl Locator<'_> {
    /// `leaf` in the `n`th (from 0) `[[array]]` table, else that table's header line.
    fn at_array_key(&self, array: &str, n: usize, leaf: &str, key: &str, message: &str) -> ConfigFileError {
        let mut seen = 0;
        let mut inside = false;
        let mut header = None;
        for (i, l) in self.text.lines().enumerate() {
            if let Some(h) = header_name(l) {
                inside = false;
                if h == array && l.trim_start().starts_with("[[") {
                    if seen == n {
                        inside = true;
                        header = Some(i + 1);
                    }
                    seen += 1;
                }
                continue;
            }
            if inside && key_of_line(l).as_deref() == Some(leaf) {
                let col = l.len() - l.trim_start().len() + 1;
                return self.error(Some(i + 1), Some(col), Some(key.to_owned()), message.to_owned());
            }
        }
        self.error(header, header.map(|_| 1), Some(key.to_owned()), message.to_owned())
    }
}

fn header_name(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.split(']').next()?;
    let inner = inner.trim_start_matches('[').trim();
    (!inner.is_empty()).then(|| {
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join(".")
    })
}

fn key_of_line(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('#')).then(|| k.to_owned())
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(rest[..rest.find(end)?].to_owned())
}

/// serde's wording, made to say what was expected in our terms.
fn humanize(msg: &str) -> String {
    if let Some(field) = between(msg, "unknown field `", "`") {
        let expected = msg.split_once("expected").map(|(_, e)| e.trim()).unwrap_or("");
        return format!("unknown key '{field}'; expected {expected}");
    }
    if let Some(field) = between(msg, "missing field `", "`") {
        return format!("missing required key '{field}'");
    }
    msg.replace("u32", "a whole number").replace("u64", "a whole number")
}
