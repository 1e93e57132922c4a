//! The Dataverse Web API (`/api/data/v9.2/`), as far as consent-sync uses
//! it: the routes. The `contacts` entity set with `$select` and the query
//! options of `query` (`$filter`, `$orderby`, `$top`), paging, PATCH, POST,
//! the bulk messages, `WhoAmI`, the contact table's metadata (see
//! `metadata`), alternate keys (see `keys`) and the registration tables (see
//! `registration`). Rows are kept by `contacts`; errors are `odata`'s. Contact writes fire the registered webhooks (see `webhooks`),
//! initiated by the application user, or by the user named in
//! `MSCRMCallerID` (impersonation).

// Early returns carry the finished HTTP answer; boxing it would only add noise
// to a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::contacts::{insert_contact, with_defaults, write_columns};
use crate::odata::{odata_error, ColumnType, API_PATH};
use crate::table::{created_many, not_an_object, Columns, Row, Target, CONTACTS};
use crate::{Request, SimState};

fn unauthorized() -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=invalid_token, error_description=Error identified in Payload provided by the user for Authorization, authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize"),
    );
    response
}

pub fn serve(state: &mut SimState, request: &Request<'_>) -> Response {
    let (method, path, params, headers, body) = request.parts();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| state.issued_tokens.contains(t)) {
        return unauthorized();
    }
    let path = path.trim_start_matches('/');
    let user = headers
        .get("MSCRMCallerID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| state.identity.application_user_id.clone());
    if let Some(response) = crate::registration::serve(state, &Request { path, ..*request }, &user)
    {
        return response;
    }
    match (method, path) {
        (&Method::GET, "EntityDefinitions(LogicalName='contact')/Attributes") => {
            crate::metadata::attributes(state, params)
        }
        (&Method::POST, "EntityDefinitions(LogicalName='contact')/Attributes") => {
            crate::metadata::create_attribute(state, body)
        }
        (&Method::POST, "EntityDefinitions(LogicalName='contact')/Keys") => {
            crate::metadata::create_key(state, body)
        }
        (&Method::POST, "PublishXml") => crate::metadata::publish(state, body),
        (&Method::GET, "organizations") => crate::metadata::organizations(state),
        (&Method::GET, "EntityDefinitions(LogicalName='contact')/Keys") => {
            crate::keys::metadata(state)
        }
        (&Method::GET, "WhoAmI") => axum::Json(json!({
            "@odata.context": format!("{}{API_PATH}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", state.base_url),
            "BusinessUnitId": "00000000-0000-0000-0000-0000000000b1",
            "UserId": state.identity.application_user_id,
            "OrganizationId": "00000000-0000-0000-0000-0000000000f1"
        }))
        .into_response(),
        (&Method::GET, "contacts") => CONTACTS.query(
            &state.base_url,
            state.contacts.iter(),
            params,
            headers,
            known(state),
            |row, columns| project(state, row, columns),
        ),
        (&Method::POST, "contacts") => create_contact(state, body, &user),
        (&Method::POST, "contacts/Microsoft.Dynamics.CRM.UpdateMultiple") => {
            update_multiple(state, body, &user)
        }
        (&Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple") => {
            create_multiple(state, body, &user)
        }
        (method, path) => match path.strip_prefix("contacts(").and_then(|p| p.strip_suffix(')')) {
            Some(segment) if method == Method::PATCH && crate::keys::parse_segment(segment).is_some() => {
                let (column, value) = crate::keys::parse_segment(segment).expect("checked");
                match validate(state, body) {
                    Ok(mut fields) => {
                        truncate_times(state, &mut fields);
                        crate::keys::patch(state, &column, &value, headers, fields, &user)
                    }
                    Err(response) => response,
                }
            }
            Some(id) if method == Method::GET => get_contact(state, id, params),
            Some(id) if method == Method::PATCH => update_contact(state, id, headers, body, &user),
            _ => odata_error(404, "0x80060888", &format!("Resource not found for the segment '{path}'.")),
        },
    }
}

fn known(state: &SimState) -> impl Fn(&str) -> bool + '_ {
    |column| state.columns.contains_key(column)
}

/// A contact as an answer carries it: with its row version as `@odata.etag`,
/// and every column of the table unless `$select` names them.
fn project(state: &SimState, row: &Row, columns: &Columns) -> Row {
    let mut out = CONTACTS.project(row, columns, |row| {
        state
            .columns
            .keys()
            .map(|name| (name.clone(), row.get(name).cloned().unwrap_or(Value::Null)))
            .collect()
    });
    let version = row
        .get("versionnumber")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    out.insert("@odata.etag".into(), json!(format!("W/\"{version}\"")));
    out
}

fn get_contact(state: &mut SimState, id: &str, params: &HashMap<String, String>) -> Response {
    let at = state.contact_position(id);
    let columns = match CONTACTS.select(params, known(state)) {
        Ok(columns) => columns,
        Err(response) => return response,
    };
    match at {
        Some(at) => axum::Json(project(state, &state.contacts[at], &columns)).into_response(),
        None => CONTACTS.does_not_exist(id),
    }
}

/// Checks a request body's columns against the table's types.
fn validate(state: &SimState, body: &[u8]) -> Result<Map<String, Value>, Response> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(not_an_object("The request body"));
    };
    check_columns(state, &fields)?;
    Ok(fields)
}

