//! The engine every simulated Dataverse table runs on. A table is data: its
//! logical name, entity set and primary key ([`Schema`]), which columns it
//! knows, and its rows. The engine answers what Dataverse answers for any
//! table: a row by id, a query (`$select`, the options of `query`, paging),
//! the `Targets` of a bulk message, a create's `OData-EntityId`, and the
//! errors for a row that does not exist or a column that is not there. What
//! is particular to a table — the contact table's typed columns, row
//! versions and alternate keys; the registration tables' lookups and checks
//! — stays with that table.

// Early returns carry the finished HTTP answer; boxing it would only add noise
// to a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::odata::{odata_error, API_PATH};
use crate::query::Query;

pub type Row = Map<String, Value>;

/// A bulk target: its primary key (when given) and its columns.
pub type Target = (Option<String>, Row);

/// What names a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The logical name, e.g. `contact`.
    pub entity: &'static str,
    /// The entity set the Web API serves it under, e.g. `contacts`.
    pub set: &'static str,
    pub primary_key: &'static str,
}

pub const CONTACTS: Schema = Schema {
    entity: "contact",
    set: "contacts",
    primary_key: "contactid",
};

/// The columns an answer carries: those of `$select` (with the primary
/// key), or every column.
pub enum Columns<'a> {
    Selected(Vec<&'a str>),
    All,
}

/// Rows per page without `Prefer: odata.maxpagesize`, as Dataverse pages.
const MAX_PAGE_SIZE: usize = 5000;

impl Schema {
    pub fn does_not_exist(&self, id: &str) -> Response {
        odata_error(
            404,
            "0x80040217",
            &format!("{} With Id = {id} Does Not Exist", self.entity),
        )
    }

    pub fn no_property(&self, name: &str) -> Response {
        odata_error(
            400,
            "0x80060888",
            &format!(
                "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.",
                self.entity
            ),
        )
    }

