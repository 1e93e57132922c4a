//! Secrets Manager on loopback: moto's server (from PyPI), behind a small
//! proxy that counts the requests the function makes.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

pub const REGION: &str = "us-east-1";

/// A running `moto_server`, stopped on drop.
pub struct Moto {
    pub url: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts `moto_server` (the `MOTO_SERVER` variable, else the one on PATH).
    pub async fn start() -> Moto {
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start {program} ({e}): install it with `pip install 'moto[server]'` (scripts/test does)")
            });
        let moto = Moto {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http
            .get(format!("{}/moto-api/", moto.url))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }

    pub async fn secrets_client(&self) -> aws_sdk_secretsmanager::Client {
        let config = aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }

    pub async fn create_secret(&self, name: &str, value: &str) {
        self.secrets_client()
            .await
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
}

impl Moto {
    pub fn sqs_client(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// An S3 client of moto (path-style: one host name for every bucket).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(&self.url)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) {
        self.s3_client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap();
    }

    /// Creates a queue; its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        self.sqs_client()
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap()
    }

    /// The bodies of the messages in a queue, left in it and visible.
    pub async fn peek(&self, queue_url: &str) -> Vec<serde_json::Value> {
        let client = self.sqs_client();
        let mut bodies = Vec::new();
        let mut receipts = Vec::new();
        loop {
            // Hidden while listing, so that each is received once.
            let messages = client
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                bodies.push(serde_json::from_str(message.body().unwrap()).unwrap());
                receipts.push(message.receipt_handle().unwrap().to_string());
            }
        }
        for receipt in receipts {
            client
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        }
        bodies
    }
}

/// Forwards requests to an upstream and counts the `GetSecretValue` calls.
pub struct CountingProxy {
    pub url: String,
    pub secret_reads: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
    secret_reads: Arc<AtomicUsize>,
}

async fn forward(
    State(upstream): State<Upstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("x-amz-target").and_then(|v| v.to_str().ok())
        == Some("secretsmanager.GetSecretValue")
    {
        upstream.secret_reads.fetch_add(1, Ordering::SeqCst);
    }
    let mut request = upstream.http.request(
        method,
        format!(
            "{}{}",
            upstream.url,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        ),
    );
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            let mut answer = (status, body).into_response();
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    answer.headers_mut().insert(name, value.clone());
                }
            }
            answer
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let secret_reads = Arc::new(AtomicUsize::new(0));
        let state = Upstream {
            url: upstream.to_string(),
            http: reqwest::Client::new(),
            secret_reads: secret_reads.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingProxy {
            url,
            secret_reads,
            server,
        }
    }

    pub fn secret_reads(&self) -> usize {
        self.secret_reads.load(Ordering::SeqCst)
    }
}

/// `consent-sync` with AWS pointed at moto and the configuration in a file.
pub fn consent_sync_with_aws(
    moto_url: &str,
    config: &serde_json::Value,
    args: &[&str],
) -> (i32, String, String) {
    let path = std::env::temp_dir().join(format!(
        "consent-sync-replay-{}-{}.json",
        std::process::id(),
        args.len()
    ));
    std::fs::write(&path, config.to_string()).unwrap();
    let output = std::process::Command::new(crate::binary("consent-sync"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .env("AWS_ENDPOINT_URL", moto_url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("PARKED_QUEUE_URL")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
