//! Typed parsing of JSON from outside, naming the field at fault: one place
//! that turns serde's errors into `field: message`, used by every edge.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// What kind of JSON value this is, in words, for "expected …, found …" errors.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A field of the wrong type, value or presence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Where, as `a.b[0].c` (`body` for the whole document).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Deserialises `value` into `T`; a failure names its field, below `prefix`
/// when the value is part of a larger document. A missing field is named
/// itself, not its parent.
pub fn typed<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path == "." {
            path.clear();
        }
        if let Some(missing) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            path = join(&path, missing);
        }
        let field = match (prefix.is_empty(), path.is_empty()) {
            (true, true) => "body".to_string(),
            (false, true) => prefix.to_string(),
            (true, false) => path,
            (false, false) => join(prefix, &path),
        };
        FieldError { field, message }
    })
}

fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.starts_with('[')) {
        (true, _) => child.to_string(),
        (false, true) => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
        list: Vec<u8>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    #[test]
    fn names_the_field_at_fault() {
        let e = typed::<Outer>(&json!({"inner": {"name": 5}, "list": []}), "").expect_err("type");
        assert_eq!(e.field, "inner.name");
        let e = typed::<Outer>(&json!({"inner": {}, "list": []}), "data").expect_err("missing");
        assert_eq!(e.field, "data.inner.name");
        let e = typed::<Outer>(&json!({"inner": {"name": "x"}, "list": ["a"]}), "").expect_err("item");
        assert_eq!(e.field, "list[0]");
        let e = typed::<Outer>(&json!(3), "").expect_err("whole");
        assert_eq!(e.field, "body");
    }
}
