//! Alternate keys on the contact table, as Dataverse has them: key metadata
//! (`EntityDefinitions(LogicalName='contact')/Keys`), rows addressed by key
//! (`PATCH contacts(emailaddress1='…')`: an upsert, update-only with
//! `If-Match: *`, create-only with `If-None-Match: *`), and uniqueness
//! enforced on every path that creates or changes a row.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};

use crate::contacts::with_defaults;
use crate::odata::{odata_error, API_PATH};
use crate::SimState;

/// One alternate key of the contact table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternateKey {
    pub name: String,
    pub columns: Vec<String>,
    /// `Active` once its index is built; only an active key is enforced.
    pub status: String,
}

/// Characters Dataverse does not allow in a key value addressed in a URL.
const NOT_IN_KEY_SYNTAX: &[char] = &['/', '<', '>', '*', '%', '&', ':', '\\', '?', '+'];

/// `GET EntityDefinitions(LogicalName='contact')/Keys`.
pub fn metadata(state: &SimState) -> Response {
    let rows: Vec<Value> = state
        .contact_keys
        .iter()
        .map(|k| {
            json!({"LogicalName": k.name, "KeyAttributes": k.columns,
                   "EntityKeyIndexStatus": k.status, "MetadataId": uuid::Uuid::new_v4().to_string()})
        })
        .collect();
    axum::Json(json!({
        "@odata.context": format!("{}{API_PATH}/$metadata#EntityDefinitions('contact')/Keys(LogicalName,KeyAttributes,EntityKeyIndexStatus)", state.base_url),
        "value": rows
    }))
    .into_response()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_str(), b.as_str()) {
        // Key uniqueness follows the column's collation: case-insensitive.
        (Some(a), Some(b)) => a.to_lowercase() == b.to_lowercase(),
        _ => false,
    }
}

/// The refusal Dataverse gives when `fields` (the row as it would be after
/// the write) repeats an active key's values of another row than `except`.
pub fn conflict(
    state: &SimState,
    fields: &Map<String, Value>,
    except: Option<&str>,
) -> Option<Response> {
    conflict_in(&state.contact_keys, state.contacts.iter(), fields, except)
}

/// [`conflict`] against `rows`.
pub fn conflict_in<'a>(
    keys: &[AlternateKey],
    rows: impl Iterator<Item = &'a Map<String, Value>> + Clone,
    fields: &Map<String, Value>,
    except: Option<&str>,
) -> Option<Response> {
    for key in keys.iter().filter(|k| k.status == "Active") {
        let values: Option<Vec<&Value>> = key
            .columns
            .iter()
            .map(|c| fields.get(c).filter(|v| !v.is_null()))
            .collect();
        let Some(values) = values else { continue };
        let taken = rows.clone().any(|row| {
            row.get("contactid").and_then(Value::as_str) != except
                && key
                    .columns
                    .iter()
                    .zip(&values)
                    .all(|(c, v)| row.get(c).is_some_and(|r| same(r, v)))
        });
        if taken {
            return Some(odata_error(
                412,
                "0x80040237",
                &format!(
                    "A record that has the attribute values {} already exists. The entity key {} requires that this set of attributes contains unique values. Select unique values and try again.",
                    key.columns.join(", "),
                    key.name
                ),
            ));
        }
    }
    None
}

/// Before a create: when a test asked for a race, another writer creates
/// the same person first (as a concurrent delivery would), with only the
/// key columns set.
pub fn run_competitor(state: &mut SimState, fields: &Map<String, Value>) {
    if !std::mem::take(&mut state.race_next_create) {
        return;
    }
    let mut row: Map<String, Value> = state
        .contact_keys
        .iter()
        .flat_map(|k| k.columns.iter())
        .filter_map(|c| Some((c.clone(), fields.get(c)?.clone())))
        .collect();
    row.insert("contactid".into(), json!(uuid::Uuid::new_v4().to_string()));
    let row = with_defaults(&state.columns, row);
    state.push_contact(row);
}

/// `contacts(column='value')`: the column and the decoded value, when the
/// segment addresses a row by key.
pub fn parse_segment(segment: &str) -> Option<(String, String)> {
    let decoded = percent_decode_str(segment).decode_utf8().ok()?;
    let (column, literal) = decoded.split_once('=')?;
    let inner = literal.strip_prefix('\'')?.strip_suffix('\'')?;
    if inner.replace("''", "").contains('\'') {
        return None;
    }
    Some((column.trim().to_string(), inner.replace("''", "'")))
}

/// `PATCH contacts(column='value')`.
pub fn patch(
    state: &mut SimState,
    column: &str,
    value: &str,
    headers: &HeaderMap,
    mut fields: Map<String, Value>,
    user: &str,
) -> Response {
    let defined = state
        .contact_keys
        .iter()
        .any(|k| k.status == "Active" && k.columns == [column]);
    if !defined {
        return odata_error(
            400,
            "0x8006088a",
            &format!("No active alternate key on contact has the attribute(s) {column}."),
        );
    }
    if value.contains(NOT_IN_KEY_SYNTAX) {
        return odata_error(
            400,
            "0x80040203",
            "The key value contains a character that is not allowed in a key (/ < > * % & : \\ ? +).",
        );
    }
    let wanted = Value::String(value.to_string());
    let existing = state
        .contacts
        .iter()
        .find(|row| row.get(column).is_some_and(|v| same(v, &wanted)))
        .and_then(|row| row.get("contactid")?.as_str().map(str::to_string));
    fields.insert(column.to_string(), wanted);
    let id = match existing {
        Some(_) if headers.contains_key(header::IF_NONE_MATCH) => {
            return odata_error(
                412,
                "0x80060882",
                "A record with matching key values already exists.",
            )
        }
        None if headers.contains_key(header::IF_MATCH) => {
            return odata_error(
                404,
                "0x80040217",
                "A record with the specified key values does not exist in contact entity",
            )
        }
        Some(id) => {
            if let Some(refusal) = conflict(state, &fields, Some(&id)) {
                return refusal;
            }
            let at = state.contact_position(&id).expect("found above");
            crate::contacts::write_columns(&mut state.contacts[at], &fields);
            crate::webhooks::contact_written(state, "Update", &id, &fields, user);
            id
        }
        None => {
            // Dataverse's upsert reads, then creates: a row created between
            // the two makes the create refused.
            run_competitor(state, &fields);
            if let Some(refusal) = conflict(state, &fields, None) {
                return refusal;
            }
            crate::contacts::insert_contact(state, &fields, user)
        }
    };
    crate::table::CONTACTS.created(&state.base_url, &id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_segments_decode_and_unescape_quotes() {
        assert_eq!(
            parse_segment("emailaddress1='o''brien%40example.com'"),
            Some(("emailaddress1".into(), "o'brien@example.com".into()))
        );
        assert_eq!(parse_segment("6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c"), None);
        assert_eq!(parse_segment("emailaddress1='a'b'"), None);
    }
}
