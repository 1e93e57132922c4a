//! Entra ID's token endpoint, client credentials grant:
//! `POST /{tenant}/oauth2/v2.0/token`, form-encoded.

use std::collections::HashMap;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::SimState;

fn refusal(status: u16, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: 0e5c3a1e-7a55-4b7e-9d8e-1c0a9b8f7e00\r\nCorrelation ID: 4b1f0c2d-5e6a-4d7b-8c9e-0f1a2b3c4d5e\r\nTimestamp: 2026-11-26 10:00:00Z"),
        "error_codes": [code],
        "timestamp": "2026-11-26 10:00:00Z",
        "trace_id": "0e5c3a1e-7a55-4b7e-9d8e-1c0a9b8f7e00",
        "correlation_id": "4b1f0c2d-5e6a-4d7b-8c9e-0f1a2b3c4d5e",
        "error_uri": "https://login.microsoftonline.com/error?code=".to_string() + &code.to_string()
    });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(body),
    )
        .into_response()
}

pub fn fault_response(status: u16, retry_after: Option<u64>) -> Response {
    let mut response = refusal(
        status,
        "temporarily_unavailable",
        50196,
        "The server is temporarily unavailable.",
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

pub fn token(state: &mut SimState, method: &Method, path: &str, body: &[u8]) -> Response {
    if method != Method::POST {
        return refusal(
            405,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    state.token_requests += 1;
    let tenant = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    if tenant != state.identity.tenant_id {
        return refusal(
            400,
            "invalid_tenant",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let expected_scope = format!("{}/.default", state.base_url);
    // Each form field as Entra ID checks it, with its refusal: status,
    // error, AADSTS code, description.
    let checks: [(&str, &str, u16, &str, u32, &str); 4] = [
        (
            "grant_type",
            "client_credentials",
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ),
        (
            "client_id",
            &state.identity.client_id,
            400,
            "unauthorized_client",
            700016,
            "Application with identifier was not found in the directory.",
        ),
        (
            "client_secret",
            &state.identity.client_secret,
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        ),
        (
            "scope",
            &expected_scope,
            400,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        ),
    ];
    for (name, expected, status, error, code, description) in checks {
        if field(name) != expected {
            return refusal(status, error, code, description);
        }
    }
    let access_token = format!("sim.{}", uuid::Uuid::new_v4().simple());
    state.issued_tokens.insert(access_token.clone());
    let expires_in = if state.token_lifetime_as_text {
        json!(state.token_lifetime.to_string())
    } else {
        json!(state.token_lifetime)
    };
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token
    }))
    .into_response()
}
