//! A plan as people read it: one block per object with its action's symbol and real effect, a
//! line per field `before → after`, and the summary.

use crate::plan::{Action, Plan};

fn show(v: Option<&str>) -> String {
    match v {
        None => "(unset)".into(),
        Some(v) => format!("{v:?}"),
    }
}

pub fn human(plan: &Plan) -> String {
    let mut out = Vec::new();
    for c in &plan.changes {
        let (sym, what) = match &c.action {
            Action::Create => ("+", "create".to_owned()),
            Action::Update => ("~", "update in place".to_owned()),
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
            let line = match (&c.action, &f.before, &f.after) {
                (Action::Create, None, Some(a)) => format!("    {} = {a:?}", f.field),
                (Action::Delete, Some(b), _) => format!("    {} = {b:?}", f.field),
                _ => format!(
                    "    {}: {} → {}",
                    f.field,
                    show(f.before.as_deref()),
                    show(f.after.as_deref())
                ),
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
