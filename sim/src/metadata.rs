//! The contact table's metadata as Dataverse serves and changes it: its
//! attributes (type and display label), a new Yes/No column
//! (`BooleanAttributeMetadata`), a new alternate key (its index then
//! `Pending`), `PublishXml`, the organization's base language, and the
//! privilege refusals a role without customization rights gets.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::odata::{odata_error, ColumnType, API_PATH};
use crate::SimState;

/// Where the contact table's metadata lives below the API root.
pub const CONTACT: &str = "EntityDefinitions(LogicalName='contact')";

/// The organization's base language: English (United States).
pub const BASE_LANGUAGE: u64 = 1033;

/// A label as metadata carries it: in the user's language, and all of them.
fn label(text: Option<&str>) -> Value {
    match text {
        Some(text) => {
            let localized = json!({"Label": text, "LanguageCode": BASE_LANGUAGE, "IsManaged": false,
                                   "MetadataId": uuid::Uuid::new_v4().to_string(), "HasChanged": null});
            json!({"LocalizedLabels": [localized.clone()], "UserLocalizedLabel": localized})
        }
        None => json!({"LocalizedLabels": [], "UserLocalizedLabel": null}),
    }
}

/// `GET EntityDefinitions(LogicalName='contact')/Attributes`, with the
/// properties `$select` names (all three it knows by default).
pub fn attributes(state: &SimState, params: &HashMap<String, String>) -> Response {
    let selected: Vec<&str> = params
        .get("$select")
        .map(|s| s.split(',').collect())
        .unwrap_or_else(|| vec!["LogicalName", "AttributeType", "DisplayName"]);
    if let Some(unknown) = selected
        .iter()
        .find(|p| !matches!(**p, "LogicalName" | "AttributeType" | "DisplayName"))
    {
        return odata_error(
            400,
            "0x80060888",
            &format!("Could not find a property named '{unknown}' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'."),
        );
    }
    let rows: Vec<Value> = state
        .columns
        .iter()
        .map(|(name, kind)| {
            let mut row = json!({"MetadataId": uuid::Uuid::new_v4().to_string()});
            for property in &selected {
                row[*property] = match *property {
                    "LogicalName" => json!(name),
                    "AttributeType" => json!(kind.attribute_type()),
                    _ => label(state.column_labels.get(name).map(String::as_str)),
                };
            }
            row
        })
        .collect();
    axum::Json(json!({
        "@odata.context": format!("{}{API_PATH}/$metadata#EntityDefinitions('contact')/Attributes({})", state.base_url, selected.join(",")),
        "value": rows
    }))
    .into_response()
}

/// Dataverse's refusal for a role that lacks `privilege`.
fn refused(state: &SimState, privilege: &str) -> Response {
    odata_error(
        403,
        "0x80042f09",
        &format!(
            "Principal user (Id={}, type=8, roleCount=1, privilegeCount=522, accessMode=4, MetadataCachePrivilegesCount=0, BusinessUnitId=00000000-0000-0000-0000-0000000000b1), is missing {privilege} privilege (Id=00000000-0000-0000-0000-00000000a771) on OTC=2 for entity 'contact'. Consider assigning a role with the required privilege.",
            state.identity.application_user_id
        ),
    )
}

