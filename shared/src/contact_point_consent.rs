//! Contact Point Consent: where Customer Insights – Journeys looks before it
//! sends. One `msdynmkt_contactpointconsent4` record per address, channel,
//! purpose and topic, holding Opted In or Opted Out. This module holds the
//! `contact_point_consent` configuration section and the pure rules between
//! Didomi's choices and those records; `dataverse::consent_records` reads
//! and writes them.

use serde::Deserialize;
use serde_json::Value;

use crate::consents::{Consents, PurposeChoice};
use crate::mapping::Direction;

pub(crate) const ENTITY: &str = crate::input::CONSENT_RECORD_TABLE;
pub(crate) const ENTITY_SET: &str = "msdynmkt_contactpointconsent4s";
pub(crate) const PRIMARY_KEY: &str = "msdynmkt_contactpointconsent4id";

/// `msdynmkt_value` (534 120 000 is "not set", which the sync never writes).
pub const OPTED_IN: i64 = 534_120_001;
pub const OPTED_OUT: i64 = 534_120_002;
/// `msdynmkt_contactpointconsenttype`.
pub(crate) const TYPE_PURPOSE: i64 = 534_120_000;
pub(crate) const TYPE_TOPIC: i64 = 534_120_001;
/// `msdynmkt_source`: set by an internal process (this integration).
pub(crate) const SOURCE_INTERNAL: i64 = 534_120_000;
/// `msdynmkt_logicalreason`: consent-sync does not know the person's reason.
pub(crate) const NO_REASONS: i64 = 534_119_999;
/// `msdynmkt_enforcementmodel` and its per-channel siblings.
pub const RESTRICTIVE: i64 = 534_120_000;
pub const NON_RESTRICTIVE: i64 = 534_120_001;
pub const DISABLED: i64 = 534_120_002;

/// Where a record's address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactPoint {
    /// Didomi's `organization_user_id` is the address (an e-mail address).
    OrganizationUserId,
    /// A column of the contact(s) found by `contact_key`, e.g. `emailaddress1`.
    Column(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Text,
}

impl Channel {
    /// `msdynmkt_contactpointtype`.
    pub fn code(self) -> i64 {
        match self {
            Channel::Email => 534_120_000,
            Channel::Text => 534_120_001,
        }
    }

    /// The purpose column that holds this channel's enforcement model.
    pub(crate) fn enforcement_column(self) -> &'static str {
        match self {
            Channel::Email => "msdynmkt_enforcementmodel",
            Channel::Text => "msdynmkt_smsenforcementmodel",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Text => "text",
        }
    }
}

/// A Didomi purpose kept in a purpose record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeRecord {
    /// The Didomi purpose id.
    pub purpose: String,
    /// The `msdynmkt_purpose`, by `msdynmkt_name` or id.
    pub consent_purpose: String,
    pub direction: Direction,
}

/// A value of a Didomi preference kept in a topic record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub purpose: String,
    pub preference: String,
    pub value: String,
    /// The `msdynmkt_topic`, by `msdynmkt_name` or id.
    pub consent_topic: String,
    pub direction: Direction,
}

/// The `contact_point_consent` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPointConsent {
    pub contact_point: ContactPoint,
    pub channel: Channel,
    pub purposes: Vec<PurposeRecord>,
    pub topics: Vec<TopicRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    contact_point: Option<String>,
    channel: Option<Channel>,
    #[serde(default)]
    purposes: Vec<RawPurpose>,
    #[serde(default)]
    topics: Vec<RawTopic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    purpose: String,
    consent_purpose: String,
    #[serde(default)]
    direction: Option<Direction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    purpose: String,
    preference: String,
    value: String,
    consent_topic: String,
    #[serde(default)]
    direction: Option<Direction>,
}

/// A section that cannot be used: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionError {
    pub field: String,
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> SectionError {
    SectionError {
        field: format!("contact_point_consent{}", field.into()),
        reason: crate::input::cut_quoted(&reason.into()),
    }
}

