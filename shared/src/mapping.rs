//! Attribute mapping between Didomi choices and Dataverse contact columns,
//! in both directions.
//!
//! A mapping ties one contact column to one Didomi choice: a purpose's or a
//! channel's `enabled`, a preference's selected values (a text column), or
//! whether one value of a preference is selected (a flag column). Flag
//! columns are booleans, optionally inverted (`donotbulkemail` = not
//! enabled), or choice (option set) columns with one value for each side.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::consents::{ChannelChoice, Consents, PreferenceChoice, PurposeChoice};

/// One validated mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub column: String,
    pub source: Source,
    pub encoding: Encoding,
    pub direction: Direction,
}

/// The Didomi choice a column follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Purpose {
        purpose: String,
    },
    Channel {
        channel: String,
    },
    /// The selected value ids of a preference, comma-separated.
    Preference {
        purpose: String,
        preference: String,
    },
    /// Whether one value of a preference is selected.
    PreferenceValue {
        purpose: String,
        preference: String,
        value: String,
    },
}

/// How the column stores the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// A yes/no column: a boolean, or a choice column with one option per side.
    Flag {
        invert: bool,
        choice: Option<ChoiceValues>,
    },
    /// A text column holding comma-separated value ids.
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceValues {
    #[serde(rename = "true")]
    pub when_true: i64,
    #[serde(rename = "false")]
    pub when_false: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Both,
    ToDynamics,
    ToDidomi,
}

impl Direction {
    pub(crate) fn to_dynamics(self) -> bool {
        matches!(self, Direction::Both | Direction::ToDynamics)
    }

    pub fn to_didomi(self) -> bool {
        matches!(self, Direction::Both | Direction::ToDidomi)
    }
}

/// The mapping as written in the secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMapping {
    column: Option<String>,
    purpose: Option<String>,
    channel: Option<String>,
    preference: Option<String>,
    value: Option<String>,
    #[serde(default)]
    invert: bool,
    choice: Option<ChoiceValues>,
    #[serde(default)]
    direction: Direction,
}

/// Why a mapping was rejected; the configuration adds the mapping's index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct MappingError(pub String);

fn reject<T>(reason: impl Into<String>) -> Result<T, MappingError> {
    Err(MappingError(reason.into()))
}

/// True for a Dataverse logical name: lower-case letters, digits and `_`,
/// starting with a letter. Anything else cannot be a column, and rejecting it
/// here also keeps configuration text out of OData query syntax.
pub(crate) fn is_logical_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 100
}

fn non_empty(field: &str, value: Option<String>) -> Result<Option<String>, MappingError> {
    match value {
        Some(v) if v.trim().is_empty() => reject(format!("`{field}` is empty")),
        Some(v) if v.trim() != v => reject(format!("`{field}` has leading or trailing spaces")),
        other => Ok(other),
    }
}

impl TryFrom<RawMapping> for Mapping {
    type Error = MappingError;

