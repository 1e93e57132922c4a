//! The contact table's rows as Dataverse keeps them: its columns, a new
//! row's defaults, a new row version on every write (with `modifiedon`),
//! and the webhooks a write fires.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::odata::ColumnType;
use crate::SimState;

/// The contact columns the simulated environment has: the standard consent
/// columns, and a few custom ones (`new_` prefix) for preferences.
pub fn standard_columns() -> BTreeMap<String, ColumnType> {
    use ColumnType::*;
    [
        ("contactid", Uniqueidentifier),
        ("firstname", String),
        ("lastname", String),
        ("emailaddress1", String),
        ("emailaddress2", String),
        ("mobilephone", String),
        ("donotemail", Boolean),
        ("donotbulkemail", Boolean),
        ("donotphone", Boolean),
        ("donotfax", Boolean),
        ("donotpostalmail", Boolean),
        ("donotbulkpostalmail", Boolean),
        ("donotsendmm", Boolean),
        ("followemail", Boolean),
        ("msdyn_gdproptout", Boolean),
        ("preferredcontactmethodcode", Picklist),
        ("new_topics", String),
        ("new_sports", Boolean),
        ("new_news", Boolean),
        ("new_profiling", Picklist),
        ("new_consentsyncedon", DateTime),
        // System column: Dataverse sets it on every create and update.
        ("modifiedon", DateTime),
    ]
    .into_iter()
    .map(|(name, kind)| (name.to_string(), kind))
    .collect()
}

/// The standard columns' display names, as an English environment shows them.
pub fn standard_labels() -> BTreeMap<String, String> {
    [
        ("contactid", "Contact"),
        ("firstname", "First Name"),
        ("lastname", "Last Name"),
        ("emailaddress1", "Email"),
        ("emailaddress2", "Email Address 2"),
        ("mobilephone", "Mobile Phone"),
        ("donotemail", "Do not allow Emails"),
        ("donotbulkemail", "Do not allow Bulk Emails"),
        ("donotphone", "Do not allow Phone Calls"),
        ("donotfax", "Do not allow Faxes"),
        ("donotpostalmail", "Do not allow Mails"),
        ("donotbulkpostalmail", "Do not allow Bulk Mails"),
        ("donotsendmm", "Send Marketing Materials"),
        ("followemail", "Follow Email Activity"),
        ("msdyn_gdproptout", "GDPR Optout"),
        ("preferredcontactmethodcode", "Preferred Method of Contact"),
        ("new_topics", "Newsletter topics"),
        ("new_sports", "Sports"),
        ("new_news", "News"),
        ("new_profiling", "Profiling"),
        ("new_consentsyncedon", "Consent synced on"),
        ("modifiedon", "Modified On"),
    ]
    .into_iter()
    .map(|(name, label)| (name.to_string(), label.to_string()))
    .collect()
}

/// A new row's defaults, as Dataverse fills them in.
pub fn with_defaults(
    columns: &BTreeMap<String, ColumnType>,
    mut row: Map<String, Value>,
) -> Map<String, Value> {
    for (name, kind) in columns {
        let default = match (name.as_str(), kind) {
            ("followemail", _) => Value::Bool(true),
            ("modifiedon", _) => json!(crate::didomi::iso_seconds()),
            ("preferredcontactmethodcode", _) => json!(1),
            (_, ColumnType::Boolean) => Value::Bool(false),
            _ => Value::Null,
        };
        row.entry(name.clone()).or_insert(default);
    }
    row
}

/// Writes columns to an existing row, as an Update does: a new row version.
pub fn write_columns(row: &mut Map<String, Value>, fields: &Map<String, Value>) {
    let version = row
        .get("versionnumber")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    row.extend(fields.clone());
    row.insert("versionnumber".into(), json!(version + 1));
    row.insert("modifiedon".into(), json!(crate::didomi::iso_seconds()));
}

/// Adds a contact with `fields` (the others at their defaults) as a Create
/// by `user` does, its webhooks included; its new id.
pub(crate) fn insert_contact(
    state: &mut SimState,
    fields: &Map<String, Value>,
    user: &str,
) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let mut row = fields.clone();
    row.insert("contactid".into(), json!(id));
    let row = with_defaults(&state.columns, row);
    state.push_contact(row);
    crate::webhooks::contact_written(state, "Create", &id, fields, user);
    id
}
