//! Environment variables and how the layers of an environment combine.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One validated environment variable: the key is non-empty and holds no `=` or NUL,
/// the value holds no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    key: String,
    value: String,
}

impl EnvironmentVariable {
    /// Validates and builds a variable.
    ///
    /// ```
    /// use runner_core::EnvironmentVariable;
    /// let v = EnvironmentVariable::new("GREETING", "a=b c").unwrap();
    /// assert_eq!(v.to_string(), "GREETING=a=b c");
    /// assert!(EnvironmentVariable::new("A=B", "x").is_err());
    /// ```
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let value = value.into();
        let reason = if key.is_empty() {
            Some("the key is empty")
        } else if key.contains('=') {
            Some("the key contains `=`")
        } else if key.contains('\0') {
            Some("the key contains a NUL byte")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::InvalidEnvKey { key, reason });
        }
        if value.contains('\0') {
            return Err(Error::InvalidEnvValue {
                key,
                reason: "the value contains a NUL byte",
            });
        }
        Ok(EnvironmentVariable { key, value })
    }

    /// Parses `KEY=VALUE` (the value may itself contain `=`).
    pub fn parse(assignment: &str) -> Result<Self> {
        match assignment.split_once('=') {
            Some((k, v)) => EnvironmentVariable::new(k, v),
            None => Err(Error::InvalidEnvKey {
                key: assignment.to_string(),
                reason: "expected KEY=VALUE",
            }),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for EnvironmentVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Where an [`EnvEdit::Join`] puts the new value relative to the existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPosition {
    /// `old + sep + new`
    Append,
    /// `new + sep + old`
    Prepend,
}

/// One change to an environment, applied in order over the layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEdit {
    /// Set (or replace) a variable.
    Set(EnvironmentVariable),
    /// Join a value onto the existing one with a separator (or set it when absent).
    Join {
        /// The variable and the value to add.
        var: EnvironmentVariable,
        /// The separator, e.g. `:` for `PATH`.
        sep: String,
        /// Append or prepend.
        position: JoinPosition,
    },
}

/// The layered environment of a process: a base (the host's environment, or a
/// container's), the environment's variables, then the process's own edits.
///
/// Every backend builds its process environment with this type so layering and
/// append rules are identical everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvLayers {
    edits: Vec<EnvEdit>,
}

impl EnvLayers {
    /// An empty set of edits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds variables that replace whatever is below them.
    pub fn set_all(&mut self, vars: impl IntoIterator<Item = EnvironmentVariable>) {
        self.edits.extend(vars.into_iter().map(EnvEdit::Set));
    }

    /// Adds a join edit (see [`EnvEdit::Join`]).
    pub fn join(&mut self, var: EnvironmentVariable, sep: &str, position: JoinPosition) {
        self.edits.push(EnvEdit::Join {
            var,
            sep: sep.to_string(),
            position,
        });
    }

    /// Appends the edits of `other` after these (other wins).
    pub fn extend(&mut self, other: &EnvLayers) {
        self.edits.extend(other.edits.iter().cloned());
    }

    /// The edits in order.
    pub fn edits(&self) -> &[EnvEdit] {
        &self.edits
    }

    /// Applies the edits over `base` and returns the resulting variables, sorted.
    pub fn apply<I, K, V>(&self, base: I) -> BTreeMap<String, String>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut env: BTreeMap<String, String> = base
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.apply_to(&mut env);
        env
    }

    /// Applies the edits to an OS environment in place; variables the edits do not
    /// name keep their bytes, UTF-8 or not.
    pub fn apply_to_os(&self, env: &mut OsEnv) {
        for edit in &self.edits {
            match edit {
                EnvEdit::Set(v) => {
                    env.insert(v.key.clone().into(), v.value.clone().into());
                }
                EnvEdit::Join { var, sep, position } => {
                    let value = OsStr::new(&var.value);
                    let joined = match env.get(OsStr::new(&var.key)) {
                        Some(old) if !old.is_empty() => {
                            let (first, second) = match position {
                                JoinPosition::Append => (old.as_os_str(), value),
                                JoinPosition::Prepend => (value, old.as_os_str()),
                            };
                            let mut joined = first.to_os_string();
                            joined.push(sep);
                            joined.push(second);
                            joined
                        }
                        _ => value.to_os_string(),
                    };
                    env.insert(var.key.clone().into(), joined);
                }
            }
        }
    }

    /// Applies the edits to an existing map in place.
    pub fn apply_to(&self, env: &mut BTreeMap<String, String>) {
        for edit in &self.edits {
            match edit {
                EnvEdit::Set(v) => {
                    env.insert(v.key.clone(), v.value.clone());
                }
                EnvEdit::Join { var, sep, position } => {
                    let joined = match env.get(&var.key) {
                        Some(old) if !old.is_empty() => match position {
                            JoinPosition::Append => format!("{old}{sep}{}", var.value),
                            JoinPosition::Prepend => format!("{}{sep}{old}", var.value),
                        },
                        _ => var.value.clone(),
                    };
                    env.insert(var.key.clone(), joined);
                }
            }
        }
    }
}

/// A process's environment as the operating system holds it: names and values are
/// any bytes but NUL (and `=` in names), UTF-8 or not.
pub type OsEnv = BTreeMap<OsString, OsString>;

/// The host process's whole environment, non-UTF-8 names and values included: what
/// processes started on the host inherit.
pub fn host_env_os() -> OsEnv {
    std::env::vars_os().collect()
}

/// The host process's environment as UTF-8 pairs (non-UTF-8 entries are skipped): for
/// places that need text, such as a container's configuration. Processes on the
/// host get [`host_env_os`].
pub fn host_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(k: &str, v: &str) -> EnvironmentVariable {
        EnvironmentVariable::new(k, v).unwrap()
    }

    #[test]
    fn rejects_bad_keys_and_values() {
        for (key, reason) in [
            ("", "the key is empty"),
            ("A=B", "the key contains `=`"),
            ("A\0", "the key contains a NUL byte"),
        ] {
            match EnvironmentVariable::new(key, "v") {
                Err(Error::InvalidEnvKey { reason: r, .. }) => assert_eq!(r, reason),
                other => panic!("{key:?}: {other:?}"),
            }
        }
        assert!(matches!(
            EnvironmentVariable::new("K", "a\0b"),
            Err(Error::InvalidEnvValue { .. })
        ));
        let v = EnvironmentVariable::new("K", "multi\nline=with equals").unwrap();
        assert_eq!(v.value(), "multi\nline=with equals");
        assert_eq!(EnvironmentVariable::parse("A=b=c").unwrap().value(), "b=c");
        assert!(EnvironmentVariable::parse("nokey").is_err());
    }

    #[test]
    fn layers_apply_in_order() {
        let mut env_level = EnvLayers::new();
        env_level.set_all([var("A", "env"), var("B", "env")]);
        let mut proc_level = EnvLayers::new();
        proc_level.set_all([var("B", "proc")]);
        proc_level.join(var("PATH", "/extra"), ":", JoinPosition::Append);
        proc_level.join(var("PATH", "/first"), ":", JoinPosition::Prepend);
        proc_level.join(var("NEW", "x"), ":", JoinPosition::Append);
        let mut all = env_level.clone();
        all.extend(&proc_level);
        let out = all.apply([("A", "host"), ("C", "host"), ("PATH", "/bin")]);
        assert_eq!(out["A"], "env");
        assert_eq!(out["B"], "proc");
        assert_eq!(out["C"], "host");
        assert_eq!(out["PATH"], "/first:/bin:/extra");
        assert_eq!(out["NEW"], "x");
    }
}