    fn try_from(raw: RawMapping) -> Result<Self, MappingError> {
        let Some(column) = non_empty("column", raw.column)? else {
            return reject("`column` is required");
        };
        if !is_logical_name(&column) {
            return reject(format!(
                "`column` {column:?} is not a Dataverse logical name (lower-case letters, digits and `_`)"
            ));
        }
        let purpose = non_empty("purpose", raw.purpose)?;
        let channel = non_empty("channel", raw.channel)?;
        let preference = non_empty("preference", raw.preference)?;
        let value = non_empty("value", raw.value)?;

        let source = match (purpose, channel, preference, value) {
            (Some(_), Some(_), _, _) => return reject("set `purpose` or `channel`, not both"),
            (None, None, _, _) => return reject("one of `purpose` or `channel` is required"),
            (None, Some(_), Some(_), _) => {
                return reject("`preference` belongs to a purpose; channels have no preferences")
            }
            (_, _, None, Some(_)) => return reject("`value` needs a `preference`"),
            (None, Some(channel), None, None) => Source::Channel { channel },
            (Some(purpose), None, None, None) => Source::Purpose { purpose },
            (Some(purpose), None, Some(preference), None) => Source::Preference {
                purpose,
                preference,
            },
            (Some(purpose), None, Some(preference), Some(value)) => {
                if value.contains(',') {
                    return reject("`value` is one value id and cannot contain a comma");
                }
                Source::PreferenceValue {
                    purpose,
                    preference,
                    value,
                }
            }
        };

        let encoding = if matches!(source, Source::Preference { .. }) {
            if raw.invert || raw.choice.is_some() {
                return reject(
                    "a `preference` without `value` fills a text column; `invert` and `choice` do not apply",
                );
            }
            Encoding::Text
        } else {
            if let Some(choice) = raw.choice {
                if choice.when_true == choice.when_false {
                    return reject(
                        "`choice` needs two different values for \"true\" and \"false\"",
                    );
                }
            }
            Encoding::Flag {
                invert: raw.invert,
                choice: raw.choice,
            }
        };

        Ok(Mapping {
            column,
            source,
            encoding,
            direction: raw.direction,
        })
    }
}

impl Mapping {
    /// The column value for an enabled flag, or `None` when it is unknown.
    fn flag_value(&self, enabled: Option<bool>) -> Option<Value> {
        let Encoding::Flag { invert, choice } = &self.encoding else {
            return None;
        };
        let flag = enabled? != *invert;
        Some(match choice {
            Some(choice) => Value::from(if flag {
                choice.when_true
            } else {
                choice.when_false
            }),
            None => Value::Bool(flag),
        })
    }

    /// Reads a flag column back into `enabled`.
    fn flag_from_column(&self, value: &Value) -> Result<Option<bool>, ColumnValueError> {
        let Encoding::Flag { invert, choice } = &self.encoding else {
            return Ok(None);
        };
        let flag = match (choice, value) {
            (_, Value::Null) => return Ok(None),
            (None, Value::Bool(b)) => *b,
            (Some(choice), value) => match option_set_value(value) {
                Some(v) if v == choice.when_true => true,
                Some(v) if v == choice.when_false => false,
                Some(v) => {
                    return Err(self.bad_value(format!(
                        "holds {v}, which is neither choice value ({} or {})",
                        choice.when_true, choice.when_false
                    )))
                }
                None => return Err(self.bad_value("is not a choice value".into())),
            },
            (None, _) => return Err(self.bad_value("is not a boolean".into())),
        };
        Ok(Some(flag != *invert))
    }

    fn bad_value(&self, reason: String) -> ColumnValueError {
        ColumnValueError {
            column: self.column.clone(),
            reason,
        }
    }

    /// The purpose id this mapping belongs to, if any.
    pub fn purpose(&self) -> Option<&str> {
        match &self.source {
            Source::Purpose { purpose }
            | Source::Preference { purpose, .. }
            | Source::PreferenceValue { purpose, .. } => Some(purpose),
            Source::Channel { .. } => None,
        }
    }
}

/// A choice value as Dataverse sends it: a plain integer in the Web API,
/// `{"__type": "OptionSetValue:…", "Value": 1}` in webhook payloads.
fn option_set_value(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.get("Value")?.as_i64())
}

/// A contact column whose value cannot be read back as a Didomi choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}` {reason}")]
pub(crate) struct ColumnValueError {
    pub column: String,
    pub reason: String,
}

