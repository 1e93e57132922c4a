//! Lambda function: Dataverse webhook deliveries (contact changes) -> Didomi
//! consent events; it also drains its own parked queue.

use consent_sync::DynamicsToDidomi;
use lambda_runtime::Error;

// Lambda hands a function one event at a time: a single-threaded runtime
// spares the thread hand-offs of a multi-threaded one.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    consent_sync::logging::init("dynamics-to-didomi");
    // Clients, connections and the configuration cache are built once here
    // and shared by every invocation.
    consent_sync::invocation::run(DynamicsToDidomi::from_env().await).await
}
