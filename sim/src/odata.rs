//! What every simulated Dataverse table answers with: the API root, column
//! types, and OData error bodies as Dataverse writes them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub const API_PATH: &str = "/api/data/v9.2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Uniqueidentifier,
    String,
    Boolean,
    /// A choice (option set): an integer in JSON.
    Picklist,
    /// A date and time, kept to the second in UTC: `2026-11-27T09:15:30Z`.
    DateTime,
}

impl ColumnType {
    /// The `AttributeType` the metadata reports.
    pub fn attribute_type(self) -> &'static str {
        match self {
            ColumnType::Uniqueidentifier => "Uniqueidentifier",
            ColumnType::String => "String",
            ColumnType::Boolean => "Boolean",
            ColumnType::Picklist => "Picklist",
            ColumnType::DateTime => "DateTime",
        }
    }
}

pub fn odata_error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

pub fn fault_response(status: u16, retry_after: Option<u64>) -> Response {
    let (code, message) = match status {
        429 => (
            "0x80072322",
            "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
        ),
        503 => ("0x80072321", "The service is temporarily unavailable."),
        401 => (
            "0x80072560",
            "The user is not a member of the organization.",
        ),
        _ => ("0x80040216", "An unexpected error occurred."),
    };
    let mut response = odata_error(status, code, message);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
