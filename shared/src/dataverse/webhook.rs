//! What a Dataverse webhook posts: the serialized `RemoteExecutionContext` of
//! the operation that fired the step, with the data contract's typed values
//! (`OptionSetValue`, `EntityReference`, `Money`, `"\/Date(ms)\/"`) and its
//! key/value arrays (`InputParameters`, `PostEntityImages`, `Attributes`).
//!
//! Attribute values are brought into the shapes the Web API itself uses
//! (a choice is a plain integer, a date an ISO 8601 UTC string), so that the
//! mapping reads both sources the same way.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The header Dataverse sets when the context was over 256 KB and it dropped
/// `InputParameters`, `ParentContext` and the images.
pub(crate) const SIZE_EXCEEDED_HEADER: &str = "x-ms-dynamics-msg-size-exceeded";

/// One operation on one row, as the webhook described it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// `Create`, `Update`, …
    pub message: String,
    /// The table's logical name, e.g. `contact`.
    pub entity: String,
    pub entity_id: String,
    /// The user on whose behalf the operation ran: for our own writes, the
    /// integration's application user.
    pub initiating_user_id: Option<String>,
    pub correlation_id: Option<String>,
    /// When the operation ran, in ISO 8601 UTC.
    pub operation_created_on: Option<String>,
    /// `Target`'s attributes: for an Update only the changed columns, for a
    /// Create every column that was set. `None` when Dataverse dropped it.
    pub target: Option<Map<String, Value>>,
    /// The first post image's attributes, when one was registered and sent.
    pub post_image: Option<Map<String, Value>>,
}

/// Whether Dataverse cut the context for its size: decided from the body —
/// `Target` and the images are what it removes — and confirmed by the
/// header. The header alone decides nothing: a body that still carries
/// `Target` is read as sent, whatever the header says (`false` included).
pub(crate) fn is_truncated(change: &RowChange, size_exceeded_header: Option<&str>) -> bool {
    change.target.is_none()
        && change.post_image.is_none()
        && size_exceeded_header.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A body that is not a `RemoteExecutionContext` we can use, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContextError(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContext<'a> {
    message_name: Option<String>,
    primary_entity_name: Option<String>,
    primary_entity_id: Option<String>,
    initiating_user_id: Option<String>,
    correlation_id: Option<String>,
    operation_created_on: Option<String>,
    /// Kept as text: only `Target` is read, and only as an entity.
    #[serde(default, borrow)]
    input_parameters: Option<Vec<Parameter<'a>>>,
    #[serde(default, borrow)]
    post_entity_images: Option<Vec<Parameter<'a>>>,
}

#[derive(Deserialize)]
struct Parameter<'a> {
    key: String,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Attribute {
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntity {
    #[serde(default)]
    attributes: Option<Vec<Attribute>>,
}

fn attributes(entity: Option<&RawValue>, what: &str) -> Result<Map<String, Value>, ContextError> {
    let entity: RawEntity = entity
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or_else(|| ContextError(format!("{what} is not an entity with `Attributes`")))?;
    Ok(entity
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|kv| (kv.key, attribute_value(kv.value)))
        .collect())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Parses the body of a webhook delivery.
pub fn parse_row_change(body: &[u8]) -> Result<RowChange, ContextError> {
    let raw: RawContext = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            // Without serde's text: it quotes the offending value.
            ContextError(
                "the body is JSON but not a Dataverse RemoteExecutionContext (a field has the wrong type)"
                    .into(),
            )
        } else {
            ContextError(format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        }
    })?;
    let message = non_empty(raw.message_name)
        .ok_or_else(|| ContextError("`MessageName` is missing".into()))?;
    let entity = non_empty(raw.primary_entity_name)
        .ok_or_else(|| ContextError("`PrimaryEntityName` is missing".into()))?;
    let entity_id = non_empty(raw.primary_entity_id)
        .ok_or_else(|| ContextError("`PrimaryEntityId` is missing".into()))?;
    if !crate::input::is_guid(entity_id.trim()) {
        // Described, not quoted: the message is logged too.
        return Err(ContextError(format!(
            "`PrimaryEntityId` is not a GUID ({} characters)",
            entity_id.chars().count()
        )));
    }
    let entity_id = entity_id.trim().to_string();
    let target = match raw
        .input_parameters
        .unwrap_or_default()
        .into_iter()
        .find(|kv| kv.key == "Target")
    {
        Some(kv) => Some(attributes(kv.value, "`InputParameters` Target")?),
        None => None,
    };
    let post_image = match raw
        .post_entity_images
        .unwrap_or_default()
        .into_iter()
        .next()
    {
        Some(kv) => Some(attributes(kv.value, "`PostEntityImages`")?),
        None => None,
    };
    Ok(RowChange {
        message,
        entity,
        entity_id,
        initiating_user_id: non_empty(raw.initiating_user_id),
        correlation_id: non_empty(raw.correlation_id),
        operation_created_on: raw.operation_created_on.as_deref().and_then(wcf_date),
        target,
        post_image,
    })
}

/// One attribute value in the Web API's shape: `OptionSetValue` and `Money`
/// become their number, `EntityReference` its id, `"/Date(ms)/"` an ISO 8601
/// UTC time; anything else is kept as it is.
pub(crate) fn attribute_value(value: Value) -> Value {
    match value {
        Value::Object(mut object) => {
            let kind = object
                .get("__type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if kind.starts_with("OptionSetValue:") || kind.starts_with("Money:") {
                object.remove("Value").unwrap_or(Value::Null)
            } else if kind.starts_with("EntityReference:") {
                object.remove("Id").unwrap_or(Value::Null)
            } else {
                Value::Object(object)
            }
        }
        Value::String(text) => match wcf_date(&text) {
            Some(iso) => Value::String(iso),
            None => Value::String(text),
        },
        other => other,
    }
}

