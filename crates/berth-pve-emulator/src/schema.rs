//! Request validation against the official PVE API schema (`apidata.json`), reproducing
//! `PVE::RESTHandler::find_handler` (path matching) and `PVE::JSONSchema::validate` (parameters).
//!
//! Error texts are PVE's, byte for byte, including the trailing `\n` that PVE keeps on messages
//! produced by `die` (format errors): e.g. `newid` → `"invalid format - value does not look like a
//! valid VM ID\n"`, while type/range errors have none (`"type check ('integer') failed - got 'x'"`).
//! Property-string errors look like PVE's too:
//! `"invalid format - format error\nipconfig0.gw: invalid format - value does not look like a valid IPv4 address\n\n"`.
//!
//! Known simplifications: `oneOf`/`instance-types` (a few SDN/HA endpoints) are checked loosely; a
//! pattern that Rust's regex engine cannot compile is not enforced; hash-format *validators* (e.g.
//! `pve-vm-cpu-conf`'s CPU model check) are not run; values are always strings (JSON bodies must be
//! flattened by the caller, booleans as `1`/`0`). Checks live in `check`, named formats in `formats`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use percent_encoding::percent_decode_str;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

mod check;
mod formats;

use self::check::check_prop;
use self::formats::CodeFormat;

/// The loaded PVE API schema, indexed by path template and method.
pub struct Schema {
    root: PathNode,
    endpoints: usize,
}

/// Why a request failed validation.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidationError {
    /// No endpoint in the schema matches the path (PVE answers 501 "Method 'GET /x' not implemented").
    UnknownPath,
    /// The path exists but has no handler for the method (also 501 on real PVE).
    MethodNotAllowed,
    /// Parameter errors, parameter path → PVE's message (400 "Parameter verification failed.").
    Params(BTreeMap<String, String>),
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPath => f.write_str("no such API path"),
            Self::MethodNotAllowed => f.write_str("method not implemented for this API path"),
            Self::Params(errors) => {
                f.write_str("Parameter verification failed.")?;
                for (k, v) in errors {
                    write!(f, "\n{k}: {}", v.trim_end())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationError {}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Loads and indexes `apidata.json` (a top-level array of path nodes with `children`).
    pub fn load(path: &Path) -> Result<Schema, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
        let nodes = raw
            .as_array()
            .ok_or_else(|| format!("{}: top level is not an array", path.display()))?;
        let mut compiler = Compiler::default();
        let mut schema = Schema {
            root: PathNode::default(),
            endpoints: 0,
        };
        for node in nodes {
            schema
                .add_node(node, &mut compiler)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if schema.endpoints == 0 {
            return Err(format!("{}: no endpoints found", path.display()));
        }
        Ok(schema)
    }

    /// Number of (method, path) endpoints indexed.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }

    fn add_node(&mut self, node: &Value, compiler: &mut Compiler) -> Result<(), String> {
        let path = node
            .get("path")
            .and_then(Value::as_str)
            .ok_or("path node without \"path\"")?;
        if let Some(info) = node.get("info").and_then(Value::as_object) {
            let mut target = &mut self.root;
            for seg in path.split('/').filter(|s| !s.is_empty()) {
                target = match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => {
                        let name = name.split(':').next().unwrap_or(name);
                        let (existing, child) = target
                            .placeholder
                            .get_or_insert_with(|| (name.to_string(), Box::default()));
                        if existing != name {
                            // PVE's register_method refuses this too ("found changed regex match name").
                            return Err(format!("{path}: placeholder {{{name}}} conflicts with {{{existing}}}"));
                        }
                        child
                    }
                    None => target.literal.entry(seg.to_string()).or_default(),
                };
            }
            for (method, def) in info {
                let params = match def.get("parameters") {
                    Some(p) if p.is_object() => Some(compiler.params(p).map_err(|e| format!("{method} {path}: {e}"))?),
                    _ => None,
                };
                target.methods.insert(method.clone(), Endpoint { params });
                self.endpoints += 1;
            }
        }
        for child in node.get("children").and_then(Value::as_array).into_iter().flatten() {
            self.add_node(child, compiler)?;
        }
        Ok(())
    }

    /// `path` is the concrete path after /api2/json, e.g. "/nodes/pve1/qemu/100/clone".
    /// `params` are the query + body parameters (NOT path params), already percent-decoded.
    ///
    /// The path is percent-decoded here (PVE `uri_unescape`s it before matching). A key given more
    /// than once is joined with NUL, as PVE's `decode_urlencoded` does; applying "query overrides
    /// body" is the caller's job. `_dc` (the cache buster) is ignored, as in PVE.
    pub fn validate(&self, method: &str, path: &str, params: &[(String, String)]) -> Result<(), ValidationError> {
        let decoded = percent_decode_str(path).decode_utf8_lossy();
        let segs: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
        let mut uri = Vec::new();
        let node = self.root.find(&segs, &mut uri).ok_or(ValidationError::UnknownPath)?;
        let endpoint = node.methods.get(method).ok_or(ValidationError::MethodNotAllowed)?;

        let mut inst: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in params {
            inst.entry(k.clone())
                .and_modify(|old| *old = format!("{old}\0{v}"))
                .or_insert_with(|| v.clone());
        }
        inst.remove("_dc");
        for (k, v) in &inst {
            if uri.iter().any(|(name, value)| name == k && value != v) {
                let msg = "duplicate parameter (already defined in URI) with conflicting values!";
                return Err(ValidationError::Params(BTreeMap::from([(k.clone(), msg.to_string())])));
            }
        }
        for (name, value) in uri {
            inst.insert(name.to_string(), value.to_string());
        }
        let Some(schema) = &endpoint.params else { return Ok(()) };
        let mut errors = Errors::default();
        schema.check(&inst, &mut errors);
        if errors.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError::Params(errors.0))
        }
    }
}

