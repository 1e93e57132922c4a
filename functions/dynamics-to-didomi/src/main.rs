//! Lambda function: Dataverse webhook deliveries (contact changes) -> Didomi
//! consent events; it also drains its own parked queue.

use std::time::Duration;

use consent_sync::invocation::{invoke, InvocationError};
use consent_sync::{Deadline, DynamicsToDidomi};
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::Value;

/// Kept back from Lambda's deadline to send the answer.
const ANSWER_RESERVE: Duration = Duration::from_millis(500);

// Lambda hands a function one event at a time: a single-threaded runtime
// spares the thread hand-offs of a multi-threaded one.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    consent_sync::logging::init("dynamics-to-didomi");
    // An environment problem fails each invocation with its message, rather
    // than the whole init, so that it shows where the operator looks first.
    let function = DynamicsToDidomi::from_env().await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let function = function
            .as_ref()
            .map_err(|e| InvocationError::from(e.clone()))?;
        let deadline = Deadline::from_epoch_millis(event.context.deadline, ANSWER_RESERVE);
        invoke(function, event.payload, deadline)
            .await
            .map_err(Diagnostic::from)
    }))
    .await
}
