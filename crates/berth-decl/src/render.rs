//! A plan as people read it: one block per object with its action's symbol and real effect, a
//! line per field `before → after`, and the summary.

use crate::fields;
use crate::model::Kind;
use crate::plan::{Action, Change, Plan};

/// A value as the file writes it: booleans true/false, the rest quoted.
fn show(kind: Kind, field: &str, v: Option<&str>) -> String {
    match v {
        None => "(unset)".into(),
        Some(v) if fields::is_boolean(kind, field) => (v == "1").to_string(),
        Some(v) => format!("{v:?}"),
    }
}

/// The action's symbol and what it does, in words.
fn action_text(a: &Action) -> (&'static str, String) {
    match a {
        Action::Create => ("+", "create".to_owned()),
        Action::Update => ("~", "update in place".to_owned()),
        Action::UpdateRestart { restart } => (
            "~!",
            format!(
                "update; takes effect at the next restart ({} not hotpluggable)",
                restart.join(", ")
            ),
        ),
        Action::Move { to } => (">>", format!("move to node {to}")),
        Action::Replace { because } => ("-/+", format!("replace, forced by {because}")),
        Action::Delete => ("-", "delete".to_owned()),
        Action::Impossible { reason } => ("✗", format!("impossible: {reason}")),
    }
}

/// One change in one line, for reports that list a change per line (the agent's drift in its
/// heartbeat): `update in place: cores 2 → 4; memory 2048 → 4096`. Secrets never show.
pub fn one_line(c: &Change) -> String {
    let (_, what) = action_text(&c.action);
    let fields: Vec<String> = c
        .fields
        .iter()
        .map(|f| {
            let before = show(c.kind, &f.field, f.before.as_deref());
            let after = show(c.kind, &f.field, f.after.as_deref());
            match c.action {
                Action::Create => format!("{} = {after}", f.field),
                _ => format!("{} {before} → {after}", f.field),
            }
        })
        .collect();
    if c.action == Action::Delete {
        return what;
    }
    if fields.is_empty() {
        what
    } else {
        format!("{what}: {}", fields.join("; "))
    }
}

pub fn human(plan: &Plan) -> String {
    let mut out = Vec::new();
    for c in &plan.changes {
        let (sym, what) = action_text(&c.action);
        let at = if c.line > 0 {
            format!("  (line {})", c.line)
        } else {
            String::new()
        };
        out.push(format!("{sym} {}  {what}{at}", c.addr));
        for f in &c.fields {
            let before = show(c.kind, &f.field, f.before.as_deref());
            let after = show(c.kind, &f.field, f.after.as_deref());
            let line = match (&c.action, &f.before, &f.after) {
                (Action::Create, None, Some(_)) => format!("    {} = {after}", f.field),
                (Action::Delete, Some(_), _) => format!("    {} = {before}", f.field),
                _ => format!("    {}: {before} → {after}", f.field),
            };
            out.push(line);
        }
        for (field, reference) in &c.secrets {
            if matches!(c.action, Action::Create | Action::Replace { .. }) {
                out.push(format!("    {field} = (secret from {reference})"));
            }
        }
    }
    if !out.is_empty() {
        out.push(String::new());
    }
    out.push(if plan.is_empty() {
        format!(
            "No changes: the cluster is as the file says ({} objects).",
            plan.unchanged
        )
    } else {
        plan.summary()
    });
    if !plan.adopt.is_empty() {
        const SHOWN: usize = 10;
        let mut names = plan.adopt.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if plan.adopt.len() > SHOWN {
            names.push_str(&format!(" and {} more", plan.adopt.len() - SHOWN));
        }
        out.push(format!(
            "Adopts {} object(s) already on the cluster, managed from this file once applied: {names}",
            plan.adopt.len()
        ));
        let changed: Vec<&str> = plan.adopted_changes().map(|c| c.addr.as_str()).collect();
        if !changed.is_empty() {
            out.push(format!(
                "The plan changes {} of them ({}): `berth apply` needs --adopt to take them over.",
                changed.len(),
                changed.join(", ")
            ));
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::FieldChange;

    fn change(action: Action, fields: &[(&str, Option<&str>, Option<&str>)]) -> Change {
        Change {
            addr: "pool.ops".into(),
            kind: Kind::Pool,
            action,
            fields: fields
                .iter()
                .map(|(f, b, a)| FieldChange {
                    field: f.to_string(),
                    before: b.map(String::from),
                    after: a.map(String::from),
                })
                .collect(),
            after: BTreeMap::new(),
            before: None,
            secrets: BTreeMap::new(),
            line: 3,
        }
    }

    #[test]
    fn one_line_says_the_action_and_each_field() {
        let c = change(Action::Update, &[("comment", Some("old"), Some("new"))]);
        assert_eq!(one_line(&c), "update in place: comment \"old\" → \"new\"");
        let c = change(Action::Create, &[("comment", None, Some("ops"))]);
        assert_eq!(one_line(&c), "create: comment = \"ops\"");
        let c = change(Action::Delete, &[("comment", Some("ops"), None)]);
        assert_eq!(one_line(&c), "delete");
        let c = change(
            Action::Impossible {
                reason: "a disk cannot shrink".into(),
            },
            &[],
        );
        assert_eq!(one_line(&c), "impossible: a disk cannot shrink");
    }
}
