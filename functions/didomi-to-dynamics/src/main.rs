//! Lambda function: Didomi webhook deliveries -> Dataverse contact columns.

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use consent_sync::{ConfigError, Deadline, DidomiToDynamics};
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};

/// Kept back from Lambda's deadline to send the answer.
const ANSWER_RESERVE: Duration = Duration::from_millis(500);

fn configuration_error(error: &ConfigError) -> Diagnostic {
    Diagnostic {
        error_type: "ConfigurationError".into(),
        error_message: error.to_string(),
    }
}

// Lambda hands a function one event at a time: a single-threaded runtime
// spares the thread hand-offs of a multi-threaded one.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    consent_sync::logging::init();
    // An environment problem fails each invocation with its message, rather
    // than the whole init, so that it shows where the operator looks first.
    let function = DidomiToDynamics::from_env().await;
    let function = &function;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            let function = function.as_ref().map_err(configuration_error)?;
            let deadline = Deadline::from_epoch_millis(event.context.deadline, ANSWER_RESERVE);
            function
                .handle(&event.payload, deadline)
                .await
                .map_err(|e| configuration_error(&e))
        },
    ))
    .await
}
