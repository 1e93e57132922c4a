//! Didomi webhook deliveries: `{"type": "user.updated", "parameters": {…}}`.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::consents::Consents;

/// The delegate id that `dynamics-to-didomi` signs its consent events with.
pub(crate) const DELEGATE_ID: &str = "consent-sync";
pub(crate) const DELEGATE_NAME: &str = "Microsoft Dynamics 365";

const TYPES: &str =
    "event.created, event.updated, event.deleted, user.created, user.updated, user.deleted";

// One delivery is parsed per invocation: boxing the larger variant saves nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// `event.deleted` / `user.deleted`: acknowledged, nothing to sync.
    Deleted {
        kind: String,
    },
    Change(ConsentChange),
}

/// Whether a delivery carries a user's whole consent status or one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `user.*`: the user's full status.
    User,
    /// `event.*`: a partial update naming some purposes and channels.
    Event,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsentChange {
    pub kind: String,
    pub scope: Scope,
    pub organization_user_id: Option<String>,
    pub consents: Consents,
    /// Events only: `confirmed` or `pending_approval`; absent counts as confirmed.
    pub status: Option<String>,
    pub regulation: Option<String>,
    pub delegate_id: Option<String>,
    /// When the change happened, in whole UTC seconds since the epoch: a
    /// user's `updated_at`, an event's `created_at`.
    pub changed_at: Option<i64>,
    /// The entity's id and time as Didomi wrote them, for a parked record.
    pub delivery_id: Option<String>,
    pub delivery_time: Option<String>,
}

impl ConsentChange {
    pub fn is_confirmed(&self) -> bool {
        self.status.as_deref().is_none_or(|s| s == "confirmed")
    }

    /// The delivery as a consent record's reason may name it: its kind and
    /// Didomi's id of the entity, nothing personal.
    pub(crate) fn describe(&self) -> String {
        match &self.delivery_id {
            Some(id) => format!("{} {id}", self.kind),
            None => self.kind.clone(),
        }
    }

    /// Written by consent-sync itself (the other direction): syncing it back would echo.
    pub(crate) fn is_own_echo(&self) -> bool {
        self.delegate_id.as_deref() == Some(DELEGATE_ID)
    }
}

/// A body that is not a Didomi delivery we understand, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Kept as text: only the entity the type names is read.
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
}