fn label_text(body: &Value, at: &str) -> Option<String> {
    body.pointer(at)
        .and_then(|l| l.pointer("/LocalizedLabels/0/Label"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `POST EntityDefinitions(LogicalName='contact')/Attributes` of a
/// `BooleanAttributeMetadata`: the column exists (in the Web API at once;
/// in forms and views once published).
pub fn create_attribute(state: &mut SimState, body: &[u8]) -> Response {
    if state.denied_privileges.contains("prvCreateAttribute") {
        return refused(state, "prvCreateAttribute");
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return odata_error(400, "0x80048d19", "The request body is not valid JSON.");
    };
    if body["@odata.type"] != "Microsoft.Dynamics.CRM.BooleanAttributeMetadata" {
        return odata_error(
            400,
            "0x80048d19",
            "The simulator creates Boolean columns only (@odata.type Microsoft.Dynamics.CRM.BooleanAttributeMetadata).",
        );
    }
    let Some(schema_name) = body["SchemaName"].as_str() else {
        return odata_error(400, "0x80044331", "The SchemaName is required.");
    };
    let valid_name = schema_name
        .split_once('_')
        .is_some_and(|(prefix, rest)| (2..=8).contains(&prefix.len()) && !rest.is_empty())
        && schema_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return odata_error(
            400,
            "0x80044331",
            &format!("The schema name {schema_name} is invalid: it must start with a valid customization prefix followed by an underscore."),
        );
    }
    let Some(display_name) = label_text(&body, "/DisplayName") else {
        return odata_error(
            400,
            "0x80044331",
            "A label in the base language (1033) is required for DisplayName.",
        );
    };
    let options = ["/OptionSet/TrueOption", "/OptionSet/FalseOption"];
    if options.iter().any(|o| {
        body.pointer(&format!("{o}/Value"))
            .and_then(Value::as_i64)
            .is_none()
            || label_text(&body, &format!("{o}/Label")).is_none()
    }) {
        return odata_error(
            400,
            "0x80044331",
            "A Boolean attribute needs an OptionSet with a labelled TrueOption and FalseOption.",
        );
    }
    let logical_name = schema_name.to_ascii_lowercase();
    if state.columns.contains_key(&logical_name) {
        return odata_error(
            400,
            "0x80047013",
            &format!("An attribute with the name {logical_name} already exists on entity contact."),
        );
    }
    state
        .columns
        .insert(logical_name.clone(), ColumnType::Boolean);
    state
        .column_labels
        .insert(logical_name.clone(), display_name);
    state.unpublished.insert(logical_name);
    let id = uuid::Uuid::new_v4();
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{}{API_PATH}/{CONTACT}/Attributes({id})",
        state.base_url
    )) {
        response.headers_mut().insert("OData-EntityId", value);
    }
    response
}

/// `POST EntityDefinitions(LogicalName='contact')/Keys`: the key is defined
/// at once and its index built later (`Pending` until then).
pub fn create_key(state: &mut SimState, body: &[u8]) -> Response {
    if state.denied_privileges.contains("prvCreateEntityKey") {
        return refused(state, "prvCreateEntityKey");
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return odata_error(400, "0x80048d19", "The request body is not valid JSON.");
    };
    let (Some(schema_name), Some(columns)) = (
        body["SchemaName"].as_str(),
        body["KeyAttributes"].as_array(),
    ) else {
        return odata_error(
            400,
            "0x80044331",
            "SchemaName and KeyAttributes are required.",
        );
    };
    let columns: Vec<String> = columns
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    if let Some(unknown) = columns.iter().find(|c| !state.columns.contains_key(*c)) {
        return odata_error(
            400,
            "0x80060888",
            &format!("The attribute {unknown} does not exist on entity contact."),
        );
    }
    if label_text(&body, "/DisplayName").is_none() {
        return odata_error(
            400,
            "0x80044331",
            "A label in the base language (1033) is required for DisplayName.",
        );
    }
    state.contact_keys.push(crate::keys::AlternateKey {
        name: schema_name.to_ascii_lowercase(),
        columns,
        status: "Pending".into(),
    });
    StatusCode::NO_CONTENT.into_response()
}

/// `POST PublishXml`: publishes the customizations of the entities named.
pub fn publish(state: &mut SimState, body: &[u8]) -> Response {
    let xml = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b["ParameterXml"].as_str().map(str::to_string));
    let Some(xml) = xml.filter(|x| x.starts_with("<importexportxml>")) else {
        return odata_error(
            400,
            "0x80048d19",
            "ParameterXml is required: <importexportxml>…</importexportxml>.",
        );
    };
    if xml.contains("<entity>contact</entity>") {
        state.unpublished.clear();
        state.published.push("contact".into());
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET organizations?$select=languagecode`.
pub fn organizations(state: &SimState) -> Response {
    axum::Json(json!({
        "@odata.context": format!("{}{API_PATH}/$metadata#organizations(languagecode)", state.base_url),
        "value": [{"organizationid": "00000000-0000-0000-0000-0000000000f1", "languagecode": BASE_LANGUAGE}]
    }))
    .into_response()
}
