//! Didomi's consent status as it travels in webhook deliveries, users and
//! consent events: `{"purposes": [...], "channels": [...]}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consents {
    #[serde(default, deserialize_with = "null_as_default")]
    pub purposes: Vec<PurposeChoice>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub channels: Vec<ChannelChoice>,
}

/// A purpose and, optionally, the preferences collected under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeChoice {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub values: BTreeMap<String, PreferenceChoice>,
}

/// The values selected for one preference: value ids, comma-separated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceChoice {
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelChoice {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl Consents {
    pub fn purpose(&self, id: &str) -> Option<&PurposeChoice> {
        self.purposes.iter().find(|p| p.id == id)
    }

    pub fn channel(&self, id: &str) -> Option<&ChannelChoice> {
        self.channels.iter().find(|c| c.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.purposes.is_empty() && self.channels.is_empty()
    }
}

impl PreferenceChoice {
    /// The selected value ids, trimmed, empty entries dropped.
    pub(crate) fn selected(&self) -> impl Iterator<Item = &str> {
        self.value
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

/// Didomi sends `null` where an empty list or object is meant.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_didomi_consents_with_nulls_and_unknown_fields() {
        let consents: Consents = serde_json::from_value(serde_json::json!({
            "purposes": [
                {"id": "newsletter", "enabled": true, "metadata": {},
                 "values": {"topics": {"value": "sports, news,"}}},
                {"id": "profiling", "enabled": null, "values": null}
            ],
            "channels": null
        }))
        .unwrap();
        let newsletter = consents.purpose("newsletter").unwrap();
        assert_eq!(newsletter.enabled, Some(true));
        let topics: Vec<_> = newsletter.values["topics"].selected().collect();
        assert_eq!(topics, ["sports", "news"]);
        assert_eq!(consents.purpose("profiling").unwrap().enabled, None);
        assert!(consents.channels.is_empty());
    }
}
