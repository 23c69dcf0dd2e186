//! The names and numbers that come from outside — rollout ids, target
//! names, who is acting, canary weights — each parsed once where it enters
//! (HTTP API, alert webhook, queue message, custom-handler envelope, spec,
//! CLI) with one set of rules. A value of these types is known good, so
//! anything derived from it (a file name, a table key, a URL, a message id)
//! cannot leave its place: no `/`, no `..` at the start, no NUL, no
//! unicode look-alikes, nothing longer than a storage key allows.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Longest rollout id or target name: fits a DNS label, a Table Storage key
/// and a Service Bus message id with room for its suffix.
pub const NAME_MAX: usize = 63;
/// Longest actor (a user principal name or an email address fits).
pub const ACTOR_MAX: usize = 200;
/// Longest request id (idempotency key); a UUID fits with room to spare.
pub const REQUEST_ID_MAX: usize = 64;

/// Why a value from outside was refused: what it was meant to be, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    /// What the value was meant to be (`rollout id`, `actor`).
    pub what: &'static str,
    /// The rule it broke, quoting a shortened, printable form of it.
    pub message: String,
}

/// A printable, shortened form of untrusted text for error messages: at most
/// 40 characters, control characters escaped.
pub fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(40).flat_map(char::escape_debug).collect();
    if text.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// The rule for names that key storage rows and appear in URLs and file
/// names: 1–63 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit.
pub fn check_plain_name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let count = text.chars().count();
    if count > NAME_MAX {
        return Err(format!("'{}' is {count} characters; the most is {NAME_MAX}", shown(text)));
    }
    let ok_chars = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    let ok_start = text.chars().next().map(|c| c.is_ascii_alphanumeric()).unwrap_or(false);
    if !ok_chars || !ok_start {
        return Err(format!("'{}' may only use letters, digits, '-', '_' and '.', and must start with a letter or digit", shown(text)));
    }
    Ok(())
}

/// A text value from outside with one rule, checked by `$check` (which may
/// normalise it, e.g. trim). Derived: parse, serde through the rule, the
/// text by `Deref`, `Display`, and a JSON Schema whose `x-sluice-format`
/// makes the schema check apply the same rule.
macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $format:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses text by the type's rule.
            pub fn parse(text: &str) -> Result<Self, InvalidValue> {
                $check(text).map($name).map_err(|message| InvalidValue { what: $what, message })
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(text: String) -> Result<Self, InvalidValue> {
                $name::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "string", "x-sluice-format": $format})
            }
        }
    };
}

fn plain_name(text: &str) -> Result<String, String> {
    check_plain_name(text).map(|()| text.to_string())
}

/// Who may act: 1 to 200 printable characters of any script, trimmed.
fn actor_text(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let count = text.chars().count();
    if count > ACTOR_MAX {
        return Err(format!("'{}' is {count} characters; the most is {ACTOR_MAX}", shown(text)));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("'{}' contains control characters", shown(text)));
    }
    Ok(text.to_string())
}

/// An idempotency key: 1 to 64 printable ASCII characters without spaces.
fn request_id_text(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let count = text.chars().count();
    if count > REQUEST_ID_MAX {
        return Err(format!("'{}' is {count} characters; the most is {REQUEST_ID_MAX}", shown(text)));
    }
    if !text.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("'{}' may only use printable ASCII characters without spaces", shown(text)));
    }
    Ok(text.to_string())
}

text_newtype!(
    /// A rollout's id: the partition key of its state and history, its file
    /// in the local backlog, its URL segment.
    RolloutId,
    "rollout id",
    "name",
    plain_name
);

text_newtype!(
    /// A target's name: the key of the one-active-rollout rule and of alert matching.
    TargetName,
    "target name",
    "name",
    plain_name
);

/// Who is acting: a name shown to people (a person's name, an email, a
/// principal name — 1 to 200 printable characters of any script, trimmed),
/// and, when a checked token said who it is, its stable id and the groups
/// that matter. Stored as the bare name when there is no id (every state
/// written before tokens), else as `{"name", "id", "groups"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor {
    name: String,
    id: Option<String>,
    groups: Vec<String>,
}

impl Actor {
    /// Parses a name someone wrote (no id: it proves nothing).
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        actor_text(text).map(|name| Actor { name, id: None, groups: Vec::new() }).map_err(|message| InvalidValue { what: "actor", message })
    }

    /// A caller a checked token named: shown as `name`, compared by `id`.
    pub fn identified(name: &str, id: &str, groups: Vec<String>) -> Result<Self, InvalidValue> {
        let id = actor_text(id).map_err(|message| InvalidValue { what: "actor id", message })?;
        Ok(Actor { id: Some(id), groups, ..Actor::parse(name)? })
    }

    /// The name shown.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The stable id, when a token gave one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The groups the caller is in, as far as they matter here.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// The same caller: by id when both have one, else by name in any case
    /// (`PIPELINE` is `pipeline`; UPNs are case-insensitive).
    pub fn same_as(&self, other: &Actor) -> bool {
        match (&self.id, &other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.name.to_lowercase() == other.name.to_lowercase(),
        }
    }

    /// Whether an approver list entry names this caller (its id, its name
    /// in any case, or `group:<object id>` of a group it is in).
    pub fn is_named_by(&self, entry: &str) -> bool {
        crate::domain::access::names(entry, self.id(), &self.name, &self.groups)
    }
}