/// `/Date(1506384247000)/` or `/Date(1506409448000-0700)/` (the offset only
/// says where it was written; the milliseconds are UTC) to
/// `2017-09-26T00:04:07Z`.
fn wcf_date(text: &str) -> Option<String> {
    let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let digits_end = inner
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map(|(i, _)| i)
        .unwrap_or(inner.len());
    let millis: i64 = inner[..digits_end].parse().ok()?;
    Some(crate::time::iso_utc(millis.div_euclid(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str) -> Vec<u8> {
        let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn an_update_carries_the_changed_columns_and_the_post_image() {
        let change = parse_row_change(&sample("dynamics-contact-updated.json")).unwrap();
        assert_eq!(change.message, "Update");
        assert_eq!(change.entity, "contact");
        assert_eq!(change.entity_id, "6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c");
        assert_eq!(
            change.operation_created_on.as_deref(),
            Some("2026-11-27T10:15:30Z")
        );
        assert_eq!(
            change.initiating_user_id.as_deref(),
            Some("75c2dd85-6a0b-4c1e-9d4f-2b3a4c5d6e7f")
        );
        let target = change.target.unwrap();
        assert_eq!(target["donotbulkemail"], json!(true));
        assert_eq!(target["new_profiling"], json!(100000001));
        assert_eq!(target["modifiedon"], json!("2026-11-27T10:15:30Z"));
        assert_eq!(
            target["modifiedby"],
            json!("75c2dd85-6a0b-4c1e-9d4f-2b3a4c5d6e7f")
        );
        assert!(!target.contains_key("emailaddress1"));
        let image = change.post_image.unwrap();
        assert_eq!(image["emailaddress1"], json!("jane.doe@example.com"));
        assert_eq!(image["donotbulkemail"], json!(true));
    }

    #[test]
    fn a_create_carries_every_set_column() {
        let change = parse_row_change(&sample("dynamics-contact-created.json")).unwrap();
        assert_eq!(change.message, "Create");
        let target = change.target.unwrap();
        assert_eq!(target["emailaddress1"], json!("ada@example.com"));
        assert_eq!(target["donotemail"], json!(false));
        assert_eq!(target["creditlimit"], json!(1500.5));
        assert_eq!(target["new_topics"], json!("news"));
    }

    #[test]
    fn a_one_click_unsubscribe_carries_the_record_with_its_lookups() {
        let change =
            parse_row_change(&sample("dynamics-consent-record-unsubscribed.json")).unwrap();
        assert_eq!(change.entity, "msdynmkt_contactpointconsent4");
        assert_eq!(change.message, "Update");
        let target = change.target.unwrap();
        assert_eq!(target["msdynmkt_value"], json!(534120002));
        assert_eq!(target["msdynmkt_source"], json!(534120007));
        let image = change.post_image.unwrap();
        assert_eq!(
            image["msdynmkt_contactpointvalue"],
            json!("jane.doe@example.com")
        );
        assert_eq!(image["msdynmkt_contactpointconsenttype"], json!(534120001));
        assert_eq!(
            image["msdynmkt_topicid"],
            json!("b1a2c3d4-0000-4000-8000-0000000000b1"),
            "a lookup becomes its id"
        );
    }

    #[test]
    fn a_truncated_context_has_no_target_and_no_image() {
        let change = parse_row_change(&sample("dynamics-contact-size-exceeded.json")).unwrap();
        assert_eq!(change.message, "Update");
        assert_eq!(change.target, None);
        assert_eq!(change.post_image, None);
    }

    #[test]
    fn typed_values_take_the_web_api_shape() {
        assert_eq!(
            attribute_value(
                json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 2})
            ),
            json!(2)
        );
        assert_eq!(
            attribute_value(
                json!({"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 123.45})
            ),
            json!(123.45)
        );
        assert_eq!(
            attribute_value(json!("/Date(0)/")),
            json!("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            attribute_value(json!("/Date(1506409448000-0700)/")),
            json!("2017-09-26T07:04:08Z")
        );
        assert_eq!(
            attribute_value(json!("/Date(soon)/")),
            json!("/Date(soon)/")
        );
        let unknown = json!({"__type": "OptionSetValueCollection:x", "Values": [1]});
        assert_eq!(attribute_value(unknown.clone()), unknown);
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong_without_echoing_values() {
        let error = |body: &str| parse_row_change(body.as_bytes()).unwrap_err().0;
        assert!(error("{oops").contains("not valid JSON"));
        assert_eq!(error("{}"), "`MessageName` is missing");
        assert_eq!(
            error(r#"{"MessageName": "Update", "PrimaryEntityName": "contact"}"#),
            "`PrimaryEntityId` is missing"
        );
        let typed = error(r#"{"MessageName": ["jane@example.com"]}"#);
        assert!(
            typed.contains("not a Dataverse RemoteExecutionContext"),
            "{typed}"
        );
        assert!(!typed.contains("jane"));
        let target = error(
            r#"{"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": "6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c",
                "InputParameters": [{"key": "Target", "value": {"Attributes": "jane@example.com"}}]}"#,
        );
        assert!(target.contains("Target"), "{target}");
        assert_eq!(
            error(
                r#"{"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": "x"}"#
            ),
            "`PrimaryEntityId` is not a GUID (1 characters)"
        );
    }
}
