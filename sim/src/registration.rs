//! The tables a webhook registration lives in — `serviceendpoints`,
//! `sdkmessages`, `sdkmessagefilters`, `sdkmessageprocessingsteps`,
//! `sdkmessageprocessingstepimages`, `asyncoperations` — with `$select`,
//! the query options of `query`, `@odata.bind` lookups, and Dataverse's rules where
//! consent-sync could break them: `authvalue` is never returned, a step needs
//! its message, filter and handler, a service endpoint with steps cannot be
//! deleted, a step's images go with it.

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::odata::odata_error;
pub use crate::schema::*;
use crate::table::{created_many, not_an_object, Columns, Row, Schema};
use crate::{Request, SimState};

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: Schema,
    /// Columns a client may write (lookups through `@odata.bind`).
    pub writable: &'static [&'static str],
    /// Navigation property -> (lookup column, entity set it points to).
    pub lookups: &'static [(&'static str, &'static str, &'static str)],
    pub rows: Vec<Map<String, Value>>,
}

fn row(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// The registration tables of a new environment: the messages and contact
/// filters, and one registration that is not consent-sync's (an audit
/// webhook on accounts), which consent-sync must leave alone.
pub fn standard_tables() -> BTreeMap<&'static str, Table> {
    let filter = |id: &str, message: &str, entity: &str| {
        row(
            json!({"sdkmessagefilterid": id, "_sdkmessageid_value": message, "primaryobjecttypecode": entity, "iscustomprocessingstepallowed": true}),
        )
    };
    let mut tables = BTreeMap::new();
    tables.insert(
        "sdkmessages",
        Table {
            schema: Schema {
                entity: "sdkmessage",
                set: "sdkmessages",
                primary_key: "sdkmessageid",
            },
            writable: &[],
            lookups: &[],
            rows: vec![
                row(json!({"sdkmessageid": MESSAGE_CREATE, "name": "Create"})),
                row(json!({"sdkmessageid": MESSAGE_UPDATE, "name": "Update"})),
                row(json!({"sdkmessageid": MESSAGE_DELETE, "name": "Delete"})),
            ],
        },
    );
    tables.insert(
        "sdkmessagefilters",
        Table {
            schema: Schema {
                entity: "sdkmessagefilter",
                set: "sdkmessagefilters",
                primary_key: "sdkmessagefilterid",
            },
            writable: &[],
            lookups: &[],
            rows: vec![
                filter(
                    "c2c5bb1b-ea3e-db11-86a7-000a3a5473e8",
                    MESSAGE_CREATE,
                    "contact",
                ),
                filter(
                    "c3c5bb1b-ea3e-db11-86a7-000a3a5473e8",
                    MESSAGE_UPDATE,
                    "contact",
                ),
                filter(
                    "c4c5bb1b-ea3e-db11-86a7-000a3a5473e8",
                    MESSAGE_DELETE,
                    "contact",
                ),
                filter(
                    "a1c5bb1b-ea3e-db11-86a7-000a3a5473e8",
                    MESSAGE_UPDATE,
                    "account",
                ),
                filter(
                    "d2c5bb1b-ea3e-db11-86a7-000a3a5473e8",
                    MESSAGE_CREATE,
                    CONSENT_ENTITY,
                ),
                filter(
                    "d3c5bb1b-ea3e-db11-86a7-000a3a5473e8",
                    MESSAGE_UPDATE,
                    CONSENT_ENTITY,
                ),
            ],
        },
    );
    tables.insert(
        "serviceendpoints",
        Table {
            schema: Schema { entity: "serviceendpoint", set: "serviceendpoints", primary_key: "serviceendpointid" },
            writable: &["name", "url", "contract", "authtype", "messageformat", "authvalue", "description", "namespaceaddress"],
            lookups: &[],
            rows: vec![row(json!({
                "serviceendpointid": "5e2b1a00-0000-4000-8000-00000000a0d1",
                "name": "Contoso audit",
                "url": "https://audit.contoso.example/hook",
                "contract": 8, "authtype": 5, "messageformat": 2,
                "authvalue": "<settings><setting name=\"x-audit\" value=\"audit-secret\"/></settings>",
                "description": "Audit trail of account changes"
            }))],
        },
    );
    tables.insert(
        "sdkmessageprocessingsteps",
        Table {
            schema: Schema {
                entity: "sdkmessageprocessingstep",
                set: "sdkmessageprocessingsteps",
                primary_key: "sdkmessageprocessingstepid",
            },
            writable: &[
                "name",
                "description",
                "stage",
                "mode",
                "rank",
                "supporteddeployment",
                "asyncautodelete",
                "filteringattributes",
                "statecode",
                "statuscode",
            ],
            lookups: &[
                (
                    "eventhandler_serviceendpoint",
                    "_eventhandler_value",
                    "serviceendpoints",
                ),
                ("sdkmessageid", "_sdkmessageid_value", "sdkmessages"),
                (
                    "sdkmessagefilterid",
                    "_sdkmessagefilterid_value",
                    "sdkmessagefilters",
                ),
            ],
            rows: vec![row(json!({
                "sdkmessageprocessingstepid": "5e2b1a00-0000-4000-8000-00000000a0d2",
                "name": "Contoso audit: account Update",
                "stage": 40, "mode": 1, "rank": 1, "statecode": 0, "statuscode": 1,
                "filteringattributes": "name",
                "_eventhandler_value": "5e2b1a00-0000-4000-8000-00000000a0d1",
                "_sdkmessageid_value": MESSAGE_UPDATE,
                "_sdkmessagefilterid_value": "a1c5bb1b-ea3e-db11-86a7-000a3a5473e8"
            }))],
        },
    );
    tables.insert(
        "sdkmessageprocessingstepimages",
        Table {
            schema: Schema {
                entity: "sdkmessageprocessingstepimage",
                set: "sdkmessageprocessingstepimages",
                primary_key: "sdkmessageprocessingstepimageid",
            },
            writable: &[
                "name",
                "entityalias",
                "imagetype",
                "messagepropertyname",
                "attributes",
            ],
            lookups: &[(
                "sdkmessageprocessingstepid",
                "_sdkmessageprocessingstepid_value",
                "sdkmessageprocessingsteps",
            )],
            rows: vec![row(json!({
                "sdkmessageprocessingstepimageid": "5e2b1a00-0000-4000-8000-00000000a0d3",
                "name": "audit image", "entityalias": "audit", "imagetype": 1,
                "messagepropertyname": "Target", "attributes": "name",
                "_sdkmessageprocessingstepid_value": "5e2b1a00-0000-4000-8000-00000000a0d2"
            }))],
        },
    );
    tables.insert(
        "msdynmkt_purposes",
        Table {
            schema: Schema { entity: "msdynmkt_purpose", set: "msdynmkt_purposes", primary_key: "msdynmkt_purposeid" },
            writable: &[],
            lookups: &[],
            rows: vec![
                row(json!({"msdynmkt_purposeid": PURPOSE_NEWSLETTER, "msdynmkt_name": "Newsletter",
                    "msdynmkt_enforcementmodel": RESTRICTIVE, "msdynmkt_smsenforcementmodel": RESTRICTIVE,
                    "msdynmkt_voiceenforcementmodel": RESTRICTIVE, "msdynmkt_customenforcementmodel": RESTRICTIVE})),
                row(json!({"msdynmkt_purposeid": PURPOSE_MARKETING, "msdynmkt_name": "Commercial communications",
                    "msdynmkt_enforcementmodel": NON_RESTRICTIVE, "msdynmkt_smsenforcementmodel": RESTRICTIVE,
                    "msdynmkt_voiceenforcementmodel": NON_RESTRICTIVE, "msdynmkt_customenforcementmodel": NON_RESTRICTIVE})),
            ],
        },
    );
    tables.insert(
        "msdynmkt_topics",
        Table {
            schema: Schema { entity: "msdynmkt_topic", set: "msdynmkt_topics", primary_key: "msdynmkt_topicid" },
            writable: &[],
            lookups: &[],
            rows: vec![
                row(json!({"msdynmkt_topicid": TOPIC_SPORTS, "msdynmkt_name": "Sports", "_msdynmkt_purposeid_value": PURPOSE_NEWSLETTER})),
                row(json!({"msdynmkt_topicid": TOPIC_NEWS, "msdynmkt_name": "News", "_msdynmkt_purposeid_value": PURPOSE_NEWSLETTER})),
            ],
        },
    );
    tables.insert(
        CONSENT_SET,
        Table {
            schema: Schema {
                entity: CONSENT_ENTITY,
                set: CONSENT_SET,
                primary_key: "msdynmkt_contactpointconsent4id",
            },
            writable: &[
                "msdynmkt_contactpointvalue",
                "msdynmkt_contactpointtype",
                "msdynmkt_value",
                "msdynmkt_contactpointconsenttype",
                "msdynmkt_source",
                "msdynmkt_logicalreason",
                "msdynmkt_reason",
                "msdynmkt_modifiedonbehalf",
                "statecode",
                "statuscode",
            ],
            // Navigation properties are case-sensitive: `msdynmkt_purposeId`.
            lookups: &[
                (
                    "msdynmkt_purposeId",
                    "_msdynmkt_purposeid_value",
                    "msdynmkt_purposes",
                ),
                (
                    "msdynmkt_topicId",
                    "_msdynmkt_topicid_value",
                    "msdynmkt_topics",
                ),
            ],
            rows: vec![],
        },
    );
    tables.insert(
        "asyncoperations",
        Table {
            schema: Schema {
                entity: "asyncoperation",
                set: "asyncoperations",
                primary_key: "asyncoperationid",
            },
            writable: &[],
            lookups: &[],
            rows: vec![],
        },
    );
    tables
}

