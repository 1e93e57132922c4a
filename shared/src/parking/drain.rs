//! Draining with no one in the loop: Lambda's SQS event source hands each
//! function batches of its own parked queue. Each record is applied through
//! the one replay rule; the records that still fail are named in
//! `batchItemFailures` and hidden for a delay that grows with their receive
//! count, so that a record outlives at least 12 hours of outage before the
//! queue's redrive moves it to the dead-letter queue, where a person looks.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::function::Setup;
use crate::parking::replay::{Mode, ReplayFailure, Replayer};
use crate::parking::ParkedDelivery;
use crate::retry::Deadline;

/// The longest SQS lets a received record stay hidden.
pub(crate) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// The delay after a record's first failed drain; it doubles with each
/// receive, up to [`LONGEST_RETRY`].
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(60);
pub(crate) const LONGEST_RETRY: Duration = Duration::from_secs(2 * 3600);
/// The parked queues' redrive `maxReceiveCount` (template.yaml): with the
/// delays above, a record is tried for about 16 hours before it reaches
/// the dead-letter queue.
pub(crate) const MAX_RECEIVE_COUNT: u32 = 14;
/// Kept back from the invocation's deadline to hide the failed records.
const RESERVE: Duration = Duration::from_secs(2);

/// How long a record that failed at its `receive_count`-th receive (1 for
/// the first) stays hidden before it is tried again.
pub(crate) fn retry_delay(receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(16);
    FIRST_RETRY
        .saturating_mul(1 << doublings)
        .min(LONGEST_RETRY)
}

/// Lambda's SQS event (DESIGN §2), as far as the drain reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    pub receipt_handle: String,
    #[serde(default)]
    pub body: String,
    /// `ApproximateReceiveCount` among others, as strings.
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    #[serde(default)]
    pub event_source: Option<String>,
}

impl SqsRecord {
    fn receive_count(&self) -> u32 {
        self.attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(1)
    }
}

impl SqsEvent {
    /// Whether `event` is an SQS event (rather than an HTTP one).
    pub fn is_sqs(event: &serde_json::Value) -> bool {
        event["Records"]
            .as_array()
            .and_then(|records| records.first())
            .is_some_and(|record| record["eventSource"] == "aws:sqs")
    }
}

/// The answer Lambda reads: the records not applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    pub item_identifier: String,
}

/// Drains one batch of the function's parked queue.
pub async fn drain(sources: &Setup, batch: &SqsEvent, deadline: Deadline) -> BatchResponse {
    let started = std::time::Instant::now();
    let work = Deadline::after(deadline.remaining().saturating_sub(RESERVE));
    // The configuration and consent purposes every record needs; when they
    // cannot be had, no record is tried and each waits its delay.
    let config = sources.config.get().await.map_err(|e| ReplayFailure {
        reason: e.to_string(),
        transient: true,
    });
    let resolved = match &config {
        Ok(config) => sources
            .resolved
            .get(config, &sources.dataverse, work)
            .await
            .map_err(|e| ReplayFailure {
                transient: e.is_transient(),
                reason: e.to_string(),
            }),
        Err(e) => Err(e.clone()),
    };
    let replayer = match (&config, &resolved) {
        (Ok(config), Ok(resolved)) => Ok(Replayer {
            config,
            dataverse: &sources.dataverse,
            didomi: &sources.didomi,
            resolved: resolved.as_deref(),
        }),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    if let Err(e) = &replayer {
        tracing::error!(error = %e, records = batch.records.len(), "cannot drain the parked queue now; every record waits");
    }

    let mut failures = Vec::new();
    // After one record met an outage, the others would meet it too: they
    // wait their turn rather than add load to a system that is down.
    let mut outage = false;
    let (mut applied, mut waiting) = (0usize, 0usize);
    for record in &batch.records {
        let count = record.receive_count();
        let delay = match &replayer {
            Err(_) => Some(retry_delay(count)),
            Ok(_) if outage => Some(retry_delay(count)),
            // Not started for lack of time: tried again at once.
            Ok(_) if work.remaining() < Duration::from_secs(1) => Some(Duration::ZERO),
            Ok(replayer) => drain_one(replayer, record, count, work)
                .await
                .err()
                .map(|failure| {
                    outage |= failure.transient;
                    failure.delay
                }),
        };
        match delay {
            None => applied += 1,
            Some(delay) => {
                waiting += 1;
                failures.push(ItemFailure {
                    item_identifier: record.message_id.clone(),
                });
                match sources.parking.delay(&record.receipt_handle, delay).await {
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        message_id = %record.message_id,
                        error = %error,
                        "could not delay a parked record; it shows again after the queue's visibility timeout"
                    ),
                }
            }
        }
    }
    tracing::info!(
        records = batch.records.len(),
        applied,
        waiting,
        outage,
        duration_ms = started.elapsed().as_millis() as u64,
        "parked batch drained"
    );
    BatchResponse {
        batch_item_failures: failures,
    }
}

