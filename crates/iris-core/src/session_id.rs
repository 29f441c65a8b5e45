//! A conversation's id as it enters Iris (a parameter of any operation, a
//! path, a job): a UUID in any of its usual spellings — hyphenated,
//! without hyphens, in braces, `urn:uuid:`, upper or lower case — read as
//! its one canonical form (lower case, hyphenated), so one UUID is one
//! conversation whatever spelling a caller used. Stored, compared and
//! answered in that form only.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// The spellings `uuid` reads, for the parameters' JSON Schema (so a bad
/// one is a `VALIDATION_ERROR` naming the field, on every transport).
pub const PATTERN: &str = "^(urn:uuid:)?\\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\\}?$";

/// A canonical session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// `text` in its canonical form, if it spells a UUID.
    pub fn parse(text: &str) -> Option<SessionId> {
        uuid::Uuid::parse_str(text.trim())
            .ok()
            .map(|u| SessionId(u.hyphenated().to_string()))
    }

    /// A fresh one (a random UUID).
    pub fn fresh() -> SessionId {
        SessionId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SessionId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        SessionId::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "sessionId: `{}` is not a UUID",
                text.chars().take(64).collect::<String>()
            ))
        })
    }
}

impl schemars::JsonSchema for SessionId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SessionId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "description": "A UUID: hyphenated, without hyphens, in braces or as urn:uuid:, any case; read and answered in lower case, hyphenated."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_uuid_is_one_id() {
        let canonical = "6f1c3e52-9d1a-4c3b-8e2f-0a1b2c3d4e5f";
        for spelling in [
            canonical,
            "6F1C3E52-9D1A-4C3B-8E2F-0A1B2C3D4E5F",
            "6f1c3e529d1a4c3b8e2f0a1b2c3d4e5f",
            "{6f1c3e52-9d1a-4c3b-8e2f-0a1b2c3d4e5f}",
            "urn:uuid:6f1c3e52-9d1a-4c3b-8e2f-0a1b2c3d4e5f",
        ] {
            assert_eq!(
                SessionId::parse(spelling).unwrap().as_str(),
                canonical,
                "{spelling}"
            );
            let re = regex_like(spelling);
            assert!(re, "the schema's pattern takes {spelling}");
        }
        assert!(SessionId::parse("not-a-uuid").is_none());
        assert!(serde_json::from_str::<SessionId>("\"x\"").is_err());
    }

    /// The JSON Schema pattern, checked by the validator the registry uses.
    fn regex_like(text: &str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": PATTERN});
        jsonschema::validator_for(&schema)
            .unwrap()
            .is_valid(&serde_json::json!(text))
    }
}