fn project(table: &Table, row: &Row, columns: &Columns) -> Row {
    let mut out = table.schema.project(row, columns, Row::clone);
    // Dataverse never returns a service endpoint's key.
    out.remove("authvalue");
    out
}

fn bad_request(message: &str) -> Response {
    odata_error(400, "0x80040203", message)
}

/// Whether the table has `column`: its key, what may be written, its
/// lookups, what a row holds, and the system columns the tables share.
fn known(table: &Table, column: &str) -> bool {
    column == table.schema.primary_key
        || table.writable.contains(&column)
        || table.lookups.iter().any(|(_, lookup, _)| *lookup == column)
        || table.rows.iter().any(|r| r.contains_key(column))
        || matches!(
            column,
            "statecode"
                | "statuscode"
                | "createdon"
                | "modifiedon"
                | "completedon"
                | "message"
                | "friendlymessage"
                | "_owningextensionid_value"
                | "errorcode"
                | "name"
                | "operationtype"
                | "primaryobjecttypecode"
                | "_sdkmessageid_value"
        )
}

/// Serves `entity_set` or `entity_set(id)`; `None` when it is not a
/// registration table.
pub fn serve(state: &mut SimState, request: &Request<'_>, user: &str) -> Option<Response> {
    let (method, path, params, headers, body) = request.parts();
    if let Some((set, message)) = path.split_once("/Microsoft.Dynamics.CRM.") {
        if set == CONSENT_SET && method == Method::POST {
            return Some(bulk(state, set, message, body, user));
        }
    }
    let (set, id) = match path.split_once('(') {
        Some((set, rest)) => (set, Some(rest.strip_suffix(')')?.to_string())),
        None => (path, None),
    };
    let table = state.tables.get(set)?;
    Some(match (method, id) {
        (&Method::GET, None) => table.schema.query(
            &state.base_url,
            table.rows.iter(),
            params,
            headers,
            |column| known(table, column),
            |row, columns| project(table, row, columns),
        ),
        (&Method::GET, Some(id)) => {
            match (
                find(table, &id),
                table.schema.select(params, |c| known(table, c)),
            ) {
                (_, Err(response)) => response,
                (Some(index), Ok(columns)) => {
                    axum::Json(project(table, &table.rows[index], &columns)).into_response()
                }
                (None, Ok(_)) => table.schema.does_not_exist(&id),
            }
        }
        (&Method::POST, None) => create(state, set, body, user),
        (&Method::PATCH, Some(id)) => update(state, set, &id, body, user),
        (&Method::DELETE, Some(id)) => delete(state, set, &id),
        _ => odata_error(
            405,
            "0x80060888",
            "The method is not allowed on this resource.",
        ),
    })
}