#[derive(Default)]
struct PathNode {
    literal: HashMap<String, PathNode>,
    placeholder: Option<(String, Box<PathNode>)>,
    methods: HashMap<String, Endpoint>,
}

impl PathNode {
    /// Literal segments win; a `{placeholder}` matches any segment without whitespace (`\S+`).
    fn find<'a, 's>(&'a self, segs: &[&'s str], uri: &mut Vec<(&'a str, &'s str)>) -> Option<&'a PathNode> {
        let Some((first, rest)) = segs.split_first() else {
            return (!self.methods.is_empty()).then_some(self);
        };
        if let Some(found) = self.literal.get(*first).and_then(|child| child.find(rest, uri)) {
            return Some(found);
        }
        let (name, child) = self.placeholder.as_ref()?;
        if first.chars().any(char::is_whitespace) {
            return None;
        }
        let mark = uri.len();
        uri.push((name.as_str(), first));
        let found = child.find(rest, uri);
        if found.is_none() {
            uri.truncate(mark);
        }
        found
    }
}

struct Endpoint {
    params: Option<ParamSchema>,
}

/// Indexed-parameter ranges (`net[n]` → net0..net31), from the constants that generate them in
/// qemu-server, pve-container, pve-cluster and pve-manager. `acmedomain` and `link` use inclusive loops.
fn index_count(prefix: &str) -> Option<u32> {
    Some(match prefix {
        "net" | "ipconfig" => 32,
        "scsi" => 31,
        "virtio" | "hostpci" => 16,
        "sata" => 6,
        "ide" | "serial" => 4,
        "parallel" => 3,
        "usb" => 14,
        "numa" => 8,
        "virtiofs" => 10,
        "unused" | "mp" | "dev" => 256,
        "link" => 8,
        "acmedomain" => 6,
        _ => return None,
    })
}

struct ParamSchema {
    props: BTreeMap<String, Prop>,
    /// Indexed parameters by prefix (`net[n]` → `"net"`): the property and its slot count, if known.
    indexed: HashMap<String, (Prop, Option<u32>)>,
    /// `additionalProperties: 0`.
    strict: bool,
}

