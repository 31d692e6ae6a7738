//! The published JSON Schema of every `/metrics` body, derived from the
//! envelope's one description of its keys ([`Envelope::keys`]): each key's
//! value schema with what it means, every key required, a host's sections
//! as further keys. Built with `test-util`, where the schema test checks it
//! against `docs/envelope.schema.json`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Envelope, Key, SCHEMA_VERSION, SectionState, Sections};
use crate::runtime::stats::PerSection;
use crate::section::SectionName;

/// Every body `GET /metrics` can answer with (the published JSON Schema's root).
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(title = "orchmirror /metrics envelope")]
#[expect(dead_code, reason = "never built: schemars reads the type to describe the JSON")]
enum MetricsBody {
    /// The envelope.
    Envelope(Box<Envelope>),
    /// What the kill switch serves: `{"schema_version":1,"enabled":false}`.
    Disabled(Disabled),
}

/// The kill switch's body.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Disabled {
    /// Always [`SCHEMA_VERSION`].
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// Always false.
    #[schemars(extend("const" = false))]
    pub enabled: bool,
}

/// The JSON Schema of every `/metrics` JSON body, as checked in at `docs/envelope.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(MetricsBody)).unwrap_or_default()
}

/// The schema of the envelope, from the same keys: each key's value schema
/// with what it means, every key required, a host's sections as further keys.
impl Key<'_> {
    /// What the key's value means, and the schema of the value.
    fn describe(&self, generator: &mut schemars::SchemaGenerator) -> (&'static str, schemars::Schema) {
        match self {
            Key::SchemaVersion(_) => {
                let mut schema = generator.subschema_for::<u32>();
                schema.insert("minimum".into(), SCHEMA_VERSION.into());
                schema.insert("maximum".into(), SCHEMA_VERSION.into());
                ("Always 1 (this is `schema_version` 1).", schema)
            }
            Key::GeneratedAt(_) => (
                "When the response was assembled, to the second; every age is relative to it.",
                generator.subschema_for::<DateTime<Utc>>(),
            ),
            Key::ClkTck(_) => {
                ("The kernel's clock ticks per second (null off Linux).", generator.subschema_for::<Option<u64>>())
            }
            Key::Section(name, _) => crate::section::built_in_schema(*name, generator).unwrap_or_else(|| {
                ("A section registered by the host embedding the library.", schemars::json_schema!(true))
            }),
            Key::Sections(_) => ("The state of every section.", generator.subschema_for::<Sections>()),
        }
    }
}

impl schemars::JsonSchema for Envelope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Envelope".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let template = Envelope {
            schema_version: SCHEMA_VERSION,
            generated_at: DateTime::UNIX_EPOCH,
            clk_tck: None,
            data: PerSection::new(SectionName::BUILT_IN.iter().map(|name| (*name, None)).collect()),
            sections: PerSection::default(),
        };
        let (mut properties, mut required) = (serde_json::Map::new(), Vec::new());
        for key in template.keys() {
            let (doc, mut schema) = key.describe(generator);
            schema.insert("description".into(), doc.into());
            properties.insert(key.name().into(), schema.to_value());
            required.push(key.name());
        }
        schemars::json_schema!({
            "description": "One `/metrics` response (schema version 1), keys in contract order; a host's own \
                            sections are additional keys after `cost`.",
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": {
                "description": "A section registered by the host embedding the library (after cost, before sections)."
            }
        })
    }
}

impl schemars::JsonSchema for Sections {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sections".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let state = generator.subschema_for::<SectionState>().to_value();
        let mut properties = serde_json::Map::new();
        for name in SectionName::BUILT_IN {
            let mut schema = state.clone();
            if let Some(o) = schema.as_object_mut() {
                o.insert("description".into(), format!("`{name}`.").into());
            }
            properties.insert(name.as_str().into(), schema);
        }
        let required: Vec<&str> = SectionName::BUILT_IN.iter().map(|n| n.as_str()).collect();
        schemars::json_schema!({
            "description": "The state of every section: the four built-in ones, then a host's own.",
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": state
        })
    }
}