fn non_empty(field: String, value: String) -> Result<String, SectionError> {
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(error(field, "is empty"));
    }
    Ok(value)
}

impl ContactPointConsent {
    pub fn from_value(value: Value) -> Result<Self, SectionError> {
        let raw: RawSection = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                String::new()
            } else {
                format!(".{path}")
            };
            error(field, e.into_inner().to_string())
        })?;
        let contact_point = match raw.contact_point.as_deref().map(str::trim) {
            None | Some("organization_user_id") => ContactPoint::OrganizationUserId,
            Some(column) if crate::mapping::is_logical_name(column) => {
                ContactPoint::Column(column.to_string())
            }
            Some(_) => {
                return Err(error(
                    ".contact_point",
                    "must be organization_user_id or a contact column's logical name, e.g. emailaddress1",
                ))
            }
        };
        if raw.purposes.is_empty() && raw.topics.is_empty() {
            return Err(error("", "needs at least one entry in purposes or topics"));
        }
        let mut purposes = Vec::with_capacity(raw.purposes.len());
        for (i, p) in raw.purposes.into_iter().enumerate() {
            let field = |name: &str| format!(".purposes[{i}].{name}");
            let entry = PurposeRecord {
                purpose: non_empty(field("purpose"), p.purpose)?,
                consent_purpose: non_empty(field("consent_purpose"), p.consent_purpose)?,
                direction: p.direction.unwrap_or(Direction::Both),
            };
            if purposes
                .iter()
                .any(|e: &PurposeRecord| e.purpose == entry.purpose)
            {
                return Err(error(
                    format!(".purposes[{i}]"),
                    format!("Didomi purpose `{}` is already listed", entry.purpose),
                ));
            }
            purposes.push(entry);
        }
        let mut topics = Vec::with_capacity(raw.topics.len());
        for (i, t) in raw.topics.into_iter().enumerate() {
            let field = |name: &str| format!(".topics[{i}].{name}");
            let entry = TopicRecord {
                purpose: non_empty(field("purpose"), t.purpose)?,
                preference: non_empty(field("preference"), t.preference)?,
                value: non_empty(field("value"), t.value)?,
                consent_topic: non_empty(field("consent_topic"), t.consent_topic)?,
                direction: t.direction.unwrap_or(Direction::Both),
            };
            if topics.iter().any(|e: &TopicRecord| {
                (&e.purpose, &e.preference, &e.value)
                    == (&entry.purpose, &entry.preference, &entry.value)
            }) {
                return Err(error(
                    format!(".topics[{i}]"),
                    "this purpose, preference and value are already listed",
                ));
            }
            topics.push(entry);
        }
        Ok(ContactPointConsent {
            contact_point,
            channel: raw.channel.unwrap_or(Channel::Email),
            purposes,
            topics,
        })
    }

    /// Whether any entry flows from Dynamics to Didomi.
    pub(crate) fn any_to_didomi(&self) -> bool {
        self.purposes.iter().any(|p| p.direction.to_didomi())
            || self.topics.iter().any(|t| t.direction.to_didomi())
    }
}

/// Which configured entry a record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Entry {
    /// Index into `purposes`.
    Purpose(usize),
    /// Index into `topics`.
    Topic(usize),
}

/// The record values Didomi's choices call for: Opted In when the purpose is
/// enabled (a topic: its value is selected), Opted Out when disabled (a
/// topic: not selected while the preference has a value); nothing when
/// Didomi says nothing.
pub(crate) fn wanted_values(
    section: &ContactPointConsent,
    consents: &Consents,
) -> Vec<(Entry, i64)> {
    values_where(section, consents, Direction::to_dynamics)
}

/// The record values Didomi's choices stand for, over the entries that flow
/// to Didomi: what Didomi already holds, to compare records with.
#[cfg(feature = "jobs")]
pub(crate) fn didomi_values(
    section: &ContactPointConsent,
    consents: &Consents,
) -> Vec<(Entry, i64)> {
    values_where(section, consents, Direction::to_didomi)
}

