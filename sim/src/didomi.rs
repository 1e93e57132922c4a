//! The Didomi API (`/v1/…`), as far as consent-sync uses it: sessions from an
//! API key (a JWT with `exp`), consent events, users with cursor paging, the
//! organization's purposes with `$limit`/`$skip` paging, and Didomi's error
//! bodies. A consent event updates its user's status and, when
//! a webhook target is set, is delivered to it as `event.created`, as
//! Didomi's webhooks do.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::{Outgoing, Request, SimState};

/// Users per page of `/consents/users`, as Didomi pages them.
pub const PAGE_SIZE: usize = 100;

/// Didomi's error body: `{"code", "errors", "message", "name"}`.
pub fn error(status: u16, name: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({"code": status, "errors": {}, "message": message, "name": name})),
    )
        .into_response()
}

pub fn fault_response(status: u16, retry_after: Option<u64>) -> Response {
    let name = match status {
        429 => "TooManyRequests",
        502 => "BadGateway",
        503 => "Unavailable",
        _ => "GeneralError",
    };
    let mut response = error(status, name, "The service is temporarily unavailable");
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn iso_now() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let seconds = (millis / 1000) as i64;
    let base = consent_sync_time(seconds);
    format!("{}.{:03}Z", base.trim_end_matches('Z'), millis % 1000)
}

/// Now, to the second, as Dataverse writes times.
pub fn iso_seconds() -> String {
    consent_sync_time(now() as i64)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
fn consent_sync_time(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let sod = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn jwt(lifetime: u64) -> String {
    let part = |value: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string().as_bytes())
    };
    let issued = now();
    format!(
        "{}.{}.{}",
        part(json!({"alg": "HS256", "typ": "JWT"})),
        part(
            json!({"iat": issued, "exp": issued + lifetime, "sub": uuid::Uuid::new_v4().to_string()})
        ),
        uuid::Uuid::new_v4().simple()
    )
}

pub fn serve(state: &mut SimState, request: &Request<'_>) -> Response {
    let (method, path, params, headers, body) = request.parts();
    if (method, path) == (&Method::POST, "/sessions") {
        return session(state, body);
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| state.didomi.tokens.contains(t)) {
        return error(401, "NotAuthenticated", "Invalid access token");
    }
    if params.get("organization_id") != Some(&state.didomi.organization_id) {
        return error(
            403,
            "Forbidden",
            "You are not allowed to access this organization",
        );
    }
    match (method, path) {
        (&Method::POST, "/consents/events") => create_event(state, body),
        (&Method::GET, "/consents/users") => users(state, params),
        (&Method::GET, "/metadata/purposes") => purposes(state, params),
        _ => error(404, "NotFound", &format!("Page not found: {path}")),
    }
}

fn session(state: &mut SimState, body: &[u8]) -> Response {
    state.didomi.session_requests += 1;
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(400, "BadRequest", "Invalid JSON body");
    };
    let valid = request["type"] == "api-key"
        && request["key"] == state.didomi.api_key.as_str()
        && request["secret"] == state.didomi.api_secret.as_str();
    if !valid {
        return error(400, "BadRequest", "Invalid authentication information");
    }
    let token = jwt(state.didomi.token_lifetime);
    state.didomi.tokens.insert(token.clone());
    axum::Json(json!({"access_token": token})).into_response()
}