    /// The columns `$select` asks for, each one the table knows.
    pub fn select<'a>(
        &self,
        params: &'a HashMap<String, String>,
        known: impl Fn(&str) -> bool,
    ) -> Result<Columns<'a>, Response> {
        let Some(select) = params.get("$select") else {
            return Ok(Columns::All);
        };
        let columns: Vec<&str> = select.split(',').map(str::trim).collect();
        match columns.iter().find(|c| !known(c)) {
            Some(unknown) => Err(self.no_property(unknown)),
            None => Ok(Columns::Selected(columns)),
        }
    }

    /// A row as an answer carries it: the selected columns and the primary
    /// key, or what `all` makes of the whole row.
    pub fn project(&self, row: &Row, columns: &Columns, all: impl FnOnce(&Row) -> Row) -> Row {
        match columns {
            Columns::Selected(columns) => {
                let mut out: Row = columns
                    .iter()
                    .map(|c| (c.to_string(), row.get(*c).cloned().unwrap_or(Value::Null)))
                    .collect();
                let key = row.get(self.primary_key).cloned().unwrap_or(Value::Null);
                out.insert(self.primary_key.into(), key);
                out
            }
            Columns::All => all(row),
        }
    }

    /// A query of `rows`: `$select`, `$filter`, `$orderby` and `$top`, every
    /// column named known to the table, answered in pages (`Prefer:
    /// odata.maxpagesize=N`, at most 5,000; an opaque `$skiptoken` in
    /// `@odata.nextLink`, to follow as given).
    pub fn query<'r>(
        &self,
        base_url: &str,
        rows: impl Iterator<Item = &'r Row>,
        params: &HashMap<String, String>,
        headers: &HeaderMap,
        known: impl Fn(&str) -> bool,
        project: impl Fn(&Row, &Columns) -> Row,
    ) -> Response {
        let columns = match self.select(params, &known) {
            Ok(columns) => columns,
            Err(response) => return response,
        };
        let query = match Query::parse(params) {
            Ok(query) => query,
            Err(message) => return odata_error(400, "0x80060888", &message),
        };
        if let Some(unknown) = query.columns().find(|c| !known(c)) {
            return self.no_property(unknown);
        }
        let matches = query.apply(rows);
        let requested = headers
            .get("prefer")
            .and_then(|v| v.to_str().ok())
            .and_then(|p| {
                p.split(',')
                    .find_map(|part| part.trim().strip_prefix("odata.maxpagesize="))
                    .and_then(|n| n.trim().parse::<usize>().ok())
            });
        let page_size = requested.unwrap_or(MAX_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE);
        let start = match params.get("$skiptoken") {
            None => 0,
            Some(token) => match token
                .strip_prefix("<cookie pagenumber=\"")
                .and_then(|t| t.split('"').next())
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(page) => page.saturating_sub(1) * page_size,
                None => return odata_error(400, "0x80060888", "The $skiptoken is not valid."),
            },
        };
        let page: Vec<Row> = matches
            .iter()
            .skip(start)
            .take(page_size)
            .map(|row| project(row, &columns))
            .collect();
        let context = match &columns {
            Columns::Selected(columns) => format!("{}({})", self.set, columns.join(",")),
            Columns::All => self.set.to_string(),
        };
        let mut body = json!({
            "@odata.context": format!("{base_url}{API_PATH}/$metadata#{context}"),
            "value": page
        });
        if start + page_size < matches.len() {
            let mut query: Vec<(String, String)> = params
                .iter()
                .filter(|(k, _)| *k != "$skiptoken")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            query.sort();
            let next_page = start / page_size + 2;
            query.push((
                "$skiptoken".into(),
                format!("<cookie pagenumber=\"{next_page}\" istracking=\"False\" />"),
            ));
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            body["@odata.nextLink"] = json!(format!("{base_url}{API_PATH}/{}?{encoded}", self.set));
        }
        let mut response = axum::Json(body).into_response();
        if let Some(size) = requested {
            response.headers_mut().insert(
                "Preference-Applied",
                HeaderValue::from_str(&format!("odata.maxpagesize={size}")).expect("ascii"),
            );
        }
        response
    }

    /// The `Targets` of a bulk message (`UpdateMultiple`, `CreateMultiple`):
    /// rows of this table, each with its `@odata.type`, and with its primary
    /// key when `key_required`. The columns are the table's to check.
    pub fn targets(&self, body: &[u8], key_required: bool) -> Result<Vec<Target>, Response> {
        let targets = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut request)) => match request.remove("Targets") {
                Some(Value::Array(targets)) if !targets.is_empty() => targets,
                _ => {
                    return Err(odata_error(
                        400,
                        "0x80040203",
                        "Required parameter 'Targets' is missing or empty.",
                    ))
                }
            },
            _ => return Err(not_an_object("The request body")),
        };
        let odata_type = format!("Microsoft.Dynamics.CRM.{}", self.entity);
        let mut rows = Vec::with_capacity(targets.len());
        for target in targets {
            let Value::Object(mut fields) = target else {
                return Err(not_an_object("A target"));
            };
            match fields.remove("@odata.type") {
                Some(Value::String(kind)) if kind == odata_type => {}
                _ => {
                    return Err(odata_error(
                        400,
                        "0x80048d19",
                        &format!("Error identified in Payload provided by the user for Entity :'', For input string: '@odata.type'. Every target needs '@odata.type': '{odata_type}'."),
                    ))
                }
            }
            let id = match fields.remove(self.primary_key) {
                Some(Value::String(id)) => Some(id),
                None | Some(Value::Null) if !key_required => None,
                _ => {
                    return Err(odata_error(
                        400,
                        "0x80040203",
                        &format!("Required field '{}' is missing in a target: UpdateMultiple needs every record's primary key.", self.primary_key),
                    ))
                }
            };
            rows.push((id, fields));
        }
        Ok(rows)
    }

    /// The answer to a create (or an upsert): 204 with the row's
    /// `OData-EntityId`.
    pub fn created(&self, base_url: &str, id: &str) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let entity_id = format!("{base_url}{API_PATH}/{}({id})", self.set);
        response.headers_mut().insert(
            "OData-EntityId",
            HeaderValue::from_str(&entity_id).expect("ascii"),
        );
        response
    }
}

/// The answer to `CreateMultiple`: the ids created, in the targets' order.
pub fn created_many(base_url: &str, ids: Vec<String>) -> Response {
    axum::Json(json!({
        "@odata.context": format!("{base_url}{API_PATH}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"),
        "Ids": ids
    }))
    .into_response()
}

pub fn not_an_object(what: &str) -> Response {
    odata_error(400, "0x80040216", &format!("{what} is not a JSON object."))
}
