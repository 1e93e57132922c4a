//! Lambda function, scheduled: registration health, drift between Didomi
//! and Dynamics, optional repair from Didomi (DESIGN §12).

use consent_sync::invocation::{InvocationError, ANSWER_RESERVE};
use consent_sync::watch::ConsentWatch;
use consent_sync::Deadline;
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::Value;

// Multi-threaded: the export's files are decompressed on every core the
// function's memory size gives it.
#[tokio::main]
async fn main() -> Result<(), Error> {
    consent_sync::logging::init("consent-watch");
    let watch = ConsentWatch::from_env().await;
    let watch = &watch;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let watch = watch
            .as_ref()
            .map_err(|e| InvocationError::from(e.clone()))?;
        let deadline = Deadline::from_epoch_millis(event.context.deadline, ANSWER_RESERVE);
        watch.run(deadline).await.map_err(Diagnostic::from)
    }))
    .await
}
