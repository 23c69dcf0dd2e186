//! The format of a stored state (rollout or release). Every state Sluice
//! writes says which format it is in, so a state written by a newer Sluice
//! is recognised as such — reported by id and kept, never misread or
//! overwritten — and one written by an older Sluice is migrated as it is
//! read (serde defaults and the steps below).
//!
//! Formats:
//! - 1: before states carried a format (no `format` field); read as 2.
//! - 2: the `format` field.
//!
//! A change to the stored state adds a format here, its migration on read,
//! and a fixture `tests/fixtures/states/format-N/` of stores written in the
//! new format; the conformance tests load every fixture, so each earlier
//! format keeps loading.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format this Sluice writes.
pub const CURRENT: u32 = 2;

/// A state's format marker: written as [`CURRENT`]; read, it refuses a
/// format this Sluice does not know. Absent means format 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateFormat;

impl Serialize for StateFormat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(CURRENT)
    }
}

impl<'de> Deserialize<'de> for StateFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u32::deserialize(deserializer)? {
            1..=CURRENT => Ok(StateFormat),
            other => Err(serde::de::Error::custom(format!(
                "state format {other} was written by another version of Sluice; this one reads formats 1 to {CURRENT}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct State {
        #[serde(default)]
        format: StateFormat,
        n: u32,
    }

    #[test]
    fn written_as_the_current_format_and_read_from_every_known_one() {
        let written = serde_json::to_value(State { format: StateFormat, n: 1 }).expect("written");
        assert_eq!(written["format"], CURRENT);
        for old in [r#"{"n": 1}"#, r#"{"format": 1, "n": 1}"#, &format!(r#"{{"format": {CURRENT}, "n": 1}}"#)] {
            assert!(serde_json::from_str::<State>(old).is_ok(), "{old}");
        }
    }

    #[test]
    fn a_newer_or_nonsense_format_is_refused_saying_which() {
        let newer = CURRENT + 1;
        let e = serde_json::from_str::<State>(&format!(r#"{{"format": {newer}, "n": 1}}"#)).expect_err("refused");
        assert!(e.to_string().contains(&format!("state format {newer}")), "{e}");
        assert!(serde_json::from_str::<State>(r#"{"format": 0, "n": 1}"#).is_err());
        assert!(serde_json::from_str::<State>(r#"{"format": "2", "n": 1}"#).is_err());
    }
}
