//! Configs as TOML files with command-line overrides in dotted form, like Hydra:
//! `volley-learner --config configs/ppo_procgen.toml ppo.lr=3e-4 env.id=procgen:bigfish`.
//!
//! An override's value is read as a TOML value (`3e-4`, `true`, `[64, 64]`, `"x"`),
//! or as a plain string when it is not one (`procgen:bigfish?num_levels=200`). A key
//! the config does not have is an error that names it, whether it came from the file
//! or from the command line.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

/// A config that cannot be read or does not fit its schema.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: String, message: String },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: String, message: String },
    #[error("bad override '{0}': expected key.path=value, e.g. ppo.lr=3e-4")]
    BadOverride(String),
    #[error("override '{key}': '{prefix}' is a value, not a section")]
    NotASection { key: String, prefix: String },
    #[error("unknown config key '{0}'")]
    UnknownKey(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Reads a TOML file into a table.
pub fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    text.parse::<Table>().map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Applies one `a.b.c=value` override, creating missing sections.
pub fn apply_override(table: &mut Table, arg: &str) -> Result<(), ConfigError> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| ConfigError::BadOverride(arg.to_string()))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::BadOverride(arg.to_string()));
    }
    let value = parse_value(raw.trim());
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut node = table;
    for (i, p) in parts.iter().enumerate() {
        let entry = node
            .entry((*p).to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        node = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(ConfigError::NotASection {
                    key: key.to_string(),
                    prefix: parts[..=i].join("."),
                })
            }
        };
    }
    node.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Deserializes `table` into `T`, rejecting keys `T` does not have, by their full
/// dotted path.
pub fn from_table<T: DeserializeOwned + Serialize + Default>(
    table: Table,
) -> Result<T, ConfigError> {
    match T::deserialize(Value::Table(table.clone())) {
        Ok(cfg) => {
            // Keys a struct without deny_unknown_fields ignored are absent from the
            // round trip.
            let back = Value::try_from(&cfg)
                .map_err(|e| ConfigError::Invalid(format!("cannot re-encode config: {e}")))?;
            if let Some(k) = Value::Table(table).first_missing_key_in(&back, "") {
                return Err(ConfigError::UnknownKey(k));
            }
            Ok(cfg)
        }
        Err(e) => {
            // Name the key when it is one the defaults do not have either.
            if let Ok(defaults) = Value::try_from(T::default()) {
                if let Some(k) = Value::Table(table).first_missing_key_in(&defaults, "") {
                    if e.to_string().contains("unknown field") {
                        return Err(ConfigError::UnknownKey(k));
                    }
                }
            }
            Err(ConfigError::Invalid(e.to_string().trim().to_string()))
        }
    }
}

/// Loads `path` (or the defaults), applies the overrides and deserializes.
pub fn load<T: DeserializeOwned + Serialize + Default>(
    path: Option<&Path>,
    overrides: &[String],
) -> Result<T, ConfigError> {
    let mut table = match path {
        Some(p) => read_file(p)?,
        None => Table::new(),
    };
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    from_table(table)
}

trait MissingKey {
    fn first_missing_key_in(&self, other: &Value, prefix: &str) -> Option<String>;
}

impl MissingKey for Value {
    /// The first key (dotted path) of `self` that `other` lacks, walking tables only.
    fn first_missing_key_in(&self, other: &Value, prefix: &str) -> Option<String> {
        let (Value::Table(mine), Value::Table(theirs)) = (self, other) else {
            return None;
        };
        for (k, v) in mine {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match theirs.get(k) {
                None => return Some(path),
                Some(o) => {
                    if let Some(p) = v.first_missing_key_in(o, &path) {
                        return Some(p);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        lr: f64,
        hidden: Vec<usize>,
        target_kl: Option<f64>,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Outer {
        id: String,
        ppo: Inner,
    }

    #[test]
    fn overrides_parse_values_and_strings() {
        let mut t = "id = \"a\"\n[ppo]\nlr = 1.0\n".parse::<Table>().unwrap();
        apply_override(&mut t, "ppo.lr=3e-4").unwrap();
        apply_override(&mut t, "ppo.hidden=[64, 64]").unwrap();
        apply_override(&mut t, "ppo.target_kl=0.02").unwrap();
        apply_override(&mut t, "id=procgen:bigfish?num_levels=200").unwrap();
        let c: Outer = from_table(t).unwrap();
        assert_eq!(c.id, "procgen:bigfish?num_levels=200");
        assert_eq!(c.ppo.lr, 3e-4);
        assert_eq!(c.ppo.hidden, vec![64, 64]);
        assert_eq!(c.ppo.target_kl, Some(0.02));
    }

    #[test]
    fn unknown_keys_are_named_by_their_path() {
        let mut t = Table::new();
        apply_override(&mut t, "ppo.lrr=1").unwrap();
        let e = from_table::<Outer>(t).unwrap_err().to_string();
        assert_eq!(e, "unknown config key 'ppo.lrr'");
        let mut t = Table::new();
        apply_override(&mut t, "nope=1").unwrap();
        let e = from_table::<Outer>(t).unwrap_err().to_string();
        assert_eq!(e, "unknown config key 'nope'");
    }

    #[test]
    fn malformed_overrides_and_wrong_types_are_errors() {
        let mut t = Table::new();
        assert!(apply_override(&mut t, "ppo.lr").is_err());
        assert!(apply_override(&mut t, "=3").is_err());
        assert!(apply_override(&mut t, "a..b=3").is_err());
        apply_override(&mut t, "id=3").unwrap();
        assert!(apply_override(&mut t, "id.x=3").is_err());
        let mut t = Table::new();
        apply_override(&mut t, "ppo.lr=fast").unwrap();
        let e = from_table::<Outer>(t).unwrap_err().to_string();
        assert!(e.contains("invalid config"), "{e}");
    }
}
