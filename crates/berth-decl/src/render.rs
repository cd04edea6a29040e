//! A plan as people read it: one block per object with its action's symbol and real effect, a
//! line per field `before → after`, and the summary.

use crate::fields;
use crate::model::Kind;
use crate::plan::{Action, Plan};

/// A value as the file writes it: booleans true/false, the rest quoted.
fn show(kind: Kind, field: &str, v: Option<&str>) -> String {
    match v {
        None => "(unset)".into(),
        Some(v) if fields::is_boolean(kind, field) => (v == "1").to_string(),
        Some(v) => format!("{v:?}"),
    }
}

pub fn human(plan: &Plan) -> String {
    let mut out = Vec::new();
    for c in &plan.changes {
        let (sym, what) = match &c.action {
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
        };
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
    out.join("\n")
}
