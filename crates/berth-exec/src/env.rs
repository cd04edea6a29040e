//! The `env` / `pass_env` settings of a backend that runs commands: checking the names,
//! assembling the child's variables from them, and a `Debug` view that shows names only.

use std::collections::BTreeMap;
use std::fmt;

use berth_core::ConfigError;

/// Checks a backend's `env` (fixed variables) and `pass_env` (names copied from Berth's own
/// environment): every name is a variable name, and no name is in both. The error's key is
/// `env.NAME` or `pass_env`.
pub fn check_env(env: &BTreeMap<String, String>, pass_env: &[String]) -> Result<(), ConfigError> {
    for name in env.keys() {
        check_var_name(&format!("env.{name}"), name)?;
    }
    for name in pass_env {
        check_var_name("pass_env", name)?;
        if env.contains_key(name) {
            return Err(ConfigError::new(
                "pass_env",
                format!("{name:?} is also set in `env`: give each variable in one place"),
            ));
        }
    }
    Ok(())
}

/// `name` is a shell variable name: letters, digits and `_`, not starting with a digit.
fn check_var_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{name:?} is not a variable name: expected letters, digits and '_', not starting with a digit"),
        ))
    }
}

/// The variables a child gets beyond the [`ExecSpec`](crate::ExecSpec) defaults: `env`, plus
/// each `pass_env` name that Berth's own environment has (its value read now). A `pass_env`
/// name Berth's environment lacks is skipped with a warning.
pub fn child_env(env: &BTreeMap<String, String>, pass_env: &[String]) -> BTreeMap<String, String> {
    let mut vars = env.clone();
    for name in pass_env {
        match std::env::var(name) {
            Ok(value) => {
                vars.insert(name.clone(), value);
            }
            Err(_) => {
                tracing::warn!(variable = %name, "pass_env names a variable Berth's environment does not have")
            }
        }
    }
    vars
}

/// `Debug` of an `env` table showing its names only: `{"API_TOKEN": "<redacted>"}`.
pub struct RedactedEnv<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedEnv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, "<redacted>"))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn bad_names_and_doubles_name_their_key() {
        check_env(&env(&[("API_TOKEN", "x"), ("_A1", "y")]), &["HOME".to_owned()]).unwrap();
        let err = check_env(&env(&[("A-B", "x")]), &[]).unwrap_err();
        assert_eq!(err.key, "env.A-B");
        assert!(err.message.contains("is not a variable name"), "{err}");
        let err = check_env(&env(&[]), &["1X".to_owned()]).unwrap_err();
        assert_eq!(err.key, "pass_env");
        let err = check_env(&env(&[("X", "1")]), &["X".to_owned()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pass_env: \"X\" is also set in `env`: give each variable in one place"
        );
        assert_eq!(check_var_name("k", "").unwrap_err().key, "k");
    }

    #[test]
    fn child_env_adds_present_pass_env_names_only() {
        let vars = child_env(
            &env(&[("FIXED", "1")]),
            &["PATH".to_owned(), "BERTH_NO_SUCH_VARIABLE_XYZ".to_owned()],
        );
        assert_eq!(vars.get("FIXED").map(String::as_str), Some("1"));
        assert_eq!(vars.get("PATH").cloned(), std::env::var("PATH").ok());
        assert!(!vars.contains_key("BERTH_NO_SUCH_VARIABLE_XYZ"));
    }

    #[test]
    fn redacted_env_matches_a_map_of_names_to_redacted() {
        let e = env(&[("API_TOKEN", "tok-secret-1"), ("B", "2")]);
        let expected: BTreeMap<_, _> = e.keys().map(|k| (k, "<redacted>")).collect();
        assert_eq!(format!("{:?}", RedactedEnv(&e)), format!("{expected:?}"));
        assert_eq!(format!("{:#?}", RedactedEnv(&e)), format!("{expected:#?}"));
        assert!(!format!("{:?}", RedactedEnv(&e)).contains("tok-secret-1"));
    }
}