impl ParamSchema {
    fn lookup(&self, key: &str) -> Option<&Prop> {
        if let Some(p) = self.props.get(key) {
            return Some(p);
        }
        let digits = key.len() - key.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, idx) = key.split_at(key.len() - digits);
        if digits == 0 || prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        let (prop, count) = self.indexed.get(prefix)?;
        let n: u32 = idx.parse().ok()?;
        let canonical = n.to_string() == idx;
        (canonical && count.is_none_or(|c| n < c)).then_some(prop)
    }

    /// `check_object('', properties, params, additionalProperties)`.
    fn check(&self, inst: &BTreeMap<String, String>, errors: &mut Errors) {
        for (name, prop) in &self.props {
            let instance_type = prop
                .type_property
                .as_ref()
                .and_then(|tp| inst.get(tp))
                .map(String::as_str);
            check_prop(inst.get(name).map(String::as_str), prop, name, errors, instance_type);
        }
        for (key, value) in inst {
            match self.lookup(key) {
                Some(prop) => {
                    if !self.props.contains_key(key) {
                        check_prop(Some(value), prop, key, errors, None);
                    }
                    check_requires(prop, key, "", |r| inst.contains_key(r), errors);
                }
                None if self.strict => errors.add(key, NOT_DEFINED),
                None => {}
            }
        }
    }
}

const NOT_DEFINED: &str = "property is not defined in schema and the schema does not allow additional properties";

fn check_requires(prop: &Prop, key: &str, path: &str, present: impl Fn(&str) -> bool, errors: &mut Errors) {
    if let Some(req) = &prop.requires
        && !present(req)
    {
        let (target, newpath) = if path.is_empty() {
            (req.clone(), key.to_string())
        } else {
            (format!("{path}.{req}"), format!("{path}.{key}"))
        };
        errors.add(
            &target,
            &format!("missing property - '{newpath}' requires this property"),
        );
    }
}

/// PVE's error hash; a second error on the same path is joined with a literal `\n` (two characters),
/// exactly like `add_error`'s `join('\n', ...)`.
#[derive(Default)]
struct Errors(BTreeMap<String, String>);

impl Errors {
    fn add(&mut self, path: &str, msg: &str) {
        let path = if path.is_empty() { "_root" } else { path };
        self.0
            .entry(path.to_string())
            .and_modify(|old| *old = format!("{old}\\n{msg}"))
            .or_insert_with(|| msg.into());
    }
}

#[derive(Debug, Default)]
struct Prop {
    types: Vec<String>,
    optional: bool,
    alias: Option<String>,
    key_alias: Option<String>,
    default_key: bool,
    format: Option<Format>,
    pattern: Option<Arc<Pattern>>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    maximum: Option<Bound>,
    minimum: Option<Bound>,
    enumeration: Option<Vec<String>>,
    requires: Option<String>,
    items: Option<Box<Prop>>,
    one_of: Vec<Prop>,
    type_property: Option<String>,
    instance_types: Option<Vec<String>>,
}

#[derive(Debug)]
struct Bound {
    value: f64,
    text: String,
}

#[derive(Debug)]
enum Format {
    PropertyString(Arc<PsFormat>),
    Code { check: CodeFormat, kind: ListKind },
    Unchecked,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ListKind {
    Single,
    List,
    Opt,
}

/// A property-string format: sub-keys and the key that may be given without `name=`.
#[derive(Debug, Default)]
struct PsFormat {
    keys: BTreeMap<String, Prop>,
    default_key: Option<String>,
}

/// A schema `pattern`, matched like Perl's `m/^$pattern$/`. Compiled at load time; the rare
/// pattern too large to compile quickly (Unicode `\w` under `(?i)` with a
/// `{0,256}` repeat) is compiled on first use with a higher limit instead of slowing every load.
#[derive(Debug)]
struct Pattern {
    source: String,
    compiled: OnceLock<Option<Regex>>,
}

impl Pattern {
    fn new(perl: &str) -> Pattern {
        let source = format!(r"^{}\n?\z", formats::perl_to_rust(perl));
        let compiled = OnceLock::new();
        if let Ok(re) = RegexBuilder::new(&source).size_limit(1 << 20).build() {
            let _ = compiled.set(Some(re));
        }
        Pattern { source, compiled }
    }

    /// `None` when the pattern cannot be compiled at all (then PVE's check is not reproduced).
    fn regex(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| RegexBuilder::new(&self.source).size_limit(1 << 30).build().ok())
            .as_ref()
    }
}

/// Builds [`Prop`]s, sharing compiled regexes and named hash formats.
#[derive(Default)]
struct Compiler {
    regexes: HashMap<String, Arc<Pattern>>,
    named_hash: HashMap<String, Arc<PsFormat>>,
}