/// A bulk target checked: its row's position (updates), id, the row as it
/// will be, and the columns sent.
type BulkRow = (
    Option<usize>,
    String,
    Map<String, Value>,
    Map<String, Value>,
);

/// `UpdateMultiple` / `CreateMultiple` on the consent table: every target
/// valid (its `@odata.type`, its primary key to update, known columns, choice
/// values in range, existing rows), or nothing is written.
fn bulk(state: &mut SimState, set: &str, message: &str, body: &[u8], user: &str) -> Response {
    let update = match message {
        "UpdateMultiple" => true,
        "CreateMultiple" => false,
        _ => {
            return odata_error(
                404,
                "0x80060888",
                &format!("Resource not found for the segment '{message}'."),
            )
        }
    };
    let schema = state.tables[set].schema;
    let targets = match schema.targets(body, update) {
        Ok(targets) => targets,
        Err(response) => return response,
    };
    let mut rows: Vec<BulkRow> = Vec::new();
    for (id, target) in targets {
        let sent = match fields_of(state, set, target) {
            Ok(fields) => fields,
            Err(response) => return response,
        };
        let (index, id, mut row) = match (update, id) {
            (true, None) => unreachable!("the targets of an update carry their key"),
            (true, Some(id)) => match find(&state.tables[set], &id) {
                Some(index) => (Some(index), id, state.tables[set].rows[index].clone()),
                None => return schema.does_not_exist(&id),
            },
            (false, id) => {
                let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let mut row = Map::new();
                row.insert(schema.primary_key.into(), json!(id));
                row.insert("statecode".into(), json!(0));
                row.insert("statuscode".into(), json!(1));
                row.insert("msdynmkt_value".into(), json!(534_120_000));
                (None, id, row)
            }
        };
        row.extend(sent.clone());
        row.insert("modifiedon".into(), json!(crate::didomi::iso_seconds()));
        if let Err(response) = validate(set, &row) {
            return response;
        }
        rows.push((index, id, row, sent));
    }
    let mut ids = Vec::with_capacity(rows.len());
    for (index, id, row, sent) in rows {
        let table = state.tables.get_mut(set).expect("known");
        match index {
            Some(index) => table.rows[index] = row.clone(),
            None => table.rows.push(row.clone()),
        }
        let message = if update { "Update" } else { "Create" };
        crate::webhooks::row_written(state, CONSENT_ENTITY, message, &id, &row, &sent, user);
        ids.push(id);
    }
    if update {
        StatusCode::NO_CONTENT.into_response()
    } else {
        created_many(&state.base_url, ids)
    }
}

