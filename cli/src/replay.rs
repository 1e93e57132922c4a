//! `consent-sync replay [--queue URL]… [--dry-run]`: drains parked
//! deliveries for a person — typically a dead-letter queue after its cause
//! was fixed. Each record goes through the same rule as the functions' own
//! drains (`consent_sync::parking::replay`). A queue is drained completely:
//! long polling, and the run ends only when a receive comes back empty and
//! the queue reports no visible record. A record is deleted only once
//! applied or found up to date; a failure stays queued with its reason.

use std::collections::HashSet;

use consent_sync::dataverse::DataverseClient;
use consent_sync::didomi::DidomiClient;
use consent_sync::parking::replay::{Mode, Replayer};
use consent_sync::parking::ParkedDelivery;
use consent_sync::{Config, RetryPolicy};
use serde_json::{json, Value};

use crate::error::{CliError, Result};
use crate::event_source::EventSource;
use crate::report::Report;

/// How long a received record stays hidden from other readers while this
/// run works on it; a record that fails shows again after it.
const VISIBILITY_SECONDS: i32 = 300;
/// Long polling: an empty answer then means no server of the queue holds a
/// visible record (short polling samples a few and can answer empty while
/// records remain).
const WAIT_SECONDS: i32 = 2;

/// What a run did, over every queue.
#[derive(Default)]
struct Tally {
    done: usize,
    failed: usize,
    records: Vec<Value>,
}

pub async fn run(config: &Config, queues: Vec<String>, dry_run: bool) -> Result<Report> {
    let queues: Vec<String> = if queues.is_empty() {
        std::env::var(consent_sync::parking::PARKED_QUEUE_URL)
            .ok()
            .filter(|q| !q.trim().is_empty())
            .map(|q| vec![q.trim().to_string()])
            .ok_or_else(|| CliError::Usage("no queue: pass --queue URL or set PARKED_QUEUE_URL (the stack's outputs name each queue)".into()))?
    } else {
        queues
    };
    let aws = consent_sync::tls::aws_sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let http = consent_sync::http_client();
    let dataverse = DataverseClient::new(http.clone(), RetryPolicy::default());
    let didomi = DidomiClient::new(http, RetryPolicy::default());
    let resolved = match &config.contact_point_consent {
        None => None,
        Some(section) => Some(
            dataverse
                .session(config, crate::deadline())
                .resolve_consent(section)
                .await
                .and_then(|r| r.into_resolved())
                .map_err(CliError::dataverse(
                    "resolving the consent purposes and topics",
                ))?,
        ),
    };
    let replayer = Replayer {
        config,
        dataverse: &dataverse,
        didomi: &didomi,
        resolved: resolved.as_ref(),
    };
    let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
    let mut tally = Tally::default();
    for queue in &queues {
        drain_queue(&sqs, queue, &replayer, mode, &mut tally).await?;
    }

    let Tally {
        done,
        failed,
        records,
    } = tally;
    let verb = if dry_run {
        "would be replayed"
    } else {
        "replayed"
    };
    let text = format!(
        "{done} parked deliver{} {verb}, {failed} failed{}\n",
        if done == 1 { "y" } else { "ies" },
        if failed > 0 && !dry_run {
            " (still queued: run replay again once the cause is fixed)"
        } else {
            ""
        }
    );
    Ok(Report {
        text,
        json: json!({"replayed": done, "failed": failed, "dry_run": dry_run,
                     "queues": queues.len(), "records": records}),
        ok: failed == 0,
        reason: (failed > 0).then(|| format!("{failed} parked deliveries could not be replayed")),
    })
}

/// The records the queue reports visible (approximately, as SQS counts).
async fn visible(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<u64> {
    let (visible, _) = EventSource::new(sqs.clone(), queue).counts().await?;
    Ok(visible)
}

async fn drain_queue(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    replayer: &Replayer<'_>,
    mode: Mode,
    tally: &mut Tally,
) -> Result<()> {
    let pseudonyms = replayer.config.pseudonyms();
    let mut seen = HashSet::new();
    // A dry run keeps what it read hidden until it has been through the
    // whole queue, so that it reads each record once, then shows them all
    // again as it found them.
    let mut to_show_again = Vec::new();
    let (mut done, mut failed) = (0usize, 0usize);
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(VISIBILITY_SECONDS)
            .wait_time_seconds(WAIT_SECONDS)
            .send()
            .await
            .map_err(CliError::queue)?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            if visible(sqs, queue).await? == 0 {
                break;
            }
            continue;
        }
        for message in messages {
            let receipt = message.receipt_handle.clone().unwrap_or_default();
            // A failed record that shows again during a long run was
            // reported already: leave it hidden.
            if !seen.insert(message.message_id.clone().unwrap_or_default()) {
                continue;
            }
            let record: Result<ParkedDelivery, String> =
                serde_json::from_str(message.body().unwrap_or_default())
                    .map_err(|_| "not a parked delivery record; left in the queue".to_string());
            let who = match &record {
                Ok(r) => r
                    .organization_user_id
                    .as_deref()
                    .map(|u| format!("user {}", pseudonyms.of(u)))
                    .or_else(|| r.contact_id.as_ref().map(|c| format!("contact {c}")))
                    .or_else(|| {
                        r.consent_record_id
                            .as_ref()
                            .map(|c| format!("consent record {c}"))
                    })
                    .unwrap_or_else(|| "?".into()),
                Err(_) => "?".into(),
            };
            let outcome = match record {
                Ok(record) => replayer
                    .replay(&record, mode, crate::deadline())
                    .await
                    .map_err(|failure| failure.reason),
                Err(reason) => Err(reason),
            };
            match &outcome {
                Ok(what) => {
                    done += 1;
                    if mode == Mode::Apply {
                        sqs.delete_message()
                            .queue_url(queue)
                            .receipt_handle(&receipt)
                            .send()
                            .await
                            .map_err(CliError::queue)?;
                    }
                    eprintln!("replay: {who}: {what}");
                }
                Err(reason) => {
                    failed += 1;
                    let stays = if mode == Mode::Apply {
                        ", stays queued"
                    } else {
                        ""
                    };
                    eprintln!("replay: {who}: FAILED{stays}: {reason}");
                }
            }
            if mode == Mode::DryRun {
                to_show_again.push(receipt);
            }
            tally
                .records
                .push(json!({"record": who, "ok": outcome.is_ok(),
                "result": outcome.unwrap_or_else(|e| e)}));
        }
        let left = visible(sqs, queue).await?;
        eprintln!("replay: {} done, about {left} left", done + failed);
    }
    for receipt in to_show_again {
        sqs.change_message_visibility()
            .queue_url(queue)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(CliError::queue)?;
    }
    tally.done += done;
    tally.failed += failed;
    Ok(())
}
