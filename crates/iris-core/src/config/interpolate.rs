//! `${VAR}` and `${VAR:-default}` in configuration values, applied to the
//! parsed YAML tree before it is typed, so `maxProcesses: ${N:-10}` is a number.

use std::collections::HashSet;

use serde_yaml_ng::Value;

/// A variable that must be set was not.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingVar {
    pub key_path: String,
    pub var: String,
}

/// Replace variables in every string scalar of `value`. `lookup` answers a
/// variable's value. A scalar that is exactly one `${…}` is re-typed from
/// its result (a number stays a number); a scalar with text around a
/// variable stays a string. `$${` writes a literal `${`.
pub fn interpolate(
    value: &mut Value,
    key_path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), MissingVar> {
    let mut retyped = Vec::new();
    interpolate_keeping(value, key_path, lookup, &HashSet::new(), &mut retyped)
}

/// [`interpolate`], except that the whole references at the key paths in
/// `text` stay text; the key paths of those re-typed are added to
/// `retyped` (as `a.b[2].c`, the form `serde_path_to_error` prints), so a
/// caller can turn back into text one its key expects as text.
pub fn interpolate_keeping(
    value: &mut Value,
    key_path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    text: &HashSet<String>,
    retyped: &mut Vec<String>,
) -> Result<(), MissingVar> {
    match value {
        Value::String(s) if s.contains("${") => {
            let whole = is_single_reference(s);
            let replaced = substitute(s, key_path, lookup)?;
            *value = if whole && !text.contains(key_path) {
                let v = retype(replaced);
                if !v.is_string() {
                    retyped.push(key_path.to_owned());
                }
                v
            } else {
                Value::String(replaced)
            };
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_keeping(item, &format!("{key_path}[{i}]"), lookup, text, retyped)?;
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{k:?}"));
                let path = if key_path.is_empty() {
                    key
                } else {
                    format!("{key_path}.{key}")
                };
                interpolate_keeping(v, &path, lookup, text, retyped)?;
            }
        }
        Value::Tagged(t) => interpolate_keeping(&mut t.value, key_path, lookup, text, retyped)?,
        _ => {}
    }
    Ok(())
}

fn is_single_reference(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..].find('}') == Some(s.len() - 3)
}

/// Re-read a substituted value as a YAML scalar; anything not a plain
/// number, boolean or null stays a string.
fn retype(s: String) -> Value {
    if s.is_empty() {
        return Value::String(s);
    }
    match serde_yaml_ng::from_str::<Value>(&s) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
        _ => Value::String(s),
    }
}

fn substitute(
    s: &str,
    key_path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, MissingVar> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let Some(at) = rest.find('$') else {
            out.push_str(rest);
            return Ok(out);
        };
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body_start) = rest.strip_prefix("${") else {
            out.push('$');
            rest = &rest[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            out.push_str(rest);
            return Ok(out);
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        match (lookup(name), default) {
            (Some(v), _) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (_, None) => {
                return Err(MissingVar {
                    key_path: key_path.to_owned(),
                    var: name.to_owned(),
                });
            }
        }
        rest = &body_start[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<Value, MissingVar> {
        let mut v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let lookup = |name: &str| match name {
            "N" => Some("7".to_owned()),
            "NAME" => Some("web".to_owned()),
            "EMPTY" => Some(String::new()),
            "YES" => Some("true".to_owned()),
            _ => None,
        };
        interpolate(&mut v, "", &lookup)?;
        Ok(v)
    }

    #[test]
    fn whole_references_are_retyped_and_embedded_ones_stay_strings() {
        let v = run("a: ${N}\nb: ${MISSING:-10}\nc: x-${NAME}-${N}\nd: ${YES}\ne: '${NAME}'\nf: ${EMPTY:-def}\ng: $${N}\nh:\n  - ${N}").unwrap();
        assert_eq!(v["a"], Value::from(7));
        assert_eq!(v["b"], Value::from(10));
        assert_eq!(v["c"], Value::from("x-web-7"));
        assert_eq!(v["d"], Value::from(true));
        assert_eq!(v["e"], Value::from("web"));
        assert_eq!(v["f"], Value::from("def"));
        assert_eq!(v["g"], Value::from("${N}"));
        assert_eq!(v["h"][0], Value::from(7));
    }

    #[test]
    fn a_missing_required_variable_names_the_key_path() {
        let e = run("teams:\n  web:\n    path: ${NOPE}").unwrap_err();
        assert_eq!(e.key_path, "teams.web.path");
        assert_eq!(e.var, "NOPE");
    }
}