/// An actor as outside input names one: text only. An id comes only from a
/// checked token, never from a body or a message, so a caller cannot write
/// `{"name", "id"}` to pass for someone a token proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActorName(Actor);

impl ActorName {
    /// The actor named.
    pub fn into_actor(self) -> Actor {
        self.0
    }
}

impl From<ActorName> for String {
    fn from(name: ActorName) -> String {
        name.0.name
    }
}

impl From<Actor> for ActorName {
    /// Only its name goes out.
    fn from(actor: Actor) -> ActorName {
        ActorName(Actor { id: None, groups: Vec::new(), ..actor })
    }
}

impl TryFrom<String> for ActorName {
    type Error = InvalidValue;
    fn try_from(text: String) -> Result<Self, InvalidValue> {
        Actor::parse(&text).map(ActorName)
    }
}

impl JsonSchema for ActorName {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        Actor::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        Actor::json_schema(generator)
    }
}

/// How an actor is stored: a bare name, or a name with an id.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredActor {
    Name(String),
    Identified {
        name: String,
        id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
    },
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.id {
            None => s.serialize_str(&self.name),
            Some(id) => StoredActor::Identified { name: self.name.clone(), id: id.clone(), groups: self.groups.clone() }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StoredActor::deserialize(d)? {
            StoredActor::Name(name) => Actor::parse(&name),
            StoredActor::Identified { name, id, groups } => Actor::identified(&name, &id, groups),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl Deref for Actor {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq<&str> for Actor {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

impl JsonSchema for Actor {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Actor".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Outside input names an actor as text; an id only ever comes from a checked token.
        json_schema!({"type": "string", "x-sluice-format": "actor"})
    }
}

text_newtype!(
    /// A request's idempotency key: 1 to 64 printable ASCII characters
    /// without spaces, so it fits inside a queue message id.
    RequestId,
    "request id",
    "request-id",
    request_id_text
);

/// A duration as people write it (`500ms`, `30s`, `5m`, `1h30m`, `2d`):
/// kept as written, known in milliseconds, at most ten years.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span {
    text: String,
    ms: u64,
}

impl Span {
    /// Parses a duration.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        crate::domain::spec::parse_duration_ms(text)
            .map(|ms| Span { text: text.to_string(), ms })
            .map_err(|message| InvalidValue { what: "duration", message })
    }

    /// A whole number of milliseconds, written the way people write it (`60000` → `1m`).
    pub fn of_ms(ms: u64) -> Self {
        Span { text: crate::domain::spec::duration_text(ms), ms }
    }

    /// Milliseconds.
    pub fn ms(&self) -> u64 {
        self.ms
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for Span {
    type Error = InvalidValue;
    fn try_from(text: String) -> Result<Self, InvalidValue> {
        Span::parse(&text)
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        s.text
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonSchema for Span {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Span".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "x-sluice-format": "duration"})
    }
}

/// A canary weight: the percentage of requests sent to the canary, 0 to 100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u8")]
pub struct Weight(u8);

impl Weight {
    /// No traffic on the canary.
    pub const ZERO: Weight = Weight(0);
    /// All traffic on the canary.
    pub const FULL: Weight = Weight(100);

    /// Parses a percentage.
    pub fn new(percent: u64) -> Result<Self, InvalidValue> {
        match u8::try_from(percent) {
            Ok(p) if p <= 100 => Ok(Weight(p)),
            _ => Err(InvalidValue { what: "weight", message: format!("{percent} is over 100") }),
        }
    }

    /// The percentage.
    pub fn percent(self) -> u8 {
        self.0
    }
}

impl TryFrom<u64> for Weight {
    type Error = InvalidValue;
    fn try_from(percent: u64) -> Result<Self, InvalidValue> {
        Weight::new(percent)
    }
}

impl From<Weight> for u8 {
    fn from(w: Weight) -> u8 {
        w.0
    }
}

impl PartialEq<u8> for Weight {
    fn eq(&self, other: &u8) -> bool {
        self.0 == *other
    }
}

impl PartialOrd<u8> for Weight {
    fn partial_cmp(&self, other: &u8) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(other)
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl JsonSchema for Weight {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Weight".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 0, "maximum": 100})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inputs an attacker or a careless pipeline would try.
    fn hostile() -> Vec<String> {
        vec![
            "../../escape".into(),
            "..".into(),
            "/etc/passwd".into(),
            "a/b".into(),
            "a\\b".into(),
            "a\0b".into(),
            "✓".into(),
            format!("a{}", "界".repeat(22)),
            "x".repeat(5000),
            " padded".into(),
            "".into(),
            ".hidden".into(),
            "-flag".into(),
            "a%2F..%2Fb".into(),
            "C:\\x".into(),
        ]
    }

    #[test]
    fn hostile_names_are_refused_with_the_reason() {
        for text in hostile() {
            let e = RolloutId::parse(&text).expect_err(&text);
            assert_eq!(e.what, "rollout id");
            assert!(TargetName::parse(&text).is_err(), "{text}");
            assert!(e.message.chars().count() < 200, "the message quotes a shortened form: {}", e.message);
        }
        for good in ["orders-api", "a", "A.b_c-1", &"x".repeat(63)] {
            assert_eq!(RolloutId::parse(good).expect(good).as_str(), good);
        }
        assert!(RolloutId::parse(&"x".repeat(64)).is_err());
    }

    #[test]
    fn an_actor_without_an_id_is_stored_as_its_name_and_one_with_an_id_keeps_it() {
        let plain = Actor::parse("alice").expect("ok");
        assert_eq!(serde_json::to_value(&plain).expect("json"), serde_json::json!("alice"));
        let signed = Actor::identified("alice@contoso.com", "t/oid", vec!["g1".into()]).expect("ok");
        let json = serde_json::to_value(&signed).expect("json");
        assert_eq!(json, serde_json::json!({"name": "alice@contoso.com", "id": "t/oid", "groups": ["g1"]}));
        assert_eq!(serde_json::from_value::<Actor>(json).expect("back"), signed);
        assert_eq!(serde_json::from_value::<Actor>(serde_json::json!("bob")).expect("old states"), Actor::parse("bob").expect("ok"));
        assert!(serde_json::from_value::<Actor>(serde_json::json!({"name": "x", "id": ""})).is_err());
        // Outside input names actors by text only.
        assert!(serde_json::from_value::<ActorName>(serde_json::json!({"name": "alice", "id": "t/oid"})).is_err());
        assert_eq!(serde_json::from_value::<ActorName>(serde_json::json!("alice")).expect("text").into_actor(), plain);
    }

    #[test]
    fn the_same_actor_is_the_same_id_or_else_the_same_name_in_any_case() {
        let a = |name: &str, id: Option<&str>| match id {
            Some(id) => Actor::identified(name, id, vec![]).expect("ok"),
            None => Actor::parse(name).expect("ok"),
        };
        assert!(a("PIPELINE", None).same_as(&a("pipeline", None)));
        assert!(a("Alice", Some("t/1")).same_as(&a("alice smith", Some("t/1"))));
        assert!(!a("alice", Some("t/1")).same_as(&a("alice", Some("t/2"))), "two people with one name");
        assert!(a("alice", Some("t/1")).same_as(&a("ALICE", None)));
    }

    #[test]
    fn actors_allow_any_script_but_no_control_characters() {
        assert_eq!(Actor::parse("  José Núñez ").expect("ok").as_str(), "José Núñez");
        assert_eq!(Actor::parse("佐藤").expect("ok").as_str(), "佐藤");
        for bad in ["", "   ", "a\0b", "a\nb", &"x".repeat(201)] {
            assert!(Actor::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_ids_fit_in_a_message_id() {
        assert!(RequestId::parse("9f1c2a4e-6b7d-4c1e-8f00-0a1b2c3d4e5f").is_ok());
        for bad in ["", "has space", "✓", &"x".repeat(65)] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn weights_are_percentages() {
        assert_eq!(Weight::new(100).expect("ok"), Weight::FULL);
        assert!(Weight::new(101).is_err());
        assert!(Weight::new(u64::MAX).is_err());
        assert!(serde_json::from_str::<Weight>("140").is_err());
        assert!(serde_json::from_str::<Weight>("-1").is_err());
        assert_eq!(serde_json::from_str::<Weight>("20").expect("ok").percent(), 20);
        assert_eq!(serde_json::to_string(&Weight::new(5).expect("ok")).expect("json"), "5");
    }

    #[test]
    fn spans_keep_their_text_and_know_their_length() {
        let s = Span::parse("1h30m").expect("span");
        assert_eq!((s.as_str(), s.ms()), ("1h30m", 5_400_000));
        assert!(Span::parse("30").is_err());
        assert!(Span::parse("20000d").is_err());
        assert!(serde_json::from_str::<Span>("\"5x\"").is_err());
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"1h30m\"");
    }

    #[test]
    fn deserialising_applies_the_same_rules() {
        assert!(serde_json::from_str::<RolloutId>("\"../../escape\"").is_err());
        assert!(serde_json::from_str::<Actor>("\"\"").is_err());
        assert_eq!(serde_json::from_str::<RolloutId>("\"r-1\"").expect("ok"), "r-1");
    }

    proptest! {
        /// Whatever the text, parsing never panics, and an accepted name is a
        /// single safe path component.
        #[test]
        fn parsing_never_panics_and_accepted_names_are_safe(text in "\\PC{0,80}") {
            if let Ok(id) = RolloutId::parse(&text) {
                let path = std::path::Path::new("/base").join(format!("{id}.md"));
                prop_assert_eq!(path.parent(), Some(std::path::Path::new("/base")));
                prop_assert!(!id.starts_with('.'));
                prop_assert!(id.chars().count() <= NAME_MAX);
            }
            let _ = Actor::parse(&text);
            let _ = RequestId::parse(&text);
            let _ = shown(&text);
        }
    }
}