/// The contact columns that Didomi's `consents` determine, for the mappings
/// that flow to Dynamics.
///
/// A column is set only when its choice is known: a purpose or channel that is
/// absent, or whose `enabled` is `null`, leaves its flag columns alone, and a
/// preference that is absent leaves its columns alone. So a partial update
/// (a consent event naming a few purposes) only touches what it names.
pub fn columns_from_consents(mappings: &[Mapping], consents: &Consents) -> Map<String, Value> {
    let mut columns = Map::new();
    for mapping in mappings.iter().filter(|m| m.direction.to_dynamics()) {
        let value = match &mapping.source {
            Source::Purpose { purpose } => consents
                .purpose(purpose)
                .and_then(|p| mapping.flag_value(p.enabled)),
            Source::Channel { channel } => consents
                .channel(channel)
                .and_then(|c| mapping.flag_value(c.enabled)),
            Source::Preference {
                purpose,
                preference,
            } => preference_of(consents, purpose, preference)
                .map(|p| p.value.clone().map(Value::String).unwrap_or(Value::Null)),
            Source::PreferenceValue {
                purpose,
                preference,
                value,
            } => preference_of(consents, purpose, preference)
                .and_then(|p| mapping.flag_value(Some(p.selected().any(|v| v == value)))),
        };
        if let Some(value) = value {
            columns.insert(mapping.column.clone(), value);
        }
    }
    columns
}

fn purpose_mut<'a>(
    purposes: &'a mut BTreeMap<String, PurposeChoice>,
    id: &str,
) -> &'a mut PurposeChoice {
    purposes
        .entry(id.to_string())
        .or_insert_with(|| PurposeChoice {
            id: id.to_string(),
            enabled: None,
            values: BTreeMap::new(),
        })
}

fn preference_of<'a>(
    consents: &'a Consents,
    purpose: &str,
    preference: &str,
) -> Option<&'a PreferenceChoice> {
    consents.purpose(purpose)?.values.get(preference)
}

/// The columns that express `changed` columns to Didomi: each changed column
/// mapped towards Didomi, and with a per-value flag column every other value
/// column of its preference, since Didomi takes a preference's selected
/// values as a whole.
pub(crate) fn columns_for_changes<'a>(
    mappings: &'a [Mapping],
    changed: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<&'a str> {
    let to_didomi = || mappings.iter().filter(|m| m.direction.to_didomi());
    let mut columns = std::collections::BTreeSet::new();
    for mapping in to_didomi().filter(|m| changed.contains(&m.column)) {
        columns.insert(mapping.column.as_str());
        if let Source::PreferenceValue {
            purpose,
            preference,
            ..
        } = &mapping.source
        {
            for sibling in to_didomi() {
                if let Source::PreferenceValue {
                    purpose: p,
                    preference: q,
                    ..
                } = &sibling.source
                {
                    if p == purpose && q == preference {
                        columns.insert(sibling.column.as_str());
                    }
                }
            }
        }
    }
    columns
}

/// The Didomi choices that express the `changed` columns, read from
/// `columns` (a contact's columns, which must hold the changed ones and the
/// sibling value columns [`columns_for_changes`] adds).
pub(crate) fn consents_for_changes(
    mappings: &[Mapping],
    changed: &std::collections::BTreeSet<String>,
    columns: &Map<String, Value>,
) -> Result<Consents, ColumnValueError> {
    let needed = columns_for_changes(mappings, changed);
    let columns: Map<String, Value> = columns
        .iter()
        .filter(|(column, _)| needed.contains(column.as_str()))
        .map(|(column, value)| (column.clone(), value.clone()))
        .collect();
    consents_from_columns(mappings, &columns)
}

/// The contact's columns towards Didomi whose value differs from a choice
/// Didomi holds. A column Didomi holds no choice for is not compared: a CRM
/// default (a new contact's boolean is `false` until someone sets it) is
/// not a consent, and sending it could opt someone in.
pub(crate) fn columns_differing_from_didomi(
    mappings: &[Mapping],
    consents: &Consents,
    columns: &Map<String, Value>,
) -> Map<String, Value> {
    let choices = didomi_choices_as_columns(mappings, consents);
    columns_differing_from_choices(mappings, &choices, columns)
}

/// What the `both` / `to_didomi` columns would hold if they followed the
/// choices Didomi records; a column without a recorded choice is absent.
pub(crate) fn didomi_choices_as_columns(
    mappings: &[Mapping],
    consents: &Consents,
) -> Map<String, Value> {
    // The mappings towards Didomi, read as if they flowed to Dynamics.
    let reverse: Vec<Mapping> = mappings
        .iter()
        .filter(|m| m.direction.to_didomi())
        .cloned()
        .map(|mut m| {
            m.direction = Direction::Both;
            m
        })
        .collect();
    columns_from_consents(&reverse, consents)
}

