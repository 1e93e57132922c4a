//! The Lambda Runtime API (`/2018-06-01/runtime/…`) that a custom runtime
//! polls for invocations, so that a compiled function binary can run here
//! exactly as Lambda starts it (`AWS_LAMBDA_RUNTIME_API=host:port`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:consent-sync-local";

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// The function's response document.
    Response(Value),
    /// The function reported an error (`/invocation/{id}/error`).
    Error {
        error_type: String,
        error_message: String,
    },
    /// The runtime reported an initialisation error.
    InitError {
        error_type: String,
        error_message: String,
    },
}

struct Queued {
    id: String,
    event: Value,
    deadline_ms: u64,
}

#[derive(Clone)]
struct Shared {
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Invocation>>>>,
    init_error: Arc<Mutex<Option<Invocation>>>,
    /// When the function first asked for an event: the end of its init.
    first_poll: Arc<std::sync::OnceLock<std::time::Instant>>,
    /// Requests for the next event still waiting for one.
    polls: Arc<AtomicUsize>,
}

/// Counts a waiting `next` until it is answered or its connection is gone.
struct Poll(Arc<AtomicUsize>);

impl Drop for Poll {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    sender: mpsc::UnboundedSender<Queued>,
    shared: Shared,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error_of(body: &[u8]) -> (String, String) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (field("errorType"), field("errorMessage"))
}

async fn next(State(shared): State<Shared>) -> Response {
    shared.first_poll.get_or_init(std::time::Instant::now);
    shared.polls.fetch_add(1, Ordering::SeqCst);
    let poll = Poll(shared.polls.clone());
    let Some(queued) = shared.queue.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    drop(poll);
    let mut response = axum::Json(queued.event).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "Lambda-Runtime-Aws-Request-Id",
        queued.id.parse().expect("ascii"),
    );
    headers.insert("Lambda-Runtime-Deadline-Ms", queued.deadline_ms.into());
    headers.insert(
        "Lambda-Runtime-Invoked-Function-Arn",
        FUNCTION_ARN.parse().expect("ascii"),
    );
    headers.insert(
        "Lambda-Runtime-Trace-Id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
            .parse()
            .expect("ascii"),
    );
    response
}

fn finish(shared: &Shared, id: &str, result: Invocation) -> Response {
    match shared
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id)
    {
        Some(sender) => {
            let _ = sender.send(result);
            (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}),
            ),
        )
            .into_response(),
    }
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let value = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    finish(&shared, &id, Invocation::Response(value))
}

async fn error(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (error_type, error_message) = error_of(&body);
    finish(
        &shared,
        &id,
        Invocation::Error {
            error_type,
            error_message,
        },
    )
}

async fn init_error(State(shared): State<Shared>, body: Bytes) -> Response {
    let (error_type, error_message) = error_of(&body);
    *shared.init_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(Invocation::InitError {
        error_type,
        error_message,
    });
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let address = listener.local_addr()?.to_string();
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            queue: Arc::new(tokio::sync::Mutex::new(receiver)),
            waiting: Arc::default(),
            init_error: Arc::default(),
            first_poll: Arc::default(),
            polls: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RuntimeApi {
            address,
            sender,
            shared,
            server,
        })
    }

    /// Waits until no request for the next event is pending: after a function
    /// process is stopped, its last poll may linger until the server sees
    /// the connection closed, and an event handed to it would be lost.
    pub async fn wait_until_unpolled(&self, at_most: Duration) -> bool {
        let until = std::time::Instant::now() + at_most;
        while self.shared.polls.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// When the function first polled for an event, i.e. finished its init.
    pub fn first_poll(&self) -> Option<std::time::Instant> {
        self.shared.first_poll.get().copied()
    }

    /// Delivers `event` to the function and waits for its outcome, with the
    /// function's `timeout` as Lambda's deadline. `None` when nothing came back
    /// in that time (plus a second of grace).
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Option<Invocation> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let deadline_ms = (now + timeout).as_millis() as u64;
        let (done, outcome) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), done);
        self.sender
            .send(Queued {
                id,
                event,
                deadline_ms,
            })
            .ok()?;
        match tokio::time::timeout(timeout + Duration::from_secs(1), outcome).await {
            Ok(Ok(result)) => Some(result),
            _ => self
                .shared
                .init_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