/// The entities a delivery's `parameters` may carry, as text (an update's
/// `old_entity` and `source` are not read at all).
#[derive(Deserialize)]
struct Parameters<'a> {
    #[serde(borrow)]
    entity: Option<&'a RawValue>,
    #[serde(borrow)]
    new_entity: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UserEntity {
    id: Option<String>,
    organization_user_id: Option<String>,
    consents: Option<Consents>,
    regulation: Option<String>,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct EventEntity {
    id: Option<String>,
    created_at: Option<String>,
    status: Option<String>,
    regulation: Option<String>,
    user: Option<EventUser>,
    consents: Option<Consents>,
    delegate: Option<Delegate>,
}

#[derive(Deserialize)]
struct EventUser {
    organization_user_id: Option<String>,
}

#[derive(Deserialize)]
struct Delegate {
    id: Option<String>,
}

fn entity<T: DeserializeOwned>(
    parameters: &Parameters<'_>,
    field: &str,
) -> Result<T, PayloadError> {
    let raw = match field {
        "entity" => parameters.entity,
        _ => parameters.new_entity,
    };
    let value = raw
        .filter(|raw| raw.get() != "null")
        .ok_or_else(|| PayloadError(format!("`parameters.{field}` is missing")))?;
    let mut value = serde_json::Deserializer::from_str(value.get());
    serde_path_to_error::deserialize(&mut value).map_err(|e| {
        // A map key in the path is the caller's (a preference id, say):
        // only field names and indices are named, anything else described.
        let path: Vec<String> = e
            .path()
            .iter()
            .map(|segment| {
                let text = segment.to_string();
                let plain = text
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain && text.len() <= 40 {
                    text
                } else {
                    "<key>".to_string()
                }
            })
            .collect();
        let path = path.join(".").replace(".[", "[");
        let inner = e.into_inner().to_string();
        // serde quotes offending values, which may be personal data.
        let reason = inner.split(':').next().unwrap_or("invalid value");
        PayloadError(format!("`parameters.{field}.{path}`: {reason}"))
    })
}

/// An `organization_user_id` that can be looked up: at most as long as a
/// Dataverse text column holds, without control characters.
fn user_key(id: Option<String>, field: &str) -> Result<Option<String>, PayloadError> {
    match id.as_deref().and_then(crate::input::key_problem) {
        Some(problem) => Err(PayloadError(format!("`{field}` {problem}"))),
        None => Ok(id),
    }
}

fn non_empty(id: Option<String>) -> Option<String> {
    id.filter(|s| !s.trim().is_empty())
}

/// Parses a delivery body.
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, PayloadError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            PayloadError("the body is JSON but not a Didomi webhook delivery ({\"type\": …, \"parameters\": {…}})".into())
        } else {
            PayloadError(format!("the body is not valid JSON (line {}, column {})", e.line(), e.column()))
        }
    })?;
    let kind = envelope
        .kind
        .ok_or_else(|| PayloadError("`type` is missing".into()))?;
    let parameters: Parameters = match envelope.parameters {
        Some(raw) if raw.get().starts_with('{') => serde_json::from_str(raw.get())
            .map_err(|_| PayloadError("`parameters` must be an object of entities".into()))?,
        Some(raw) if raw.get() != "null" => {
            return Err(PayloadError("`parameters` must be an object".into()))
        }
        _ => return Err(PayloadError("`parameters` is missing".into())),
    };
    let (scope, field) = match kind.as_str() {
        "user.deleted" | "event.deleted" => return Ok(Delivery::Deleted { kind }),
        "user.created" => (Scope::User, "entity"),
        "user.updated" => (Scope::User, "new_entity"),
        "event.created" => (Scope::Event, "entity"),
        "event.updated" => (Scope::Event, "new_entity"),
        other => {
            // Not echoed: the answer and the log say only what it is not.
            return Err(PayloadError(format!(
                "unsupported delivery type {}; expected one of {TYPES}",
                crate::input::shown(other, crate::input::DELIVERY_TYPES, "type")
            )));
        }
    };
    let change = match scope {
        Scope::User => {
            let user: UserEntity = entity(&parameters, field)?;
            ConsentChange {
                kind,
                scope,
                organization_user_id: user_key(
                    non_empty(user.organization_user_id),
                    &format!("parameters.{field}.organization_user_id"),
                )?,
                consents: user.consents.unwrap_or_default(),
                status: None,
                regulation: user.regulation,
                delegate_id: None,
                changed_at: user
                    .updated_at
                    .as_deref()
                    .and_then(crate::time::parse_utc_seconds),
                delivery_id: user.id,
                delivery_time: user.updated_at,
            }
        }
        Scope::Event => {
            let event: EventEntity = entity(&parameters, field)?;
            ConsentChange {
                kind,
                scope,
                organization_user_id: user_key(
                    non_empty(event.user.and_then(|u| u.organization_user_id)),
                    &format!("parameters.{field}.user.organization_user_id"),
                )?,
                consents: event.consents.unwrap_or_default(),
                status: event.status,
                regulation: event.regulation,
                delegate_id: event.delegate.and_then(|d| d.id),
                changed_at: event
                    .created_at
                    .as_deref()
                    .and_then(crate::time::parse_utc_seconds),
                delivery_id: event.id,
                delivery_time: event.created_at,
            }
        }
    };
    Ok(Delivery::Change(change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sample(name: &str) -> Vec<u8> {
        let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn change(name: &str) -> ConsentChange {
        match parse_delivery(&sample(name)).unwrap() {
            Delivery::Change(change) => change,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn a_user_update_carries_the_new_full_status() {
        let change = change("didomi-user-updated.json");
        assert_eq!(change.scope, Scope::User);
        assert_eq!(
            change.organization_user_id.as_deref(),
            Some("jane.doe@example.com")
        );
        assert_eq!(
            change.consents.purpose("marketing").unwrap().enabled,
            Some(false)
        );
        assert_eq!(
            change.consents.channel("email").unwrap().enabled,
            Some(true)
        );
        assert!(change.is_confirmed() && !change.is_own_echo());
        // 2026-11-26T10:05:33.540Z: the new entity's updated_at, to the second.
        assert_eq!(change.changed_at, Some(1_795_687_533));
    }

    #[test]
    fn an_event_carries_the_user_id_status_regulation_and_delegate() {
        let change = change("didomi-event-created.json");
        assert_eq!(change.scope, Scope::Event);
        assert_eq!(
            change.organization_user_id.as_deref(),
            Some("jane.doe@example.com")
        );
        assert_eq!(change.regulation.as_deref(), Some("gdpr"));
        assert!(change.is_confirmed());
        assert_eq!(change.consents.purposes.len(), 1);

        let pending = change_of_event(serde_json::json!({"status": "pending_approval"}));
        assert!(!pending.is_confirmed());
        let echo =
            change_of_event(serde_json::json!({"delegate": {"id": "consent-sync", "name": "x"}}));
        assert!(echo.is_own_echo());
    }

    fn change_of_event(entity: Value) -> ConsentChange {
        let body = serde_json::json!({"type": "event.created", "parameters": {"entity": entity}});
        match parse_delivery(body.to_string().as_bytes()).unwrap() {
            Delivery::Change(change) => change,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_updated_event_uses_the_new_entity() {
        let change = change("didomi-event-updated.json");
        assert_eq!(change.kind, "event.updated");
        assert_eq!(
            change.consents.purpose("newsletter").unwrap().enabled,
            Some(true)
        );
    }

    #[test]
    fn deletions_are_recognised() {
        assert_eq!(
            parse_delivery(&sample("didomi-user-deleted.json")).unwrap(),
            Delivery::Deleted {
                kind: "user.deleted".into()
            }
        );
    }

    #[test]
    fn malformed_deliveries_say_what_is_wrong_without_echoing_values() {
        let error = |body: &str| parse_delivery(body.as_bytes()).unwrap_err().0;
        assert!(error("{not json").contains("not valid JSON"));
        assert!(error("[1,2]").contains("not a Didomi webhook delivery"));
        assert_eq!(error(r#"{"parameters": {}}"#), "`type` is missing");
        assert_eq!(
            error(r#"{"type": "user.updated"}"#),
            "`parameters` is missing"
        );
        assert_eq!(
            error(r#"{"type": "user.updated", "parameters": {}}"#),
            "`parameters.new_entity` is missing"
        );
        assert!(error(r#"{"type": "notice.published", "parameters": {}}"#)
            .starts_with("unsupported delivery type"));
        let typed = error(
            r#"{"type": "user.created", "parameters": {"entity": {"organization_user_id": "jane@example.com",
                "consents": {"purposes": [{"id": "x", "enabled": "jane@example.com"}]}}}}"#,
        );
        assert!(
            typed.starts_with("`parameters.entity.consents.purposes[0].enabled`: invalid type"),
            "{typed}"
        );
        assert!(!typed.contains("jane"), "{typed}");
    }

    #[test]
    fn a_callers_map_key_is_not_echoed_in_the_reason() {
        let body = serde_json::json!({"type": "user.updated", "parameters": {"new_entity": {
            "organization_user_id": "x",
            "consents": {"purposes": [{"id": "p", "values": {"jane.doe@example.com": 5}}]}}}});
        let error = parse_delivery(body.to_string().as_bytes()).unwrap_err().0;
        assert!(!error.contains("jane"), "{error}");
        assert!(
            error.contains("consents.purposes[0].values.<key>"),
            "{error}"
        );
    }
}