/// The `both` / `to_didomi` columns whose non-empty value differs from the
/// choice Didomi records (`choices`, from [`didomi_choices_as_columns`]).
pub(crate) fn columns_differing_from_choices(
    mappings: &[Mapping],
    choices: &Map<String, Value>,
    columns: &Map<String, Value>,
) -> Map<String, Value> {
    mappings
        .iter()
        .filter(|m| m.direction.to_didomi())
        .filter_map(|m| {
            let value = columns.get(&m.column).filter(|v| !v.is_null())?;
            let recorded = choices.get(&m.column)?;
            (recorded != value).then(|| (m.column.clone(), value.clone()))
        })
        .collect()
}

/// The Didomi choices that contact columns express, for the mappings that
/// flow to Didomi. Only columns present in `columns` contribute; a
/// preference built from per-value flag columns is included only when all of
/// its value columns are present, since a partial set would drop selections.
pub(crate) fn consents_from_columns(
    mappings: &[Mapping],
    columns: &Map<String, Value>,
) -> Result<Consents, ColumnValueError> {
    let mut purposes: BTreeMap<String, PurposeChoice> = BTreeMap::new();
    let mut channels: Vec<ChannelChoice> = Vec::new();
    // (purpose, preference) -> selected values, or None once a column is missing.
    let mut value_flags: BTreeMap<(&str, &str), Option<Vec<&str>>> = BTreeMap::new();

    for mapping in mappings.iter().filter(|m| m.direction.to_didomi()) {
        let column = columns.get(&mapping.column);
        let flag = match column {
            Some(value) => mapping.flag_from_column(value)?,
            None => None,
        };
        match &mapping.source {
            Source::Purpose { purpose } => {
                if let Some(enabled) = flag {
                    purpose_mut(&mut purposes, purpose).enabled = Some(enabled);
                }
            }
            Source::Channel { channel } => {
                if let Some(enabled) = flag {
                    channels.push(ChannelChoice {
                        id: channel.clone(),
                        enabled: Some(enabled),
                    });
                }
            }
            Source::Preference {
                purpose,
                preference,
            } => {
                let text = match column {
                    None => continue,
                    Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(mapping.bad_value("is not text".into())),
                };
                purpose_mut(&mut purposes, purpose)
                    .values
                    .insert(preference.clone(), PreferenceChoice { value: Some(text) });
            }
            Source::PreferenceValue {
                purpose,
                preference,
                value,
            } => {
                let selected = value_flags
                    .entry((purpose, preference))
                    .or_insert_with(|| Some(Vec::new()));
                match (flag, selected.as_mut()) {
                    (None, _) => *selected = None,
                    (Some(true), Some(list)) => list.push(value),
                    _ => {}
                }
            }
        }
    }

    for ((purpose, preference), selected) in value_flags {
        let Some(selected) = selected else { continue };
        // A text mapping of the same preference is the more complete source.
        purpose_mut(&mut purposes, purpose)
            .values
            .entry(preference.to_string())
            .or_insert(PreferenceChoice {
                value: Some(selected.join(",")),
            });
    }

    Ok(Consents {
        purposes: purposes.into_values().collect(),
        channels,
    })
}