fn create_event(state: &mut SimState, body: &[u8]) -> Response {
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(body) else {
        return error(400, "BadRequest", "The body must be a consent event object");
    };
    let user_id = event
        .get("user")
        .and_then(|u| u.get("organization_user_id"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let Some(user_id) = user_id else {
        return error(
            400,
            "BadRequest",
            "data.user should have required property 'organization_user_id'",
        );
    };
    let Some(Value::Object(consents)) = event.get("consents").cloned() else {
        return error(
            400,
            "BadRequest",
            "data should have required property 'consents'",
        );
    };
    for kind in ["purposes", "channels"] {
        if let Some(list) = consents.get(kind) {
            let ok = list.as_array().is_some_and(|items| {
                items.iter().all(|item| {
                    item.get("id").and_then(Value::as_str).is_some()
                        && item
                            .get("enabled")
                            .is_none_or(|e| e.is_boolean() || e.is_null())
                })
            });
            if !ok {
                return error(
                    400,
                    "BadRequest",
                    &format!("data.consents.{kind} should be an array of {{id, enabled}}"),
                );
            }
        }
    }
    let user = state.didomi.user_mut(&user_id);
    merge_consents(&mut user.consents, &consents);
    user.updated_at = iso_now();
    let user_entity = json!({"id": user.id, "organization_user_id": user_id, "metadata": {}});

    let id = uuid::Uuid::new_v4().to_string();
    event.insert("id".into(), json!(id));
    event.insert(
        "organization_id".into(),
        json!(state.didomi.organization_id),
    );
    event.insert("created_at".into(), json!(iso_now()));
    event.insert("updated_at".into(), event["created_at"].clone());
    event.insert("status".into(), json!("confirmed"));
    event.entry("regulation").or_insert_with(|| json!("gdpr"));
    event.insert("user".into(), user_entity);
    let event = Value::Object(event);
    state.didomi.events.push(event.clone());
    if let Some(url) = state.didomi.webhook_url.clone() {
        state.outgoing.push(Outgoing {
            url,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({"type": "event.created", "parameters": {"entity": event}}).to_string(),
            step_id: None,
        });
    }
    (StatusCode::CREATED, axum::Json(event)).into_response()
}

/// A purpose or channel named in an event replaces the user's choice of it;
/// preference values named in a purpose replace that preference.
fn merge_consents(status: &mut Map<String, Value>, event: &Map<String, Value>) {
    for kind in ["purposes", "channels"] {
        let Some(items) = event.get(kind).and_then(Value::as_array) else {
            continue;
        };
        let list = status
            .entry(kind)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("a list");
        for item in items {
            let id = &item["id"];
            match list.iter_mut().find(|existing| &existing["id"] == id) {
                Some(existing) => {
                    if let Some(enabled) = item.get("enabled").filter(|e| !e.is_null()) {
                        existing["enabled"] = enabled.clone();
                    }
                    if let Some(Value::Object(values)) = item.get("values") {
                        let target = existing
                            .as_object_mut()
                            .expect("an object")
                            .entry("values")
                            .or_insert_with(|| json!({}));
                        for (preference, value) in values {
                            target[preference] = value.clone();
                        }
                    }
                }
                None => list.push(item.clone()),
            }
        }
    }
}

fn users(state: &SimState, params: &HashMap<String, String>) -> Response {
    let wanted = params.get("organization_user_id");
    let start: usize = match params.get("$cursor") {
        None => 0,
        Some(cursor) => match cursor.parse() {
            Ok(start) => start,
            Err(_) => return error(400, "BadRequest", "Invalid cursor"),
        },
    };
    // Every user unless filtered: a slice, so that paging through a million
    // users does not copy the list for each page.
    let matching: Vec<&crate::DidomiUser> = match wanted {
        None => state
            .didomi
            .users
            .iter()
            .skip(start)
            .take(PAGE_SIZE + 1)
            .collect(),
        Some(wanted) => state
            .didomi
            .users
            .iter()
            .filter(|u| &u.organization_user_id == wanted)
            .skip(start)
            .take(PAGE_SIZE + 1)
            .collect(),
    };
    let page: Vec<Value> = matching
        .iter()
        .take(PAGE_SIZE)
        .map(|u| {
            json!({
                "id": u.id,
                "organization_id": state.didomi.organization_id,
                "organization_user_id": u.organization_user_id,
                "consents": u.consents,
                "metadata": {},
                "created_at": u.created_at,
                "updated_at": u.updated_at,
            })
        })
        .collect();
    let cursor = (matching.len() > PAGE_SIZE).then(|| (start + PAGE_SIZE).to_string());
    axum::Json(json!({"data": page, "limit": PAGE_SIZE, "cursor": cursor})).into_response()
}

/// The organization's purposes, as Didomi's `$limit`/`$skip` endpoints page
/// them: `{"total", "limit", "skip", "data"}`; a page holds at most the
/// organization's page cap, which may be fewer than asked.
fn purposes(state: &SimState, params: &HashMap<String, String>) -> Response {
    let number = |name: &str, default: usize| match params.get(name) {
        None => Some(default),
        Some(text) => text.parse::<usize>().ok(),
    };
    let (limit, skip) = match (number("$limit", 10), number("$skip", 0)) {
        (Some(limit), Some(skip)) => (limit, skip),
        _ => {
            return error(
                400,
                "BadRequest",
                "$limit and $skip must be non-negative integers",
            )
        }
    };
    let served = limit.min(state.didomi.purposes_page_cap);
    let data: Vec<&Value> = state
        .didomi
        .purposes
        .iter()
        .skip(skip)
        .take(served)
        .collect();
    axum::Json(json!({
        "total": state.didomi.purposes.len(),
        "limit": limit,
        "skip": skip,
        "data": data
    }))
    .into_response()
}

/// A Data Manager purpose as `/metadata/purposes` returns it.
pub fn purpose(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "description": name,
        "details": "",
        "namespaces": {},
        "metadata": {},
        "organization_id": "acme",
        "created_at": "2026-01-12T09:30:00.000Z",
        "updated_at": "2026-01-12T09:30:00.000Z"
    })
}

/// The sample organization's purposes: those the sample mappings name, and
/// one they do not.
pub fn sample_purposes() -> Vec<Value> {
    vec![
        purpose("marketing", "Commercial communications"),
        purpose("newsletter", "Newsletter"),
        purpose("profiling", "Profiling"),
        purpose("sports", "Sports"),
        purpose("surveys", "Surveys"),
    ]
}

impl crate::DidomiState {
    pub fn user_mut(&mut self, organization_user_id: &str) -> &mut crate::DidomiUser {
        let index = match self
            .users
            .iter()
            .position(|u| u.organization_user_id == organization_user_id)
        {
            Some(index) => index,
            None => {
                let at = iso_now();
                self.users.push(crate::DidomiUser {
                    id: uuid::Uuid::new_v4().to_string(),
                    organization_user_id: organization_user_id.to_string(),
                    consents: Map::new(),
                    created_at: at.clone(),
                    updated_at: at,
                });
                self.users.len() - 1
            }
        };
        &mut self.users[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_replaces_only_what_it_names() {
        let mut status = json!({
            "purposes": [{"id": "marketing", "enabled": true}, {"id": "newsletter", "enabled": true, "values": {"topics": {"value": "news"}}}],
            "channels": [{"id": "email", "enabled": true}]
        });
        let event = json!({
            "purposes": [{"id": "newsletter", "values": {"topics": {"value": "sports"}}}],
            "channels": [{"id": "email", "enabled": false}, {"id": "sms", "enabled": true}]
        });
        merge_consents(status.as_object_mut().unwrap(), event.as_object().unwrap());
        assert_eq!(
            status,
            json!({
                "purposes": [{"id": "marketing", "enabled": true}, {"id": "newsletter", "enabled": true, "values": {"topics": {"value": "sports"}}}],
                "channels": [{"id": "email", "enabled": false}, {"id": "sms", "enabled": true}]
            })
        );
        assert_eq!(consent_sync_time(951_782_400), "2000-02-29T00:00:00Z");
    }
}
