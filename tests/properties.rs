//! Properties of everything that parses outside input: the Didomi delivery,
//! the Dataverse webhook context with its typed values, the API Gateway
//! event, the configuration and RFC 3339 times. For any input: no panic,
//! either a valid result or a 400-class error, and answers bounded in size.
//! Case counts are kept modest so the suite fits CI's budget.

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use consent_sync::dataverse::webhook::parse_row_change;
use consent_sync::didomi::deliveries::{parse_delivery, Delivery};
use consent_sync::gateway::{body_bytes, MAX_BODY_BYTES};
use consent_sync::input::{is_guid, MAX_KEY_CHARS};
use consent_sync::time::{iso_utc, parse_utc_seconds};
use consent_sync::{Config, Deadline};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Error messages are for a person, not a copy of the input.
const MAX_MESSAGE: usize = 400;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any text, weighted towards what breaks parsers: empty, huge, control
/// characters, quotes, non-ASCII, e-mail addresses.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z.@+']{0,40}",
        "\\PC{0,80}",
        "[\\x00-\\x1f\"\\\\]{0,10}",
        (1usize..3, 3_990usize..4_010).prop_map(|(c, n)| "é".repeat(c) + &"x".repeat(n)),
        Just("x".repeat(70_000)),
        Just("jane.doe@example.com".to_string()),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z_]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn didomi_delivery() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("user.updated".to_string()),
        Just("user.created".to_string()),
        Just("event.created".to_string()),
        Just("event.updated".to_string()),
        Just("user.deleted".to_string()),
        text(),
    ];
    let consents = prop_oneof![
        Just(json!({"purposes": [{"id": "marketing", "enabled": true}]})),
        json_value(),
    ];
    (kind, text(), text(), text(), consents, json_value()).prop_map(
        |(kind, user, status, regulation, consents, extra)| {
            let entity = json!({
                "id": "b1a7e0c2", "organization_user_id": user, "status": status,
                "regulation": regulation, "consents": consents, "created_at": "2026-11-26T10:05:33Z",
                "user": {"organization_user_id": user}, "extra": extra
            });
            json!({"type": kind, "parameters": {"entity": entity, "new_entity": entity, "old_entity": {}}})
        },
    )
}

