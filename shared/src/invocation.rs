//! What a function is invoked with: an HTTP request that API Gateway
//! forwards (payload v2.0), or a batch of the function's own parked queue
//! from Lambda's SQS event source (DESIGN §2). One dispatch for both
//! functions, so that each `main.rs` only builds its state and runs.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::ConfigError;
use crate::function::Function;
use crate::parking::drain::{drain, BatchResponse, SqsEvent};
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

/// The first member name of a JSON object, read without scanning the rest:
/// Lambda's SQS event is `{"Records": [...]}`, an HTTP event starts with
/// `version`, and its body (escaped JSON, the bulk of the event) is then
/// scanned once, by the one parse that reads it.
fn first_key(event: &str) -> Option<String> {
    let rest = event.trim_start().strip_prefix('{')?.trim_start();
    if !rest.starts_with('"') {
        return None;
    }
    let bytes = rest.as_bytes();
    let mut at = 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return serde_json::from_str(&rest[..=at]).ok(),
            _ => at += 1,
        }
    }
    None
}

/// Runs `function` on one Lambda event, as the Runtime API delivered its
/// JSON: read straight into the HTTP request or the SQS batch, with no
/// intermediate document.
pub async fn invoke<F: Function>(
    function: &F,
    event: &str,
    deadline: Deadline,
) -> Result<Answer, InvocationError> {
    let unexpected = |what: String| InvocationError {
        error_type: "UnexpectedEvent",
        message: what,
    };
    if first_key(event).as_deref() == Some("Records") {
        let batch: SqsEvent = serde_json::from_str(event)
            .map_err(|e| unexpected(format!("an SQS event this function cannot read: {e}")))?;
        if batch
            .records
            .iter()
            .any(|r| r.event_source.as_deref() != Some("aws:sqs"))
        {
            return Err(unexpected(
                "a `Records` event whose records are not from aws:sqs".into(),
            ));
        }
        // Boxed: the replay's future is deep, and the runtime's future nests it.
        let answer = Box::pin(drain(function.setup(), &batch, deadline)).await;
        return Ok(Answer::Batch(answer));
    }
    let request: ApiGatewayV2httpRequest = serde_json::from_str(event).map_err(|e| {
        unexpected(format!(
            "neither an API Gateway HTTP (payload 2.0) nor an SQS event: {e}"
        ))
    })?;
    let response = Box::pin(function.handle(&request, deadline)).await?;
    Ok(Answer::Http(Box::new(response)))
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
        move |event: lambda_runtime::LambdaEvent<Box<RawValue>>| async move {
            let function = function
                .as_ref()
                .map_err(|e| InvocationError::from(e.clone()))?;
            let deadline = Deadline::from_epoch_millis(event.context.deadline, ANSWER_RESERVE);
            invoke(function, event.payload.get(), deadline)
                .await
                .map_err(lambda_runtime::Diagnostic::from)
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::first_key;

    #[test]
    fn the_first_member_name_is_read_alone() {
        assert_eq!(
            first_key(" {\n \"Records\": [1]}").as_deref(),
            Some("Records")
        );
        assert_eq!(
            first_key("{\"\\u0052ecords\":[]}").as_deref(),
            Some("Records")
        );
        assert_eq!(
            first_key("{\"version\":\"2.0\",\"Records\":[]}").as_deref(),
            Some("version")
        );
        assert_eq!(first_key("{\"a\\\"b\": 1}").as_deref(), Some("a\"b"));
        for none in ["[]", "{}", "{ 1: 2}", "", "{\"open"] {
            assert_eq!(first_key(none), None, "{none}");
        }
    }
}