/// The desired columns whose current value differs. Writing an unchanged
/// value is not free in Dataverse: it fires plugins, webhooks (including our
/// own, which would echo) and audit entries.
pub fn differences(
    desired: &Map<String, Value>,
    current: &Map<String, Value>,
) -> Map<String, Value> {
    desired
        .iter()
        .filter(|(column, value)| current.get(*column).unwrap_or(&Value::Null) != *value)
        .map(|(column, value)| (column.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mappings(value: Value) -> Vec<Mapping> {
        let raw: Vec<RawMapping> = serde_json::from_value(value).unwrap();
        raw.into_iter()
            .map(|m| Mapping::try_from(m).unwrap())
            .collect()
    }

    fn rejection(value: Value) -> String {
        let raw: RawMapping = serde_json::from_value(value).unwrap();
        Mapping::try_from(raw).unwrap_err().0
    }

    fn sample_mappings() -> Vec<Mapping> {
        mappings(json!([
            {"column": "donotbulkemail", "purpose": "marketing", "invert": true},
            {"column": "donotemail", "channel": "email", "invert": true},
            {"column": "new_topics", "purpose": "newsletter", "preference": "topics"},
            {"column": "new_sports", "purpose": "newsletter", "preference": "topics", "value": "sports"},
            {"column": "new_profiling", "purpose": "profiling",
             "choice": {"true": 100000000, "false": 100000001}},
            {"column": "new_legacyflag", "purpose": "legacy", "direction": "to_didomi"}
        ]))
    }

    #[test]
    fn given_a_full_status_when_mapped_to_dynamics_then_every_known_choice_becomes_a_column() {
        let consents: Consents = serde_json::from_value(json!({
            "purposes": [
                {"id": "marketing", "enabled": true},
                {"id": "newsletter", "enabled": true, "values": {"topics": {"value": "news,sports"}}},
                {"id": "profiling", "enabled": false},
                {"id": "legacy", "enabled": true}
            ],
            "channels": [{"id": "email", "enabled": false}]
        }))
        .unwrap();

        let columns = columns_from_consents(&sample_mappings(), &consents);

        assert_eq!(
            Value::Object(columns),
            json!({
                "donotbulkemail": false,
                "donotemail": true,
                "new_topics": "news,sports",
                "new_sports": true,
                "new_profiling": 100000001
            })
        );
    }

    #[test]
    fn given_unknown_or_null_choices_when_mapped_then_their_flag_columns_are_left_alone() {
        let consents: Consents = serde_json::from_value(json!({
            "purposes": [{"id": "newsletter", "enabled": null, "values": {"topics": {"value": "news"}}}]
        }))
        .unwrap();

        let columns = columns_from_consents(&sample_mappings(), &consents);

        assert_eq!(
            Value::Object(columns),
            json!({"new_topics": "news", "new_sports": false})
        );
    }

    #[test]
    fn given_contact_columns_when_mapped_to_didomi_then_the_choices_come_back() {
        let columns = json!({
            "donotbulkemail": true,
            "donotemail": false,
            "new_topics": "sports",
            "new_sports": true,
            "new_profiling": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 100000000},
            "new_legacyflag": false
        });

        let consents =
            consents_from_columns(&sample_mappings(), columns.as_object().unwrap()).unwrap();

        assert_eq!(
            serde_json::to_value(&consents).unwrap(),
            json!({
                "purposes": [
                    {"id": "legacy", "enabled": false},
                    {"id": "marketing", "enabled": false},
                    {"id": "newsletter", "values": {"topics": {"value": "sports"}}},
                    {"id": "profiling", "enabled": true}
                ],
                "channels": [{"id": "email", "enabled": true}]
            })
        );
    }

    #[test]
    fn round_trip_preserves_choices_for_two_way_mappings() {
        let original: Consents = serde_json::from_value(json!({
            "purposes": [{"id": "marketing", "enabled": false}, {"id": "profiling", "enabled": true}],
            "channels": [{"id": "email", "enabled": true}]
        }))
        .unwrap();
        let columns = columns_from_consents(&sample_mappings(), &original);
        let back = consents_from_columns(&sample_mappings(), &columns).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn per_value_flags_build_a_preference_only_when_all_are_present() {
        let mappings = mappings(json!([
            {"column": "new_sports", "purpose": "newsletter", "preference": "topics", "value": "sports"},
            {"column": "new_news", "purpose": "newsletter", "preference": "topics", "value": "news"}
        ]));
        let all = json!({"new_sports": true, "new_news": true});
        let partial = json!({"new_sports": false});

        let from_all = consents_from_columns(&mappings, all.as_object().unwrap()).unwrap();
        let from_partial = consents_from_columns(&mappings, partial.as_object().unwrap()).unwrap();

        assert_eq!(
            from_all.purpose("newsletter").unwrap().values["topics"]
                .value
                .as_deref(),
            Some("sports,news")
        );
        assert!(from_partial.is_empty());
    }

    #[test]
    fn a_changed_value_flag_brings_its_siblings_and_one_way_columns_stay_out() {
        let mappings = mappings(json!([
            {"column": "donotbulkemail", "purpose": "marketing", "invert": true},
            {"column": "new_sports", "purpose": "newsletter", "preference": "topics", "value": "sports"},
            {"column": "new_news", "purpose": "newsletter", "preference": "topics", "value": "news"},
            {"column": "new_music", "purpose": "newsletter", "preference": "genres", "value": "jazz"},
            {"column": "donotemail", "channel": "email", "invert": true, "direction": "to_dynamics"}
        ]));
        let changed = |cols: &[&str]| cols.iter().map(|c| c.to_string()).collect();
        let columns = columns_for_changes(
            &mappings,
            &changed(&["new_sports", "donotemail", "firstname"]),
        );
        assert_eq!(
            columns.into_iter().collect::<Vec<_>>(),
            ["new_news", "new_sports"]
        );
        let columns = columns_for_changes(&mappings, &changed(&["donotbulkemail"]));
        assert_eq!(columns.into_iter().collect::<Vec<_>>(), ["donotbulkemail"]);
    }

    #[test]
    fn unreadable_column_values_are_errors_naming_the_column() {
        let columns = json!({"new_profiling": 7});
        let err =
            consents_from_columns(&sample_mappings(), columns.as_object().unwrap()).unwrap_err();
        assert_eq!(err.column, "new_profiling");
        assert!(err.reason.contains("neither choice value"), "{err}");

        let columns = json!({"donotemail": "yes"});
        let err =
            consents_from_columns(&sample_mappings(), columns.as_object().unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "column `donotemail` is not a boolean");
    }

    #[test]
    fn invalid_mappings_are_rejected_with_the_reason() {
        assert_eq!(rejection(json!({"purpose": "x"})), "`column` is required");
        assert_eq!(
            rejection(json!({"column": "a", "purpose": "x", "channel": "y"})),
            "set `purpose` or `channel`, not both"
        );
        assert_eq!(
            rejection(json!({"column": "a"})),
            "one of `purpose` or `channel` is required"
        );
        assert!(
            rejection(json!({"column": "a", "channel": "y", "preference": "p"}))
                .contains("channels")
        );
        assert_eq!(
            rejection(json!({"column": "a", "purpose": "x", "value": "v"})),
            "`value` needs a `preference`"
        );
        assert!(rejection(
            json!({"column": "a", "purpose": "x", "preference": "p", "invert": true})
        )
        .contains("text column"));
        assert!(rejection(
            json!({"column": "a", "purpose": "x", "choice": {"true": 1, "false": 1}})
        )
        .contains("two different values"));
        assert!(rejection(json!({"column": "DoNotEmail", "purpose": "x"})).contains("logical name"));
        assert!(rejection(json!({"column": "a", "purpose": " "})).contains("`purpose` is empty"));
    }

    #[test]
    fn unknown_mapping_fields_are_rejected_rather_than_ignored() {
        let err = serde_json::from_value::<RawMapping>(
            json!({"column": "a", "purpose": "x", "invret": true}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `invret`"), "{err}");
    }

    #[test]
    fn only_differing_columns_are_written() {
        let desired = json!({"donotbulkemail": true, "donotemail": false, "new_topics": "news"});
        let current = json!({"donotbulkemail": true, "donotemail": null});
        let changes = differences(desired.as_object().unwrap(), current.as_object().unwrap());
        assert_eq!(
            Value::Object(changes),
            json!({"donotemail": false, "new_topics": "news"})
        );
    }
}
