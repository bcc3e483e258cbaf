//! Durations in the configuration: `30s`, `15m`, `2h`, `7d`, `1h 30m`, or a number of seconds.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `30s`, `15m`, `2h`, `7d` (any form `humantime` reads) or a number of
/// seconds. Shown in the largest whole unit, as the example configuration writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        // A bare number has always meant seconds; humantime wants a unit.
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<u64>()
                .map(|s| HumanDuration(Duration::from_secs(s)))
                .map_err(|e| format!("`{text}` is not a duration ({e}); expected e.g. 30s or 7d"));
        }
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|e| {
                format!("`{text}` is not a duration ({e}); expected e.g. 30s, 15m, 2h or 7d")
            })
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            s if s != 0 && s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s != 0 && s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
            s if s != 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}