struct Failed {
    delay: Duration,
    transient: bool,
}

async fn drain_one(
    replayer: &Replayer<'_>,
    record: &SqsRecord,
    count: u32,
    deadline: Deadline,
) -> Result<(), Failed> {
    let Ok(parked) = serde_json::from_str::<ParkedDelivery>(&record.body) else {
        // Trying again will not make it readable: shown again at once, it
        // reaches the dead-letter queue after a few receives.
        crate::metrics::count("parked_unreadable");
        tracing::error!(
            message_id = %record.message_id,
            body_bytes = record.body.len(),
            receive_count = count,
            "a parked record that is not a parked delivery; left for the dead-letter queue"
        );
        return Err(Failed {
            delay: Duration::ZERO,
            transient: false,
        });
    };
    let user = parked
        .organization_user_id
        .as_deref()
        .map(|u| replayer.config.pseudonyms().of(u));
    match replayer.replay(&parked, Mode::Apply, deadline).await {
        Ok(what) => {
            crate::metrics::count("parked_applied");
            tracing::info!(
                message_id = %record.message_id,
                direction = %parked.direction,
                user = user.as_deref().unwrap_or("-"),
                receive_count = count,
                result = %what,
                "parked record applied"
            );
            Ok(())
        }
        Err(failure) => {
            let delay = retry_delay(count);
            crate::metrics::count("parked_waiting");
            let level_error = !failure.transient || count >= MAX_RECEIVE_COUNT;
            let message = if failure.transient {
                "parked record not applied yet; tried again later"
            } else {
                "parked record cannot be applied as it is; it waits for a person in the dead-letter queue"
            };
            if level_error {
                tracing::error!(message_id = %record.message_id, direction = %parked.direction,
                    user = user.as_deref().unwrap_or("-"), receive_count = count,
                    retry_in_s = delay.as_secs(), error = %failure, "{message}");
            } else {
                tracing::warn!(message_id = %record.message_id, direction = %parked.direction,
                    user = user.as_deref().unwrap_or("-"), receive_count = count,
                    retry_in_s = delay.as_secs(), error = %failure, "{message}");
            }
            Err(Failed {
                delay,
                transient: failure.transient,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_keeps_failing_outlives_twelve_hours_of_outage() {
        assert_eq!(retry_delay(1), Duration::from_secs(60));
        assert_eq!(retry_delay(2), Duration::from_secs(120));
        assert_eq!(retry_delay(8), Duration::from_secs(2 * 3600));
        assert_eq!(retry_delay(u32::MAX), LONGEST_RETRY);
        // How long a record that keeps failing stays in the parked queue
        // before the redrive moves it: the sum of its delays.
        let total: Duration = (1..=MAX_RECEIVE_COUNT).map(retry_delay).sum();
        assert!(total >= Duration::from_secs(12 * 3600), "{total:?}");
        assert!(total <= Duration::from_secs(24 * 3600), "{total:?}");
        assert!(LONGEST_RETRY <= MAX_VISIBILITY);
    }

    #[test]
    fn lambdas_sqs_event_is_recognised_and_read() {
        let event = serde_json::json!({"Records": [{
            "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
            "body": "{\"direction\": \"didomi-to-dynamics\"}",
            "attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1545082649183"},
            "messageAttributes": {},
            "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
            "awsRegion": "us-east-2"
        }]});
        assert!(SqsEvent::is_sqs(&event));
        let batch: SqsEvent = serde_json::from_value(event).unwrap();
        assert_eq!(batch.records[0].receive_count(), 3);
        assert!(!SqsEvent::is_sqs(
            &serde_json::json!({"version": "2.0", "body": "{}"})
        ));
        assert!(!SqsEvent::is_sqs(&serde_json::json!({"Records": []})));
        let answer = BatchResponse {
            batch_item_failures: vec![ItemFailure {
                item_identifier: "059f36b4".into(),
            }],
        };
        assert_eq!(
            serde_json::to_value(answer).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "059f36b4"}]})
        );
    }
}
