//! Step 4 of the local run: an outage that heals by itself. Dataverse goes
//! down, a Didomi delivery is parked in the function's queue and answered
//! 202; Dataverse comes back, and Lambda's SQS event source hands the queue
//! to the function, which applies Didomi's current state. The queue is the
//! simulator's own SQS, reached through the AWS SDK as in production.

use crate::error::CliError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use consent_sync::parking::Parking;
use consent_sync::{Config, ConfigSource, Deadline, DidomiToDynamics};
use consent_sync_sim::gateway::Gateway;
use consent_sync_sim::{Fault, Simulator};
use serde_json::{json, Value};

use super::{describe_changes, gateway_handler, read_contacts, replay, SAMPLE_DELIVERY};
use crate::event_source::EventSource;

/// An SQS client for the simulator's queues (any credentials will do).
fn sqs_client(sim: &Simulator) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(&sim.url)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "local", "local", None, None, "local",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

pub async fn run(sim: &Simulator) -> Result<(), CliError> {
    let config_text = sim.config().to_string();
    let config = Config::from_json(&config_text)?;
    let sqs = sqs_client(sim);
    let queue_url = sqs
        .create_queue()
        .queue_name("consent-sync-didomi-to-dynamics-parked")
        .send()
        .await
        .map_err(CliError::queue)?
        .queue_url
        .unwrap_or_default();
    let mut function =
        DidomiToDynamics::new(ConfigSource::Inline(config_text), Duration::from_secs(300));
    function.setup.parking = Parking::new(sqs.clone(), &queue_url);
    let function = Arc::new(function);
    let gateway = Gateway::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        gateway_handler(function.clone()),
        None,
    )
    .await
    .map_err(|e| CliError::Local(format!("cannot listen on 127.0.0.1: {e}")))?;
    let source = EventSource::new(sqs, &queue_url);

    // The person of the sample delivery opts back into marketing in Didomi.
    let mut delivery: Value = serde_json::from_str(SAMPLE_DELIVERY).expect("valid JSON");
    let entity = &mut delivery["parameters"]["new_entity"];
    let user = entity["organization_user_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let choices = json!({"purposes": [{"id": "marketing", "enabled": true}], "channels": []});
    entity["consents"] = choices.clone();
    sim.state().didomi.user_mut(&user).consents = choices.as_object().cloned().unwrap_or_default();
    let before = read_contacts(&function, &config, Some(&user)).await?;

    println!();
    println!("4. An outage heals by itself: Dataverse goes down (every request answered 503)");
    sim.fail_dataverse(
        1_000,
        Fault::Status {
            status: 503,
            retry_after: Some(0),
        },
    );
    let (status, body) = replay(&gateway.url, &delivery.to_string()).await?;
    println!("   Didomi: the person opts back into marketing -> HTTP {status} {body}");
    let (visible, _) = source.counts().await?;
    println!("   didomi-to-dynamics's parked queue (simulated SQS) holds {visible} record(s)");

    sim.state().dataverse_faults.clear();
    println!("   Dataverse is back; Lambda's SQS event source hands the queue to the function:");
    while let Some(batch) = source.receive(180).await? {
        let event = consent_sync::invocation::Event::parse(&batch.event.to_string())
            .map_err(|e| CliError::Local(e.message))?;
        let answer = consent_sync::invocation::invoke(
            &*function,
            event,
            Deadline::after(Duration::from_secs(29)),
        )
        .await
        .map_err(|e| CliError::Local(e.message))?;
        let answer = serde_json::to_value(answer).map_err(|e| CliError::Local(e.to_string()))?;
        let failed = source.settle(&batch, &answer).await?;
        println!(
            "   a batch of {} -> {answer} ({} applied)",
            batch.records.len(),
            batch.records.len() - failed.len()
        );
        if !failed.is_empty() {
            return Err(CliError::Local(
                "a parked record was not applied after Dataverse came back".into(),
            ));
        }
    }
    let after = read_contacts(&function, &config, Some(&user)).await?;
    print!("{}", describe_changes(Some(&user), &before, &after));
    let (visible, hidden) = source.counts().await?;
    println!(
        "   The parked queue holds {} record(s): nothing lost, no one at the keyboard.",
        visible + hidden
    );
    Ok(())
}
