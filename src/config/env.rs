//! `os.environ/NAME` references, resolved anywhere a string is expected.

use serde_yaml_ng::Value;

const PREFIX: &str = "os.environ/";

/// A reference to a variable that is not set, with the field path that made it.
#[derive(Debug, PartialEq)]
pub struct MissingVar {
    pub path: String,
    pub var: String,
}

/// Replaces every `os.environ/NAME` string in `value` with the variable's value, using `lookup`
/// (the process environment in production). Unset variables become null and are returned.
pub fn resolve(value: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<MissingVar> {
    let mut missing = Vec::new();
    walk(value, &mut String::new(), lookup, &mut missing);
    missing
}

fn walk(value: &mut Value, path: &mut String, lookup: &dyn Fn(&str) -> Option<String>, missing: &mut Vec<MissingVar>) {
    match value {
        Value::String(s) => {
            if let Some(var) = s.strip_prefix(PREFIX) {
                let var = var.trim().to_string();
                match lookup(&var) {
                    Some(v) => *s = v,
                    None => {
                        missing.push(MissingVar { path: path.clone(), var });
                        *value = Value::Null;
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, lookup, missing);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.as_str().unwrap_or("?"));
                walk(v, path, lookup, missing);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup, missing),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_set_variables_and_reports_unset_ones_with_their_path() {
        let mut v: Value = serde_yaml_ng::from_str(
            "model_list:\n  - litellm_params:\n      api_key: os.environ/SET\n      api_base: os.environ/UNSET\n",
        )
        .unwrap();
        let missing = resolve(&mut v, &|name| (name == "SET").then(|| "secret".to_string()));
        assert_eq!(v["model_list"][0]["litellm_params"]["api_key"], Value::String("secret".into()));
        assert_eq!(v["model_list"][0]["litellm_params"]["api_base"], Value::Null);
        assert_eq!(
            missing,
            vec![MissingVar { path: "model_list[0].litellm_params.api_base".into(), var: "UNSET".into() }]
        );
    }
}