impl Compiler {
    fn params(&mut self, p: &Value) -> Result<ParamSchema, String> {
        let strict = p.get("additionalProperties").is_some_and(|a| !truthy(a));
        let mut props = BTreeMap::new();
        let mut indexed = HashMap::new();
        for (name, def) in p.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let prop = self.prop(def).map_err(|e| format!("parameter {name}: {e}"))?;
            match name.strip_suffix("[n]") {
                Some(prefix) => {
                    indexed.insert(prefix.to_string(), (prop, index_count(prefix)));
                }
                None => {
                    props.insert(name.clone(), prop);
                }
            }
        }
        Ok(ParamSchema { props, indexed, strict })
    }

    fn prop(&mut self, def: &Value) -> Result<Prop, String> {
        let Some(obj) = def.as_object() else {
            return Err("property definition is not an object".into());
        };
        let string = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let mut prop = Prop {
            types: match obj.get("type") {
                Some(Value::String(t)) => vec![t.clone()],
                Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                _ => Vec::new(),
            },
            optional: obj.get("optional").is_some_and(truthy),
            alias: string("alias"),
            key_alias: string("keyAlias"),
            default_key: obj.get("default_key").is_some_and(truthy),
            max_length: obj.get("maxLength").and_then(number).map(|n| n as u64),
            min_length: obj.get("minLength").and_then(number).map(|n| n as u64),
            maximum: obj.get("maximum").and_then(bound),
            minimum: obj.get("minimum").and_then(bound),
            enumeration: obj
                .get("enum")
                .and_then(Value::as_array)
                .map(|e| e.iter().map(scalar_text).collect()),
            requires: string("requires"),
            type_property: string("type-property"),
            instance_types: obj
                .get("instance-types")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()),
            ..Prop::default()
        };
        if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
            prop.pattern = Some(self.regex(p));
        }
        prop.format = match obj.get("format") {
            Some(Value::Object(_)) => Some(Format::PropertyString(Arc::new(self.ps_format(&obj["format"])?))),
            Some(Value::String(name)) => Some(self.named(name)?),
            _ => None,
        };
        if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
            prop.items = Some(Box::new(self.prop(items)?));
        }
        for alt in obj.get("oneOf").and_then(Value::as_array).into_iter().flatten() {
            prop.one_of.push(self.prop(alt)?);
        }
        Ok(prop)
    }

    fn ps_format(&mut self, def: &Value) -> Result<PsFormat, String> {
        let mut fmt = PsFormat::default();
        for (key, sub) in def.as_object().into_iter().flatten() {
            let prop = self.prop(sub).map_err(|e| format!("sub-key {key}: {e}"))?;
            if prop.default_key && fmt.default_key.is_none() {
                fmt.default_key = Some(key.clone());
            }
            fmt.keys.insert(key.clone(), prop);
        }
        Ok(fmt)
    }

    /// `check_format`'s name handling: `NAME-list` / `NAME-opt` use the validator of `NAME`.
    fn named(&mut self, full: &str) -> Result<Format, String> {
        if let Some(ps) = self.named_hash.get(full) {
            return Ok(Format::PropertyString(ps.clone()));
        }
        if let Some(json) = formats::hash_format_json(full) {
            let ps = Arc::new(self.ps_format(&json)?);
            self.named_hash.insert(full.to_string(), ps.clone());
            return Ok(Format::PropertyString(ps));
        }
        let (base, kind) = if let Some(b) = full.strip_suffix("-list") {
            (b, ListKind::List)
        } else if let Some(b) = full.strip_suffix("-opt") {
            (b, ListKind::Opt)
        } else {
            (full, ListKind::Single)
        };
        Ok(match formats::code_format(base) {
            Some(check) => Format::Code { check, kind },
            None => Format::Unchecked,
        })
    }

    fn regex(&mut self, perl: &str) -> Arc<Pattern> {
        self.regexes
            .entry(perl.to_string())
            .or_insert_with(|| Arc::new(Pattern::new(perl)))
            .clone()
    }
}

/// Perl truthiness of a JSON scalar from the dump (`optional => 1`, `"1"`, `0`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && s != "0",
        Value::Null => false,
        _ => true,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn bound(v: &Value) -> Option<Bound> {
    Some(Bound {
        value: number(v)?,
        text: scalar_text(v),
    })
}

/// How Perl stringifies a schema scalar in a message.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                f.to_string()
            }
        }
        other => other.to_string(),
    }
}
