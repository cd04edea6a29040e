//! `PVE::JSONSchema::check_prop` and friends: type, format, pattern, length, range and enum checks,
//! and property-string parsing (`parse_property_string`), with PVE's exact error texts.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use super::formats;
use super::{Errors, Format, ListKind, NOT_DEFINED, Prop, PsFormat, check_requires};

/// A value being checked: a plain string, or the array PVE makes of a form value for `type => 'array'`.
enum Inst<'a> {
    Str(&'a str),
    List(Vec<&'a str>),
}

fn perl_truthy_str(s: &str) -> bool {
    !s.is_empty() && s != "0"
}

/// `check_prop`, for values that arrive as strings.
pub(super) fn check_prop(
    value: Option<&str>,
    prop: &Prop,
    path: &str,
    errors: &mut Errors,
    instance_type: Option<&str>,
) {
    let mut optional_for_type = false;
    if !prop.one_of.is_empty() {
        if prop.type_property.is_some() {
            optional_for_type = true;
            if let Some(it) = instance_type {
                for alt in &prop.one_of {
                    if alt.instance_types.as_ref().is_some_and(|t| t.iter().any(|t| t == it)) {
                        optional_for_type = alt.optional;
                        check_prop(value, alt, path, errors, None);
                    }
                }
            }
        } else if let Some(v) = value {
            let mut first = None;
            let valid = prop.one_of.iter().enumerate().any(|(i, alt)| {
                let mut inner = Errors::default();
                check_prop(Some(v), alt, &format!("{path}.oneOf[{i}]"), &mut inner, None);
                let ok = inner.0.is_empty();
                if !ok && first.is_none() {
                    first = Some(inner);
                }
                ok
            });
            if !valid {
                for (k, m) in first.map(|e| e.0).unwrap_or_default() {
                    errors.add(&k, &m);
                }
            }
        }
    }
    let Some(raw) = value else {
        if prop.types.iter().any(|t| t == "null") {
            return;
        }
        if !prop.optional && prop.alias.is_none() && !optional_for_type {
            errors.add(path, "property is missing and it is not optional");
        }
        return;
    };
    let is_array = prop.types.iter().any(|t| t == "array");
    let inst = if is_array && perl_truthy_str(raw) {
        Inst::List(vec![raw])
    } else {
        Inst::Str(raw)
    };
    if !check_type(path, &prop.types, &inst, errors) {
        return;
    }
    let v = match inst {
        Inst::List(elements) => {
            if let Some(items) = &prop.items {
                for (i, el) in elements.into_iter().enumerate() {
                    check_prop(Some(el), items, &format!("{path}[{i}]"), errors, None);
                }
            }
            return;
        }
        Inst::Str(v) => v,
    };
    if let Some(format) = &prop.format
        && let Err(e) = check_format(format, v, path)
    {
        errors.add(path, &format!("invalid format - {e}"));
        return;
    }
    if let Some(pattern) = &prop.pattern
        && pattern.regex().is_some_and(|re| !re.is_match(v))
    {
        errors.add(path, "value does not match the regex pattern");
        return;
    }
    let len = v.chars().count() as u64;
    if let Some(max) = prop.max_length
        && len > max
    {
        errors.add(path, &format!("value may only be {max} characters long"));
        return;
    }
    if let Some(min) = prop.min_length
        && len < min
    {
        errors.add(path, &format!("value must be at least {min} characters long"));
        return;
    }
    if let Some(n) = perl_number(v) {
        if let Some(max) = &prop.maximum
            && n > max.value
        {
            errors.add(path, &format!("value must have a maximum value of {}", max.text));
            return;
        }
        if let Some(min) = &prop.minimum
            && n < min.value
        {
            errors.add(path, &format!("value must have a minimum value of {}", min.text));
            return;
        }
    }
    if let Some(values) = &prop.enumeration
        && !values.iter().any(|e| e == v)
    {
        errors.add(
            path,
            &format!(
                "value '{v}' does not have a value in the enumeration '{}'",
                values.join(", ")
            ),
        );
    }
}

static INTEGER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\A[+-]?\d+\n?\z").expect("integer regex"));
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[+-]?(?:\d+\.\d+|\d+\.|\.\d+|\d+)(?:[eE][+-]?\d+)?\n?\z").expect("number regex"));

/// `is_number` plus Perl's numeric value of the string.
fn perl_number(v: &str) -> Option<f64> {
    if !NUMBER.is_match(v) {
        return None;
    }
    let t = v.trim_end_matches('\n');
    let t = t.strip_prefix('+').unwrap_or(t);
    t.parse::<f64>().ok().or_else(|| format!("{t}0").parse().ok())
}

/// `check_type`; returns whether the value passed.
fn check_type(path: &str, types: &[String], inst: &Inst<'_>, errors: &mut Errors) -> bool {
    match types {
        [] => true,
        [single] => match single_type_error(single, inst) {
            None => true,
            Some(msg) => {
                errors.add(path, &msg);
                false
            }
        },
        many => {
            if many.iter().any(|t| single_type_error(t, inst).is_none()) {
                return true;
            }
            errors.add(path, &format!("type check ('{}') failed", many.join("|")));
            false
        }
    }
}

fn single_type_error(ty: &str, inst: &Inst<'_>) -> Option<String> {
    match (ty, inst) {
        ("any", _) => None,
        ("null", _) => Some("type check ('null') failed - value is not null".into()),
        ("array", Inst::List(_)) => None,
        ("array" | "object" | "coderef", _) => Some(format!("type check ('{ty}') failed")),
        (_, Inst::List(_)) => Some(format!("type check ('{ty}') failed - got ARRAY")),
        ("boolean", Inst::Str(v)) if *v != "1" && *v != "0" => {
            Some(format!("type check ('boolean') failed - got '{v}'"))
        }
        ("integer", Inst::Str(v)) if !INTEGER.is_match(v) => Some(format!("type check ('integer') failed - got '{v}'")),
        ("number", Inst::Str(v)) if !NUMBER.is_match(v) => Some(format!("type check ('number') failed - got '{v}'")),
        _ => None,
    }
}

/// `check_format`: `Err` carries the text PVE appends to `invalid format - `.
fn check_format(format: &Format, value: &str, path: &str) -> Result<(), String> {
    match format {
        Format::Unchecked => Ok(()),
        Format::PropertyString(ps) => check_property_string(ps, value, path),
        Format::Code {
            check,
            kind: ListKind::Single,
        } => check(value),
        Format::Code {
            check,
            kind: ListKind::Opt,
        } => {
            if perl_truthy_str(value) {
                check(value)
            } else {
                Ok(())
            }
        }
        Format::Code {
            check,
            kind: ListKind::List,
        } => formats::split_list(value).into_iter().try_for_each(check),
    }
}

/// `parse_property_string` followed by `check_object` on the result.
fn check_property_string(ps: &PsFormat, data: &str, path: &str) -> Result<(), String> {
    let res = parse_property_string(ps, data)?;
    let mut errors = Errors::default();
    for (key, prop) in &ps.keys {
        let sub = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        check_prop(res.get(key.as_str()).map(String::as_str), prop, &sub, &mut errors, None);
    }
    for key in res.keys() {
        match ps.keys.get(*key) {
            Some(prop) => check_requires(prop, key, path, |r| res.contains_key(r), &mut errors),
            None => errors.add(
                &if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                },
                NOT_DEFINED,
            ),
        }
    }
    if errors.0.is_empty() {
        return Ok(());
    }
    let mut msg = String::from("format error\n");
    for (k, v) in errors.0 {
        msg.push_str(&format!("{k}: {v}\n"));
    }
    Err(msg)
}