fn text_of(row: &Map<String, Value>, column: &str) -> String {
    row.get(column)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn find(table: &Table, id: &str) -> Option<usize> {
    table.rows.iter().position(|r| {
        r.get(table.schema.primary_key)
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(id))
    })
}

/// The body's columns, with `@odata.bind` lookups resolved to their columns.
fn fields(state: &SimState, set: &str, body: &[u8]) -> Result<Map<String, Value>, Response> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(not_an_object("The request body"));
    };
    fields_of(state, set, body)
}

fn fields_of(
    state: &SimState,
    set: &str,
    body: Map<String, Value>,
) -> Result<Map<String, Value>, Response> {
    let table = &state.tables[set];
    let mut fields = Map::new();
    for (name, value) in body {
        if let Some(navigation) = name.strip_suffix("@odata.bind") {
            let Some((_, column, target)) = table.lookups.iter().find(|(n, _, _)| *n == navigation)
            else {
                return Err(odata_error(
                    400,
                    "0x80060888",
                    &format!("An undeclared property '{navigation}' which only has property annotations in the payload but no property value was found in the payload."),
                ));
            };
            let reference = value.as_str().unwrap_or_default();
            let id = reference
                .trim_start_matches('/')
                .strip_prefix(target)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'));
            let Some(id) = id else {
                return Err(bad_request(&format!(
                    "Bad reference {reference:?} for {navigation}"
                )));
            };
            if find(&state.tables[target], id).is_none() {
                return Err(state.tables[target].schema.does_not_exist(id));
            }
            fields.insert(column.to_string(), json!(id));
        } else if table.writable.contains(&name.as_str()) {
            fields.insert(name, value);
        } else {
            return Err(odata_error(
                400,
                "0x80060888",
                &format!("Invalid property '{name}' was found in entity '{set}'."),
            ));
        }
    }
    Ok(fields)
}

/// The checks Dataverse makes that a mistaken registration would trip.
fn validate(set: &str, row: &Map<String, Value>) -> Result<(), Response> {
    let number = |c: &str| row.get(c).and_then(Value::as_i64);
    let text = |c: &str| row.get(c).and_then(Value::as_str).unwrap_or_default();
    match set {
        "serviceendpoints" => {
            if number("contract") == Some(8) && !text("url").starts_with("http") {
                return Err(bad_request("A webhook needs an absolute url."));
            }
            if number("authtype") == Some(5) && !text("authvalue").starts_with("<settings>") {
                return Err(bad_request(
                    "HttpHeader authentication needs an authvalue of <settings>.",
                ));
            }
        }
        "sdkmessageprocessingsteps" => {
            for required in ["_sdkmessageid_value", "_eventhandler_value", "name"] {
                if row.get(required).is_none_or(Value::is_null) {
                    return Err(bad_request(&format!("{required} is required for a step.")));
                }
            }
            if number("mode") == Some(1) && number("stage") != Some(40) {
                return Err(bad_request(
                    "Asynchronous steps are only supported in the post-operation stage.",
                ));
            }
        }
        CONSENT_SET => {
            for (column, value) in row {
                let Some(ranges) = consent_choice_range(column) else {
                    continue;
                };
                let fits = value.is_null()
                    || value
                        .as_i64()
                        .is_some_and(|v| ranges.iter().any(|r| r.contains(&v)));
                if !fits {
                    return Err(odata_error(
                        400,
                        "0x8004431a",
                        &format!("A validation error occurred. The value {value} of '{column}' on record of type 'msdynmkt_contactpointconsent4' is outside the valid range."),
                    ));
                }
            }
            for required in ["msdynmkt_contactpointvalue", "msdynmkt_contactpointtype"] {
                if text(required).is_empty() && number(required).is_none() {
                    return Err(bad_request(&format!("{required} is required.")));
                }
            }
        }
        "sdkmessageprocessingstepimages" if !matches!(number("imagetype"), Some(0..=2)) => {
            return Err(odata_error(
                400,
                "0x8004431a",
                "imagetype is outside the valid range.",
            ));
        }
        _ => {}
    }
    Ok(())
}