fn values_where(
    section: &ContactPointConsent,
    consents: &Consents,
    flows: fn(Direction) -> bool,
) -> Vec<(Entry, i64)> {
    let mut wanted = Vec::new();
    for (i, entry) in section.purposes.iter().enumerate() {
        if !flows(entry.direction) {
            continue;
        }
        if let Some(enabled) = consents.purpose(&entry.purpose).and_then(|p| p.enabled) {
            wanted.push((
                Entry::Purpose(i),
                if enabled { OPTED_IN } else { OPTED_OUT },
            ));
        }
    }
    for (i, entry) in section.topics.iter().enumerate() {
        if !flows(entry.direction) {
            continue;
        }
        let Some(selected) = selected_values(consents.purpose(&entry.purpose), &entry.preference)
        else {
            continue;
        };
        let on = selected.iter().any(|v| *v == entry.value);
        wanted.push((Entry::Topic(i), if on { OPTED_IN } else { OPTED_OUT }));
    }
    wanted
}

/// The values selected for a preference, when the preference has a value.
fn selected_values<'a>(
    purpose: Option<&'a PurposeChoice>,
    preference: &str,
) -> Option<Vec<&'a str>> {
    let choice = purpose?.values.get(preference)?;
    choice.value.as_ref()?;
    Some(choice.selected().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section() -> ContactPointConsent {
        ContactPointConsent::from_value(json!({
            "channel": "email",
            "purposes": [
                {"purpose": "newsletter", "consent_purpose": "Newsletter"},
                {"purpose": "marketing", "consent_purpose": "Marketing"}
            ],
            "topics": [
                {"purpose": "newsletter", "preference": "topics", "value": "sports", "consent_topic": "Sports"},
                {"purpose": "newsletter", "preference": "topics", "value": "news", "consent_topic": "News"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn the_section_reads_with_its_defaults_and_names_bad_fields() {
        let section = section();
        assert_eq!(section.contact_point, ContactPoint::OrganizationUserId);
        assert_eq!(section.channel.code(), 534_120_000);
        assert_eq!(section.topics[1].consent_topic, "News");
        let bad = ContactPointConsent::from_value(json!({"purposes": [{"purpose": "a"}]}));
        assert_eq!(bad.unwrap_err().field, "contact_point_consent.purposes[0]");
        let bad = ContactPointConsent::from_value(json!({"channel": "fax", "purposes": []}));
        assert_eq!(bad.unwrap_err().field, "contact_point_consent.channel");
        let empty = ContactPointConsent::from_value(json!({})).unwrap_err();
        assert!(empty.reason.contains("at least one"), "{empty:?}");
        let column = ContactPointConsent::from_value(
            json!({"contact_point": "emailaddress1", "channel": "text", "topics": [{"purpose": "p", "preference": "q", "value": "v", "consent_topic": "T"}]}),
        )
        .unwrap();
        assert_eq!(
            column.contact_point,
            ContactPoint::Column("emailaddress1".into())
        );
        assert_eq!(column.channel.code(), 534_120_001);
    }

    #[test]
    fn choices_become_opted_in_and_out_and_silence_writes_nothing() {
        let consents: Consents = serde_json::from_value(json!({
            "purposes": [
                {"id": "newsletter", "enabled": true, "values": {"topics": {"value": "sports"}}},
            ]
        }))
        .unwrap();
        assert_eq!(
            wanted_values(&section(), &consents),
            vec![
                (Entry::Purpose(0), OPTED_IN),
                (Entry::Topic(0), OPTED_IN),
                (Entry::Topic(1), OPTED_OUT),
            ],
            "marketing: Didomi says nothing, nothing is written"
        );
        let withdrawn: Consents = serde_json::from_value(json!({
            "purposes": [{"id": "newsletter", "enabled": false}, {"id": "marketing", "enabled": false}]
        }))
        .unwrap();
        assert_eq!(
            wanted_values(&section(), &withdrawn),
            vec![
                (Entry::Purpose(0), OPTED_OUT),
                (Entry::Purpose(1), OPTED_OUT)
            ]
        );
    }
}
