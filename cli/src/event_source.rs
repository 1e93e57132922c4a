//! Lambda's SQS event source, for the local run and the tests: what AWS does
//! between a parked queue and its function — receive a batch, hand it over
//! as an SQS event, then delete every record the answer's
//! `batchItemFailures` does not name and leave those to show again.

use crate::error::{CliError, Result};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::{json, Value};

/// One queue, read as the event source reads it.
pub struct EventSource {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// A batch handed to the function: the SQS event and the receipts to settle.
pub struct Batch {
    pub event: Value,
    /// (message id, receipt handle) of each record.
    pub records: Vec<(String, String)>,
}

impl EventSource {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        EventSource {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Up to ten visible records, hidden for `visibility` seconds while the
    /// function works on them; `None` when the queue has none visible.
    pub async fn receive(&self, visibility: i32) -> Result<Option<Batch>> {
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(visibility)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(CliError::queue)?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(None);
        }
        // The queue's name stands for its ARN: the function does not read it.
        let name = self.queue_url.rsplit('/').next().unwrap_or_default();
        let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
        let mut records = Vec::new();
        let mut events = Vec::new();
        for message in messages {
            let id = message.message_id().unwrap_or_default().to_string();
            let receipt = message.receipt_handle().unwrap_or_default().to_string();
            let attributes: serde_json::Map<String, Value> = message
                .attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_string(), Value::String(value.clone())))
                .collect();
            events.push(json!({
                "messageId": id,
                "receiptHandle": receipt,
                "body": message.body().unwrap_or_default(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": message.md5_of_body().unwrap_or_default(),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1"
            }));
            records.push((id, receipt));
        }
        Ok(Some(Batch {
            event: json!({ "Records": events }),
            records,
        }))
    }

    /// Deletes the records of `batch` that `answer` does not name as
    /// failed; returns the ids of those it names.
    pub async fn settle(&self, batch: &Batch, answer: &Value) -> Result<Vec<String>> {
        let failed: Vec<String> = answer["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
            .collect();
        for (id, receipt) in &batch.records {
            if !failed.contains(id) {
                self.client
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(CliError::queue)?;
            }
        }
        Ok(failed)
    }

    /// Shows every record of `batch` again at once (as if its delay had
    /// passed).
    pub async fn show_again(&self, batch: &Batch) -> Result<()> {
        for (_, receipt) in &batch.records {
            self.client
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(CliError::queue)?;
        }
        Ok(())
    }

    /// (visible, in flight): the records the queue holds, as it counts them.
    pub async fn counts(&self) -> Result<(u64, u64)> {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(CliError::queue)?;
        let count = |name: Name| {
            answer
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            count(Name::ApproximateNumberOfMessages),
            count(Name::ApproximateNumberOfMessagesNotVisible),
        ))
    }
}