fn parse_property_string<'d>(ps: &'d PsFormat, data: &'d str) -> Result<BTreeMap<&'d str, String>, String> {
    let mut res: BTreeMap<&str, String> = BTreeMap::new();
    let mut default_used: Option<&str> = None;
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = split_key_value(part) {
            if res.contains_key(k) {
                return Err(format!("duplicate key in comma-separated list property: {k}\n"));
            }
            let mut key = k;
            let mut schema = ps.keys.get(k);
            if let Some(alias) = schema.and_then(|s| s.alias.as_deref()) {
                if let Some(key_alias) = schema.and_then(|s| s.key_alias.as_deref()) {
                    if res.contains_key(key_alias) {
                        return Err(format!("key alias '{key_alias}' is already defined\n"));
                    }
                    res.insert(key_alias, k.to_string());
                }
                key = alias;
                schema = ps.keys.get(alias);
            }
            let schema = schema.ok_or_else(|| format!("invalid key in comma-separated list property: {key}\n"))?;
            let value = if schema.types.iter().any(|t| t == "boolean") {
                parse_boolean(v).map_or_else(|| v.to_string(), str::to_string)
            } else {
                v.to_string()
            };
            res.insert(key, value);
        } else if !part.contains('=') {
            if let Some(dk) = default_used {
                return Err(format!("duplicate key in comma-separated list property: {dk}\n"));
            }
            let dk = ps
                .default_key
                .as_deref()
                .ok_or("value without key, but schema does not define a default key\n")?;
            default_used = Some(dk);
            if res.get(dk).is_some_and(|v| perl_truthy_str(v)) {
                return Err(format!("duplicate key in comma-separated list property: {dk}\n"));
            }
            res.insert(dk, part.to_string());
        } else {
            return Err("missing key in comma-separated list property\n".into());
        }
    }
    Ok(res)
}

/// `/^([^=]+)=(.+)$/` with Perl's `.` (no newline) and `$` (optional final newline).
fn split_key_value(part: &str) -> Option<(&str, &str)> {
    let (k, rest) = part.split_once('=')?;
    let v = rest.strip_suffix('\n').unwrap_or(rest);
    (!k.is_empty() && !v.is_empty() && !v.contains('\n')).then_some((k, v))
}

/// `PVE::JSONSchema::parse_boolean`.
fn parse_boolean(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some("1"),
        "0" | "off" | "no" | "false" => Some("0"),
        _ => None,
    }
}
