//! What a function is invoked with: an HTTP request that API Gateway
//! forwards (payload v2.0), or a batch of the function's own parked queue
//! from Lambda's SQS event source (DESIGN §2). One dispatch for both
//! functions, so that each `main.rs` only builds its state and runs.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::ConfigError;
use crate::function::Function;
use crate::parking::drain::{drain, BatchResponse, SqsEvent, SqsRecord};
use crate::retry::Deadline;

/// Why an invocation failed as a whole (Lambda's `errorType`, `errorMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationError {
    pub error_type: &'static str,
    pub message: String,
}

/// What Lambda reports for a failed invocation (`errorType`, `errorMessage`).
impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type.into(),
            error_message: error.message,
        }
    }
}

impl From<ConfigError> for InvocationError {
    fn from(error: ConfigError) -> Self {
        InvocationError {
            error_type: "ConfigurationError",
            message: error.to_string(),
        }
    }
}

/// What a webhook function answers: the HTTP response, or the batch's
/// `batchItemFailures`, serialized as Lambda expects either.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Http(Box<ApiGatewayV2httpResponse>),
    Batch(BatchResponse),
}

/// One event of a webhook function, read straight from the Runtime API's
/// JSON in one pass: the first member name tells which — Lambda's SQS event
/// is `{"Records": [...]}`, an HTTP event starts with `version` — and the
/// rest is read as that type, so the HTTP event's escaped body (the bulk of
/// it) is scanned once, into the request, with no document in between.
#[derive(Debug)]
pub enum Event {
    Http(Box<ApiGatewayV2httpRequest>),
    Sqs(SqsEvent),
}

impl Event {
    /// An event from its JSON text (the local run, tests).
    pub fn parse(text: &str) -> Result<Event, InvocationError> {
        serde_json::from_str(text).map_err(|e| InvocationError {
            error_type: "UnexpectedEvent",
            message: format!("neither an API Gateway HTTP (payload 2.0) nor an SQS event: {e}"),
        })
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an API Gateway HTTP (payload 2.0) or an SQS event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let first: Option<String> = map.next_key()?;
        if first.as_deref() == Some("Records") {
            let records: Vec<SqsRecord> = map.next_value()?;
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            if records
                .iter()
                .any(|r| r.event_source.as_deref() != Some("aws:sqs"))
            {
                return Err(A::Error::custom(
                    "a `Records` event whose records are not from aws:sqs",
                ));
            }
            return Ok(Event::Sqs(SqsEvent { records }));
        }
        let request = ApiGatewayV2httpRequest::deserialize(MapAccessDeserializer::new(Replay {
            first,
            rest: map,
        }))?;
        Ok(Event::Http(Box::new(request)))
    }
}

/// A map whose first key was already read: that key, then the rest.
struct Replay<A> {
    first: Option<String>,
    rest: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.first.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => self.rest.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.rest.next_value_seed(seed)
    }
}

/// Runs `function` on one Lambda event.
pub async fn invoke<F: Function>(
    function: &F,
    event: Event,
    deadline: Deadline,
) -> Result<Answer, InvocationError> {
    match event {
        Event::Sqs(batch) => {
            // Boxed: the replay's future is deep, and the runtime's future nests it.
            let answer = Box::pin(drain(function.setup(), &batch, deadline)).await;
            Ok(Answer::Batch(answer))
        }
        Event::Http(request) => {
            let response = Box::pin(function.handle(&request, deadline)).await?;
            Ok(Answer::Http(Box::new(response)))
        }
    }
}

/// Kept back from Lambda's deadline to send the answer.
pub const ANSWER_RESERVE: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves a webhook function's events until Lambda stops it. `function` is
/// what its init built, once: an environment problem fails each invocation
/// with its message rather than the whole init, so that it shows where the
/// operator looks first.
pub async fn run<F: Function + Sync>(
    function: Result<F, ConfigError>,
) -> Result<(), lambda_runtime::Error> {
    let function = &function;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Event>| async move {
            let function = function
                .as_ref()
                .map_err(|e| InvocationError::from(e.clone()))?;
            let deadline = Deadline::from_epoch_millis(event.context.deadline, ANSWER_RESERVE);
            invoke(function, event.payload, deadline)
                .await
                .map_err(lambda_runtime::Diagnostic::from)
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::Event;
    use serde_json::json;

    #[test]
    fn the_first_member_name_tells_an_sqs_batch_from_an_http_event() {
        let record = json!({"messageId": "m1", "receiptHandle": "r", "body": "{}", "eventSource": "aws:sqs"});
        let sqs = Event::parse(&json!({"Records": [record]}).to_string()).unwrap();
        assert!(
            matches!(&sqs, Event::Sqs(batch) if batch.records[0].message_id == "m1"),
            "{sqs:?}"
        );
        let escaped = "{\"\\u0052ecords\": [{\"messageId\": \"m2\", \"receiptHandle\": \"r\", \"eventSource\": \"aws:sqs\"}]}";
        assert!(matches!(Event::parse(escaped).unwrap(), Event::Sqs(_)));
        // Written out: a later `Records` member is the HTTP event's own.
        let http = r#"{"version": "2.0", "rawPath": "/", "body": "{\"Records\": []}",
                       "requestContext": {"http": {"method": "POST"}}, "Records": "late"}"#;
        match Event::parse(http).unwrap() {
            Event::Http(request) => {
                assert_eq!(request.raw_path.as_deref(), Some("/"));
                assert_eq!(request.body.as_deref(), Some("{\"Records\": []}"));
                assert_eq!(request.request_context.http.method, http::Method::POST);
            }
            other => panic!("{other:?}"),
        }
        let foreign =
            json!({"Records": [{"messageId": "m", "receiptHandle": "r", "eventSource": "aws:s3"}]})
                .to_string();
        assert!(Event::parse(&foreign)
            .unwrap_err()
            .message
            .contains("not from aws:sqs"));
        for bad in ["[]", "\"text\"", "{\"Records\": 5}"] {
            assert!(Event::parse(bad).is_err(), "{bad}");
        }
    }
}
