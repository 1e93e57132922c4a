//! Parking: a delivery given up on for a reason that may pass (a service
//! unavailable or throttling after retries, the deadline) is recorded in the
//! function's own SQS queue and answered 202: from then on it is ours to
//! apply. The record names what to look at again, never the consent values:
//! whoever drains it — the function itself ([`drain`]) or `consent-sync
//! replay` — reads the current truth from the source ([`replay`]).

pub mod drain;
pub mod replay;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const PARKED_QUEUE_URL: &str = "PARKED_QUEUE_URL";
pub const DIDOMI_TO_DYNAMICS: &str = "didomi-to-dynamics";
pub const DYNAMICS_TO_DIDOMI: &str = "dynamics-to-didomi";

/// One parked delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedDelivery {
    /// `didomi-to-dynamics` or `dynamics-to-didomi`.
    pub direction: String,
    /// Didomi → Dynamics: the user to read again from Didomi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_user_id: Option<String>,
    /// Dynamics → Didomi: the contact to read again from Dataverse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// Dynamics → Didomi: the Contact Point Consent record to read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_record_id: Option<String>,
    /// Dynamics → Didomi: the changed mapped columns, as the function
    /// determined them (names only): a replay sends their current values
    /// even where Didomi holds no choice yet, since a person set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// The delivery's own id (Didomi entity id, Dataverse correlation id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The delivery's own time, as the sender wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_time: Option<String>,
    /// Why it was given up on, e.g. `dataverse_unavailable`, `didomi_throttled`, `deadline`.
    pub error_class: String,
    pub parked_at: String,
}

/// The queue, when `PARKED_QUEUE_URL` is set.
#[derive(Debug, Clone)]
pub struct Parking {
    queue: Option<(aws_sdk_sqs::Client, String)>,
}

impl Parking {
    pub fn disabled() -> Self {
        Parking { queue: None }
    }

    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Parking {
            queue: Some((client, queue_url.into())),
        }
    }

    /// From `PARKED_QUEUE_URL`; unset or empty: nothing is parked.
    pub fn from_env(aws: &aws_config::SdkConfig) -> Self {
        match std::env::var(PARKED_QUEUE_URL) {
            Ok(url) if !url.trim().is_empty() => {
                Self::new(aws_sdk_sqs::Client::new(aws), url.trim())
            }
            _ => Self::disabled(),
        }
    }

    /// Hides a received record for `delay` more (SQS caps it at 12 hours),
    /// so that a record that failed again is not tried again at once.
    /// `Ok(false)` when parking is off: the record then shows again after
    /// the queue's own visibility timeout.
    pub async fn delay(&self, receipt_handle: &str, delay: Duration) -> Result<bool, String> {
        let Some((client, url)) = &self.queue else {
            return Ok(false);
        };
        client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(delay.as_secs().min(drain::MAX_VISIBILITY.as_secs()) as i32)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
        Ok(true)
    }

    /// Records `delivery`. `Ok(false)` when parking is off; an error says
    /// why the queue refused it.
    pub async fn park(&self, delivery: &ParkedDelivery) -> Result<bool, String> {
        let Some((client, url)) = &self.queue else {
            return Ok(false);
        };
        let body = serde_json::to_string(delivery).map_err(|e| e.to_string())?;
        client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
        Ok(true)
    }
}

/// Parks a delivery that failed for a reason that may pass, counts it
/// (`parked` or `failed`), and says how that went: for the log and the
/// answer, which stays a failure either way.
pub(crate) async fn park_failure(
    parking: &Parking,
    transient: bool,
    record: ParkedDelivery,
) -> Parked {
    let parked = if !transient {
        Parked::NotParkable
    } else {
        match parking.park(&record).await {
            Ok(true) => Parked::Yes,
            Ok(false) => Parked::Off,
            Err(error) => Parked::Failed(error),
        }
    };
    crate::metrics::count(if parked.is_parked() {
        "parked"
    } else {
        "failed"
    });
    parked
}

/// What became of a failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parked {
    /// Recorded in the function's parked queue, which drains it.
    Yes,
    /// `PARKED_QUEUE_URL` is not set.
    Off,
    /// The request was refused (a 4xx or a configuration problem): a replay
    /// would fail the same way.
    NotParkable,
    /// The queue refused the record; the delivery rests on the sender's retries.
    Failed(String),
}

impl Parked {
    pub(crate) fn is_parked(&self) -> bool {
        *self == Parked::Yes
    }

    /// For the log line.
    pub(crate) fn describe(&self) -> String {
        match self {
            Parked::Yes => "parked: the queue's drain applies it".into(),
            Parked::Off => "not parked (PARKED_QUEUE_URL unset)".into(),
            Parked::NotParkable => "not parked (not a passing failure)".into(),
            Parked::Failed(error) => format!("parking failed too: {error}"),
        }
    }
}

/// The answer to a delivery that failed: 202 `{"outcome": "parked",
/// "error_class": …}` once it is durably parked — the sender stops retrying
/// and the drain applies it — otherwise `status` with `{"error": …,
/// "parked": false}`, which the sender retries: nothing is acknowledged
/// that was neither applied nor parked.
pub(crate) fn failure_response(
    status: u16,
    message: &str,
    error_class: &str,
    parked: &Parked,
) -> aws_lambda_events::apigw::ApiGatewayV2httpResponse {
    if parked.is_parked() {
        return crate::gateway::json_response(
            202,
            &serde_json::json!({"outcome": "parked", "error_class": error_class}),
        );
    }
    crate::gateway::json_response(
        status,
        &serde_json::json!({"error": message, "parked": false}),
    )
}

/// Now, to the second, in UTC.
pub(crate) fn now_utc() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    crate::time::iso_utc(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_what_to_read_again_and_no_consent_values() {
        let record = ParkedDelivery {
            direction: DIDOMI_TO_DYNAMICS.into(),
            organization_user_id: Some("jane@example.com".into()),
            contact_id: None,
            consent_record_id: None,
            columns: None,
            delivery_id: Some("0c1e8b1a".into()),
            delivery_time: Some("2026-11-26T10:05:33.421Z".into()),
            error_class: "dataverse_unavailable".into(),
            parked_at: "2026-11-26T10:06:00Z".into(),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "direction": "didomi-to-dynamics",
                "organization_user_id": "jane@example.com",
                "delivery_id": "0c1e8b1a",
                "delivery_time": "2026-11-26T10:05:33.421Z",
                "error_class": "dataverse_unavailable",
                "parked_at": "2026-11-26T10:06:00Z"
            })
        );
        let back: ParkedDelivery = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }
}
