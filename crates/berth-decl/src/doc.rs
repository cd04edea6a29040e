//! A site file as a tree of values that remember their line: TOML (through `toml`'s spanned
//! parser) or JSON (a small parser of its own, since serde_json keeps no positions), so that
//! every later error can name file:line:key.

/// One value and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub node: Node,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Item>),
    /// Keys in file order, each with the line of the key.
    Table(Vec<(String, usize, Item)>),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number",
            Node::Bool(_) => "true or false",
            Node::List(_) => "a list",
            Node::Table(_) => "a table",
        }
    }
}

/// Where each line of a text ends, to tell the line of an offset in O(log n) (counting
/// newlines from the start for every key made reading a large site file quadratic).
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(text.match_indices('\n').map(|(i, _)| i).collect())
    }

    /// The 1-based line of byte `offset`.
    fn of(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

/// Parses TOML (or JSON when `json`), or answers the line and message of the syntax error.
pub(crate) fn load(text: &str, json: bool) -> Result<Item, (usize, String)> {
    let lines = &Lines::new(text);
    if json {
        let mut p = Json {
            s: text.as_bytes(),
            i: 0,
            text,
            lines,
        };
        p.ws();
        let v = p.value()?;
        p.ws();
        if p.i < p.s.len() {
            return Err((lines.of(p.i), "unexpected text after the JSON document".into()));
        }
        return Ok(v);
    }
    let doc = toml::de::DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| lines.of(s.start));
        (line, e.message().trim().to_owned())
    })?;
    Ok(Item {
        line: 1,
        node: toml_table(lines, doc.get_ref()),
    })
}

fn toml_table(lines: &Lines, t: &toml::de::DeTable<'_>) -> Node {
    Node::Table(
        t.iter()
            .map(|(k, v)| (k.get_ref().to_string(), lines.of(k.span().start), toml_item(lines, v)))
            .collect(),
    )
}

fn toml_item(lines: &Lines, v: &toml::Spanned<toml::de::DeValue<'_>>) -> Item {
    use toml::de::DeValue as V;
    let line = lines.of(v.span().start);
    let node = match v.get_ref() {
        V::String(s) => Node::Str(s.to_string()),
        V::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map(Node::Int)
            .unwrap_or_else(|_| Node::Str(i.as_str().to_owned())),
        V::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse()
            .map(Node::Float)
            .unwrap_or(Node::Float(f64::NAN)),
        V::Boolean(b) => Node::Bool(*b),
        V::Datetime(d) => Node::Str(d.to_string()),
        V::Array(a) => Node::List(a.iter().map(|x| toml_item(lines, x)).collect()),
        V::Table(t) => toml_table(lines, t),
    };
    Item { node, line }
}

/// A JSON reader that keeps the line of every value and key.
struct Json<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
    lines: &'a Lines,
}

impl Json<'_> {
    fn line(&self) -> usize {
        self.lines.of(self.i)
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, (usize, String)> {
        Err((self.line(), msg.into()))
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Result<Item, (usize, String)> {
        self.ws();
        let line = self.line();
        let node = match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        let key_line = self.line();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return self.err(format!("expected ':' after \"{key}\""));
                        }
                        let v = self.value()?;
                        entries.push((key, key_line, v));
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return self.err("expected ',' or '}'");
                        }
                    }
                }
                Node::Table(entries)
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return self.err("expected ',' or ']'");
                        }
                    }
                }
                Node::List(items)
            }
            Some(b'"') => Node::Str(self.string()?),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Node::Bool(true)
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Node::Bool(false)
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                return self.err("null is not a value here (leave the key out)");
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    self.i += 1;
                }
                let t = &self.text[start..self.i];
                match t.parse::<i64>() {
                    Ok(n) => Node::Int(n),
                    Err(_) => match t.parse::<f64>() {
                        Ok(f) => Node::Float(f),
                        Err(_) => return self.err(format!("'{t}' is not a number")),
                    },
                }
            }
            Some(_) => return self.err("expected a value"),
            None => return self.err("the document ends early"),
        };
        Ok(Item { node, line })
    }
    fn string(&mut self) -> Result<String, (usize, String)> {
        if self.s.get(self.i) != Some(&b'"') {
            return self.err("expected a string in double quotes");
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.i..];
            let Some(c) = rest.chars().next() else {
                return self.err("a string is not closed");
            };
            self.i += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = self.text[self.i..].chars().next() else {
                        return self.err("a string is not closed");
                    };
                    self.i += e.len_utf8();
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'u' => {
                            let hex = self.text.get(self.i..self.i + 4).unwrap_or("");
                            if hex.len() < 4 || !hex.is_ascii() {
                                return self.err("bad escape \\u");
                            }
                            let ch = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                            match ch {
                                Some(ch) => out.push(ch),
                                None => return self.err(format!("bad escape \\u{hex}")),
                            }
                            self.i += 4;
                        }
                        c @ ('"' | '\\' | '/') => out.push(c),
                        c => return self.err(format!("bad escape \\{c}")),
                    }
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(item: &Item) -> Vec<(String, usize)> {
        match &item.node {
            Node::Table(t) => t.iter().map(|(k, l, _)| (k.clone(), *l)).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn the_line_of_an_offset_counts_the_newlines_before_it() {
        let text = "a\nbc\n\nd";
        let l = Lines::new(text);
        for offset in 0..=text.len() + 2 {
            let counted = text[..offset.min(text.len())].matches('\n').count() + 1;
            assert_eq!(l.of(offset), counted, "offset {offset}");
        }
    }

    #[test]
    fn toml_and_json_keep_lines() {
        let t = load("version = 1\n\n[proxmox]\nbackend = \"pve\"\n", false).unwrap();
        assert_eq!(lines(&t), [("version".to_owned(), 1), ("proxmox".to_owned(), 3)]);
        let j = load("{\n  \"version\": 1,\n  \"plugins\": {\"proxmox\": {}}\n}", true).unwrap();
        assert_eq!(lines(&j), [("version".to_owned(), 2), ("plugins".to_owned(), 3)]);
        assert_eq!(
            load("{\"a\": [1, 2.5, \"x\\u0041\", true]}", true).unwrap().node,
            Node::Table(vec![(
                "a".into(),
                1,
                Item {
                    line: 1,
                    node: Node::List(vec![
                        Item {
                            line: 1,
                            node: Node::Int(1)
                        },
                        Item {
                            line: 1,
                            node: Node::Float(2.5)
                        },
                        Item {
                            line: 1,
                            node: Node::Str("xA".into())
                        },
                        Item {
                            line: 1,
                            node: Node::Bool(true)
                        },
                    ])
                }
            )])
        );
        assert_eq!(load("a = \n", false).unwrap_err().0, 1);
        assert_eq!(load("{\n\"a\": nul\n}", true).unwrap_err().0, 2);
        // Bad escapes of multi-byte characters are errors, not panics.
        assert!(load("{\"a\": \"\\é\"}", true).is_err());
        assert!(load("{\"a\": \"\\uéé\"}", true).is_err());
    }
}