fn typed_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        any::<i64>().prop_map(|v| json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v})),
        any::<f64>().prop_map(|v| json!({"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v})),
        text().prop_map(|id| json!({"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": id, "LogicalName": "systemuser"})),
        any::<i64>().prop_map(|ms| json!(format!("/Date({ms})/"))),
        text().prop_map(|t| json!(format!("/Date({t})/"))),
        json_value().prop_map(|v| json!({"__type": v, "Value": v})),
    ]
}

fn dataverse_context() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        Just("6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c".to_string()),
        text()
    ];
    let attributes = prop::collection::vec(("[a-z_]{1,16}", typed_value()), 0..6).prop_map(|kv| {
        Value::Array(
            kv.into_iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect(),
        )
    });
    (text(), text(), id, attributes, json_value(), prop::bool::ANY).prop_map(
        |(message, entity, id, attributes, extra, with_image)| {
            let target = json!({"Attributes": attributes, "LogicalName": entity});
            json!({
                "MessageName": message, "PrimaryEntityName": entity, "PrimaryEntityId": id,
                "InitiatingUserId": id, "OperationCreatedOn": "/Date(1506409448000-0700)/",
                "InputParameters": [{"key": "Target", "value": target}],
                "PostEntityImages": if with_image { json!([{"key": "img", "value": target}]) } else { extra },
            })
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_a_delivery_or_a_short_reason(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse_delivery(&body) {
            prop_assert!(e.0.len() <= MAX_MESSAGE, "{}", e.0.len());
        }
        if let Err(e) = parse_row_change(&body) {
            prop_assert!(e.0.len() <= MAX_MESSAGE, "{}", e.0.len());
        }
    }

    #[test]
    fn a_didomi_delivery_parses_to_a_usable_key_or_a_reason_naming_the_field(delivery in didomi_delivery()) {
        let body = delivery.to_string();
        match parse_delivery(body.as_bytes()) {
            Ok(Delivery::Change(change)) => {
                if let Some(user) = &change.organization_user_id {
                    prop_assert!(user.chars().count() <= MAX_KEY_CHARS);
                    prop_assert!(!user.chars().any(char::is_control));
                }
            }
            Ok(Delivery::Deleted { kind }) => prop_assert!(kind.ends_with(".deleted")),
            Err(e) => {
                prop_assert!(e.0.len() <= MAX_MESSAGE, "{}", e.0);
                // What the caller sent is described, never copied.
                prop_assert!(!e.0.contains("jane.doe@example.com"), "{}", e.0);
            }
        }
    }

    #[test]
    fn a_dataverse_context_parses_to_a_guid_row_or_a_reason(context in dataverse_context()) {
        match parse_row_change(context.to_string().as_bytes()) {
            Ok(change) => {
                prop_assert!(is_guid(&change.entity_id), "{}", change.entity_id);
                for value in change.target.iter().flat_map(|t| t.values()) {
                    // The data contract's known types come out in the Web
                    // API's shapes; unknown ones are kept as they are.
                    let kind = value.get("__type").and_then(Value::as_str).unwrap_or_default();
                    for known in ["OptionSetValue:", "Money:", "EntityReference:"] {
                        prop_assert!(!kind.starts_with(known), "{value}");
                    }
                }
            }
            Err(e) => {
                prop_assert!(e.0.len() <= MAX_MESSAGE, "{}", e.0);
                prop_assert!(!e.0.contains("jane.doe@example.com"), "{}", e.0);
            }
        }
    }

    #[test]
    fn an_api_gateway_body_is_decoded_within_the_limit_or_refused(
        body in prop_oneof![text(), "[A-Za-z0-9+/=]{0,64}", Just("A".repeat(MAX_BODY_BYTES / 3 * 4 + 8))],
        encoded in any::<bool>(),
        extra in json_value(),
    ) {
        let event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {"http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10", "userAgent": "x"},
                               "requestId": "id", "routeKey": "$default", "stage": "$default", "time": "", "timeEpoch": 0,
                               "accountId": "1", "apiId": "a", "domainName": "d", "domainPrefix": "d"},
            "body": body, "isBase64Encoded": encoded, "extra": extra
        });
        let request: ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
        match body_bytes(&request) {
            Ok(bytes) => prop_assert!(bytes.len() <= MAX_BODY_BYTES),
            Err(rejection) => {
                prop_assert!(rejection.status == 400 || rejection.status == 413);
                prop_assert!(rejection.message.len() <= MAX_MESSAGE);
            }
        }
    }

    #[test]
    fn an_arbitrary_lambda_event_is_read_without_panicking(event in json_value()) {
        let _ = consent_sync::parking::drain::SqsEvent::is_sqs(&event);
        let _ = serde_json::from_value::<ApiGatewayV2httpRequest>(event.clone());
        let _ = serde_json::from_value::<consent_sync::parking::drain::SqsEvent>(event);
    }

    #[test]
    fn a_configuration_loads_or_names_the_field_without_quoting_secrets(
        field in prop::sample::select(vec![
            "client_id", "client_secret", "tenant_id", "server_instance", "upsert_mode",
            "contact_key", "mappings", "didomi", "didomi_webhook", "dynamics_webhook_key",
            "authority_host", "didomi_api_url", "sync_timestamp_column", "log_pseudonym_key",
            "contact_point_consent",
        ]),
        value in json_value(),
    ) {
        let mut config: Value = serde_json::from_str(include_str!("../events/local-config.json")).unwrap();
        config[field] = value;
        match Config::from_json(&config.to_string()) {
            Ok(_) => {}
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.len() <= 2 * MAX_MESSAGE, "{message}");
                prop_assert!(!message.contains("local-client-secret"), "{message}");
                prop_assert!(!message.contains("local-api-secret"), "{message}");
            }
        }
    }

    #[test]
    fn any_text_is_a_time_or_none(text in text()) {
        if let Some(seconds) = parse_utc_seconds(&text) {
            prop_assert_eq!(parse_utc_seconds(&iso_utc(seconds)), Some(seconds));
        }
    }

    #[test]
    fn a_calendar_time_reads_back_as_written(
        year in 1900i64..2200, month in 1i64..=12, day in 1i64..=31,
        hour in 0i64..24, minute in 0i64..60, second in 0i64..60,
    ) {
        let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
        match parse_utc_seconds(&text) {
            // A real date comes back unchanged: no 31 February rolled into March.
            Some(seconds) => prop_assert_eq!(iso_utc(seconds), text),
            None => {
                let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
                let last = match month { 4 | 6 | 9 | 11 => 30, 2 if leap => 29, 2 => 28, _ => 31 };
                prop_assert!(day > last, "{text} refused");
            }
        }
    }
}

/// The skip answers of `didomi-to-dynamics` quote a caller's status or
/// regulation only when it is a known one, and stay short.
#[test]
fn skip_reasons_stay_short_whatever_status_or_regulation_a_caller_sends() {
    let config = Config::from_json(include_str!("../events/local-config.json")).unwrap();
    let dataverse = consent_sync::dataverse::DataverseClient::new(
        consent_sync::http_client(),
        consent_sync::RetryPolicy::default(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config_cases(128));
    runner
        .run(&(text(), text()), |(status, regulation)| {
            for (status, regulation) in [
                (status.clone(), "gdpr".to_string()),
                ("confirmed".into(), regulation.clone()),
            ] {
                let body = json!({"type": "event.created", "parameters": {"entity": {
                    "status": status, "regulation": regulation,
                    "user": {"organization_user_id": "jane.doe@example.com"},
                    "consents": {"purposes": [{"id": "marketing", "enabled": true}]}}}});
                let Ok(Delivery::Change(change)) = parse_delivery(body.to_string().as_bytes())
                else {
                    continue;
                };
                if change.is_confirmed() && regulation == "gdpr" {
                    continue; // would be applied: not a skip.
                }
                let outcome = runtime.block_on(consent_sync::didomi_to_dynamics::apply(
                    &config,
                    &dataverse,
                    None,
                    &change,
                    Deadline::after(Duration::from_secs(1)),
                ));
                let answer = outcome.map(|o| o.to_json().to_string()).unwrap_or_default();
                prop_assert!(answer.len() <= 200, "{answer}");
                for value in [&status, &regulation] {
                    if value.len() > 12 {
                        prop_assert!(!answer.contains(value.as_str()), "{answer}");
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

fn config_cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