fn check_columns(state: &SimState, fields: &Map<String, Value>) -> Result<(), Response> {
    for (name, value) in fields {
        let Some(kind) = state.columns.get(name) else {
            return Err(odata_error(
                400,
                "0x80060888",
                &format!("Invalid property '{name}' was found in entity 'Microsoft.Dynamics.CRM.contact'."),
            ));
        };
        let fits = match kind {
            ColumnType::Boolean => value.is_boolean(),
            ColumnType::String | ColumnType::Uniqueidentifier => {
                value.is_string() || value.is_null()
            }
            ColumnType::Picklist => value.is_i64() || value.is_null(),
            ColumnType::DateTime => {
                value.is_null() || value.as_str().is_some_and(|t| date_time(t).is_some())
            }
        };
        if !fits {
            return Err(odata_error(
                400,
                "0x80048d19",
                &format!("Error identified in Payload provided by the user for Entity :'contacts', Cannot convert the literal '{value}' to the expected type for '{name}'."),
            ));
        }
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`, kept to the second as Dataverse keeps it.
fn date_time(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && text.ends_with('Z')
        && text[..19]
            .bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 4 | 7 | 10 | 13 | 16) || b.is_ascii_digit());
    shaped.then(|| format!("{}Z", &text[..19]))
}

/// Date-time values as Dataverse stores them: whole seconds.
fn truncate_times(state: &SimState, fields: &mut Map<String, Value>) {
    for (name, value) in fields.iter_mut() {
        if state.columns.get(name) == Some(&ColumnType::DateTime) {
            if let Some(text) = value.as_str().and_then(date_time) {
                *value = Value::String(text);
            }
        }
    }
}

fn update_contact(
    state: &mut SimState,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    user: &str,
) -> Response {
    let mut fields = match validate(state, body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    truncate_times(state, &mut fields);
    let columns = state.columns.clone();
    let at = state.contact_position(id);
    if let Some(at) = at {
        let mut after = state.contacts[at].clone();
        after.extend(fields.clone());
        if let Some(refusal) = crate::keys::conflict(state, &after, Some(id)) {
            return refusal;
        }
    }
    match at.map(|at| &mut state.contacts[at]) {
        Some(row) => {
            write_columns(row, &fields);
            crate::webhooks::contact_written(state, "Update", id, &fields, user);
            StatusCode::NO_CONTENT.into_response()
        }
        // `If-Match: *` forbids the upsert that PATCH would otherwise do.
        None if headers.get(header::IF_MATCH).is_some() => CONTACTS.does_not_exist(id),
        None => {
            let mut row = fields.clone();
            row.insert("contactid".into(), json!(id));
            state.push_contact(with_defaults(&columns, row));
            crate::webhooks::contact_written(state, "Create", id, &fields, user);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

fn create_contact(state: &mut SimState, body: &[u8], user: &str) -> Response {
    let mut fields = match validate(state, body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    truncate_times(state, &mut fields);
    crate::keys::run_competitor(state, &fields);
    if let Some(refusal) = crate::keys::conflict(state, &fields, None) {
        return refusal;
    }
    let id = insert_contact(state, &fields, user);
    CONTACTS.created(&state.base_url, &id)
}

/// The `Targets` of a bulk message, each with columns of the table.
fn targets(state: &SimState, body: &[u8], key_required: bool) -> Result<Vec<Target>, Response> {
    let targets = CONTACTS.targets(body, key_required)?;
    for (_, fields) in &targets {
        check_columns(state, fields)?;
    }
    Ok(targets)
}

/// `UpdateMultiple` on a standard table: every target exists and is valid,
/// or nothing is written.
fn update_multiple(state: &mut SimState, body: &[u8], user: &str) -> Response {
    let rows = match targets(state, body, true) {
        Ok(rows) => rows,
        Err(response) => return response,
    };
    let mut positions = Vec::with_capacity(rows.len());
    for (id, _) in &rows {
        let id = id.as_deref().unwrap_or_default();
        match state.contact_position(id) {
            Some(at) => positions.push(at),
            None => return CONTACTS.does_not_exist(id),
        }
    }
    for ((id, mut fields), at) in rows.into_iter().zip(positions) {
        truncate_times(state, &mut fields);
        write_columns(&mut state.contacts[at], &fields);
        // Update steps fire for every record of the bulk message.
        crate::webhooks::contact_written(state, "Update", &id.unwrap_or_default(), &fields, user);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `CreateMultiple`: all the targets are created, or none; the answer lists
/// their ids in order.
fn create_multiple(state: &mut SimState, body: &[u8], user: &str) -> Response {
    let rows = match targets(state, body, false) {
        Ok(rows) => rows,
        Err(response) => return response,
    };
    for (id, _) in &rows {
        if let Some(id) = id {
            if state.contact_position(id).is_some() {
                return odata_error(
                    412,
                    "0x80040237",
                    "A record with matching key values already exists.",
                );
            }
        }
    }
    // Unique keys: against the table and within the batch (all or nothing).
    for (i, (_, fields)) in rows.iter().enumerate() {
        if let Some(refusal) = crate::keys::conflict(state, fields, None) {
            return refusal;
        }
        let earlier = rows[..i].iter().map(|(_, f)| f);
        if let Some(refusal) = crate::keys::conflict_in(&state.contact_keys, earlier, fields, None)
        {
            return refusal;
        }
    }
    let mut ids = Vec::with_capacity(rows.len());
    for (id, mut fields) in rows {
        truncate_times(state, &mut fields);
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut row = fields.clone();
        row.insert("contactid".into(), json!(id));
        let row = with_defaults(&state.columns, row);
        state.push_contact(row);
        crate::webhooks::contact_written(state, "Create", &id, &fields, user);
        ids.push(id);
    }
    created_many(&state.base_url, ids)
}
