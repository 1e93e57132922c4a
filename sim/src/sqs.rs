//! Amazon SQS, as far as consent-sync's parked queues use it, in the AWS
//! JSON 1.0 protocol the SDK speaks (`POST /`, `X-Amz-Target:
//! AmazonSQS.<Action>`, a JSON body): create a queue, send, receive with
//! long polling and a visibility timeout, delete, change a record's
//! visibility, count. So that the local run parks and drains with no AWS
//! account and no other program.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::SimState;

/// Queue URLs name this account, as SQS's do.
pub const ACCOUNT: &str = "123456789012";
/// SQS's default visibility timeout.
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// Long polling waits at most this long (SQS: 20 s).
const LONGEST_WAIT: Duration = Duration::from_secs(20);

/// The queues, by name.
#[derive(Debug, Default)]
pub struct Queues {
    queues: BTreeMap<String, Vec<Message>>,
}

#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: String,
    sent_ms: u128,
    receive_count: u32,
    /// The receipt handle of the latest receive.
    receipt: Option<String>,
    visible_at: Instant,
}

fn error(code: &str, message: &str) -> Response {
    let mut response = (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"__type": format!("com.amazonaws.sqs#{code}"), "message": message})),
    )
        .into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

fn answer(body: Value) -> Response {
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

/// The action an SQS request names, when it is one.
pub fn action(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-amz-target")?
        .to_str()
        .ok()?
        .strip_prefix("AmazonSQS.")
        .map(str::to_string)
}

fn queue_name(request: &Value) -> Option<String> {
    let url = request["QueueUrl"].as_str()?;
    url.rsplit('/').next().map(str::to_string)
}

fn seconds(value: &Value) -> Option<Duration> {
    value.as_u64().map(Duration::from_secs)
}

/// Serves one SQS request; long polling waits outside the state's lock.
pub async fn serve(
    state: &Arc<Mutex<SimState>>,
    action: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error("InvalidRequest", "the body is not JSON");
    };
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    match action {
        "CreateQueue" | "GetQueueUrl" => {
            let Some(name) = request["QueueName"].as_str().filter(|n| !n.is_empty()) else {
                return error("MissingParameter", "QueueName is required");
            };
            let mut state = lock();
            if action == "GetQueueUrl" && !state.sqs.queues.contains_key(name) {
                return error("QueueDoesNotExist", "The specified queue does not exist.");
            }
            state.sqs.queues.entry(name.to_string()).or_default();
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            answer(json!({"QueueUrl": format!("http://{host}/{ACCOUNT}/{name}")}))
        }
        "SendMessage" => {
            let Some(body) = request["MessageBody"].as_str() else {
                return error("MissingParameter", "MessageBody is required");
            };
            let mut state = lock();
            let Some(queue) = queue_name(&request).and_then(|n| state.sqs.queues.get_mut(&n))
            else {
                return error("QueueDoesNotExist", "The specified queue does not exist.");
            };
            let id = uuid::Uuid::new_v4().to_string();
            queue.push(Message {
                id: id.clone(),
                body: body.to_string(),
                sent_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
                receive_count: 0,
                receipt: None,
                visible_at: Instant::now(),
            });
            answer(json!({"MessageId": id}))
        }
        "ReceiveMessage" => {
            let wait = seconds(&request["WaitTimeSeconds"])
                .unwrap_or_default()
                .min(LONGEST_WAIT);
            let until = Instant::now() + wait;
            loop {
                // The lock is released before the wait.
                let received = receive(&mut lock(), &request);
                match received {
                    None => {
                        return error("QueueDoesNotExist", "The specified queue does not exist.")
                    }
                    Some(messages) if !messages.is_empty() || Instant::now() >= until => {
                        return answer(json!({"Messages": messages}));
                    }
                    Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        "DeleteMessage" | "ChangeMessageVisibility" => {
            let mut state = lock();
            let Some(queue) = queue_name(&request).and_then(|n| state.sqs.queues.get_mut(&n))
            else {
                return error("QueueDoesNotExist", "The specified queue does not exist.");
            };
            let receipt = request["ReceiptHandle"].as_str();
            let Some(index) = queue
                .iter()
                .position(|m| m.receipt.as_deref() == receipt && receipt.is_some())
            else {
                return error("ReceiptHandleIsInvalid", "The receipt handle is not valid.");
            };
            if action == "DeleteMessage" {
                queue.remove(index);
            } else {
                let visibility = seconds(&request["VisibilityTimeout"]).unwrap_or_default();
                queue[index].visible_at = Instant::now() + visibility;
            }
            answer(json!({}))
        }
        "GetQueueAttributes" => {
            let state = lock();
            let Some(queue) = queue_name(&request).and_then(|n| state.sqs.queues.get(&n)) else {
                return error("QueueDoesNotExist", "The specified queue does not exist.");
            };
            let now = Instant::now();
            let visible = queue.iter().filter(|m| m.visible_at <= now).count();
            answer(json!({"Attributes": {
                "ApproximateNumberOfMessages": visible.to_string(),
                "ApproximateNumberOfMessagesNotVisible": (queue.len() - visible).to_string(),
            }}))
        }
        other => error(
            "InvalidAction",
            &format!("the simulator does not serve {other}"),
        ),
    }
}

/// The visible messages a receive takes (hidden for its visibility timeout).
/// `None` when the queue does not exist.
fn receive(state: &mut SimState, request: &Value) -> Option<Vec<Value>> {
    let queue = queue_name(request).and_then(|n| state.sqs.queues.get_mut(&n))?;
    let most = request["MaxNumberOfMessages"]
        .as_u64()
        .unwrap_or(1)
        .clamp(1, 10) as usize;
    let visibility = seconds(&request["VisibilityTimeout"]).unwrap_or(DEFAULT_VISIBILITY);
    let now = Instant::now();
    let mut taken = Vec::new();
    for message in queue.iter_mut().filter(|m| m.visible_at <= now).take(most) {
        message.receive_count += 1;
        message.visible_at = now + visibility;
        let receipt = uuid::Uuid::new_v4().to_string();
        message.receipt = Some(receipt.clone());
        taken.push(json!({
            "MessageId": message.id,
            "ReceiptHandle": receipt,
            "Body": message.body,
            "Attributes": {
                "ApproximateReceiveCount": message.receive_count.to_string(),
                "SentTimestamp": message.sent_ms.to_string(),
            }
        }));
    }
    Some(taken)
}