fn create(state: &mut SimState, set: &str, body: &[u8], user: &str) -> Response {
    let mut row = match fields(state, set, body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let sent = row.clone();
    if state.tables[set].writable.is_empty() {
        return odata_error(
            405,
            "0x80040220",
            &format!("Rows of {set} cannot be created."),
        );
    }
    let schema = state.tables[set].schema;
    let id = uuid::Uuid::new_v4().to_string();
    row.insert(schema.primary_key.into(), json!(id));
    if set == "sdkmessageprocessingsteps" || set == CONSENT_SET {
        row.entry("statecode").or_insert(json!(0));
        row.entry("statuscode").or_insert(json!(1));
    }
    if set == CONSENT_SET {
        row.entry("msdynmkt_value").or_insert(json!(534_120_000));
        row.insert("modifiedon".into(), json!(crate::didomi::iso_seconds()));
    }
    if let Err(response) = validate(set, &row) {
        return response;
    }
    state
        .tables
        .get_mut(set)
        .expect("known")
        .rows
        .push(row.clone());
    if set == CONSENT_SET {
        crate::webhooks::row_written(state, CONSENT_ENTITY, "Create", &id, &row, &sent, user);
    }
    schema.created(&state.base_url, &id)
}

fn update(state: &mut SimState, set: &str, id: &str, body: &[u8], user: &str) -> Response {
    let fields = match fields(state, set, body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let Some(index) = find(&state.tables[set], id) else {
        return state.tables[set].schema.does_not_exist(id);
    };
    let mut row = state.tables[set].rows[index].clone();
    row.extend(fields.clone());
    if set == CONSENT_SET {
        row.insert("modifiedon".into(), json!(crate::didomi::iso_seconds()));
    }
    if let Err(response) = validate(set, &row) {
        return response;
    }
    state.tables.get_mut(set).expect("known").rows[index] = row.clone();
    if set == CONSENT_SET {
        let id = text_of(&row, state.tables[set].schema.primary_key);
        crate::webhooks::row_written(state, CONSENT_ENTITY, "Update", &id, &row, &fields, user);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn delete(state: &mut SimState, set: &str, id: &str) -> Response {
    let Some(index) = find(&state.tables[set], id) else {
        return state.tables[set].schema.does_not_exist(id);
    };
    let references = |table: &str, column: &str| {
        state.tables[table]
            .rows
            .iter()
            .filter(|r| {
                r.get(column)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(id))
            })
            .count()
    };
    match set {
        "serviceendpoints"
            if references("sdkmessageprocessingsteps", "_eventhandler_value") > 0 =>
        {
            return odata_error(
                400,
                "0x80040227",
                "The service endpoint cannot be deleted because steps are registered on it.",
            )
        }
        "sdkmessageprocessingsteps" => {
            // A step's images are deleted with it.
            state
                .tables
                .get_mut("sdkmessageprocessingstepimages")
                .expect("known")
                .rows
                .retain(|r| {
                    r.get("_sdkmessageprocessingstepid_value")
                        .and_then(Value::as_str)
                        != Some(id)
                });
        }
        "sdkmessages" | "sdkmessagefilters" | "asyncoperations" => {
            return odata_error(
                403,
                "0x80040220",
                &format!("Rows of {set} cannot be deleted."),
            )
        }
        _ => {}
    }
    state.tables.get_mut(set).expect("known").rows.remove(index);
    StatusCode::NO_CONTENT.into_response()
}
