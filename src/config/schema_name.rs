//! `database.schema`: the PostgreSQL schema every object of the worker lives in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A schema name the worker may create and own: a plain lower-case identifier (so it never
/// needs quoting), and not a schema that belongs to PostgreSQL or to the application
/// (`public`, `pg_*`, `information_schema`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct SchemaName(String);

impl SchemaName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SchemaName {
    fn default() -> Self {
        SchemaName("usage".into())
    }
}

impl TryFrom<String> for SchemaName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let mut chars = name.chars();
        let plain = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.len() <= 63;
        if !plain {
            return Err(format!(
                "`{name}` is not a plain schema name; expected lower-case letters, digits and \
                 `_`, starting with a letter or `_`, at most 63 characters (e.g. \"usage\")"
            ));
        }
        if name == "public" || name == "information_schema" || name.starts_with("pg_") {
            return Err(format!(
                "`{name}` belongs to PostgreSQL or to the application; choose a schema of the \
                 worker's own, e.g. \"usage\""
            ));
        }
        Ok(SchemaName(name))
    }
}

impl From<SchemaName> for String {
    fn from(name: SchemaName) -> String {
        name.0
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
