//! Test support: a function wired to the simulators, sample deliveries, and
//! the external processes the end-to-end tests need (moto's Secrets Manager).

pub mod export;
pub mod lambda;
pub mod moto;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use consent_sync::function::Function;
use consent_sync::{ConfigSource, Deadline, DidomiToDynamics, DynamicsToDidomi};
use consent_sync_sim::{sample_contacts, Identity, Simulator};
use serde_json::Value;

pub const JANE: &str = "6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c";
pub const OBRIEN: &str = "3b0e6f2a-8c1d-4e5f-a6b7-c8d9e0f1a2b3";

/// A sample payload from `events/`.
pub fn sample(name: &str) -> String {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A sample delivery with its user replaced, as JSON text.
pub fn sample_for(name: &str, organization_user_id: &str) -> String {
    sample(name).replace("jane.doe@example.com", organization_user_id)
}

/// The v2.0 event API Gateway would deliver for this request.
pub fn http_event(
    method: &str,
    body: &str,
    source_ip: &str,
    jwt_claims: Option<Value>,
) -> ApiGatewayV2httpRequest {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "user-agent",
        HeaderValue::from_static("Didomi-Webhooks/1.0"),
    );
    let event = consent_sync_sim::gateway::event(
        &Method::from_bytes(method.as_bytes()).unwrap(),
        &Uri::from_static("/"),
        &headers,
        body.as_bytes(),
        source_ip,
        jwt_claims.as_ref().and_then(Value::as_object),
    );
    serde_json::from_value(event).unwrap()
}

pub fn post(body: &str) -> ApiGatewayV2httpRequest {
    http_event("POST", body, "203.0.113.10", None)
}

/// The status and JSON body of a response.
pub fn answer(response: &ApiGatewayV2httpResponse) -> (i64, Value) {
    let body = match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
        _ => Value::Null,
    };
    (response.status_code, body)
}

/// The `didomi-to-dynamics` handler, configured for a simulator.
pub struct Fixture {
    pub sim: Simulator,
    pub function: DidomiToDynamics,
}

impl Fixture {
    /// The simulator with the sample contacts and the local configuration,
    /// changed by `adjust`.
    pub async fn new(adjust: impl FnOnce(&mut Value)) -> Fixture {
        let sim = Simulator::start(Identity::default(), sample_contacts())
            .await
            .unwrap();
        let mut config = sim.config();
        adjust(&mut config);
        let function = DidomiToDynamics::new(
            ConfigSource::Inline(config.to_string()),
            Duration::from_secs(300),
        );
        Fixture { sim, function }
    }

    pub async fn deliver(&self, request: &ApiGatewayV2httpRequest) -> (i64, Value) {
        self.deliver_within(request, Duration::from_secs(10)).await
    }

    pub async fn deliver_within(
        &self,
        request: &ApiGatewayV2httpRequest,
        budget: Duration,
    ) -> (i64, Value) {
        let response = self
            .function
            .handle(request, Deadline::after(budget))
            .await
            .expect("configuration loads");
        answer(&response)
    }

    pub fn contact(&self, id: &str) -> serde_json::Map<String, Value> {
        self.sim.contact_by_id(id).expect("contact exists")
    }
}

/// The key `events/local-config.json` configures for Dataverse's webhook.
pub const WEBHOOK_KEY: &str = "local-dynamics-webhook-key-0123456789";

/// What Dataverse posts to the webhook: the context JSON with the
/// registered key header (if any) and `extra` headers.
pub fn dataverse_post(
    body: &str,
    key: Option<&str>,
    extra: &[(&'static str, &'static str)],
) -> ApiGatewayV2httpRequest {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "x-ms-dynamics-organization",
        HeaderValue::from_static("sim"),
    );
    headers.insert(
        "x-ms-dynamics-entity-name",
        HeaderValue::from_static("contact"),
    );
    if let Some(key) = key {
        headers.insert("x-consent-sync-key", HeaderValue::from_str(key).unwrap());
    }
    for (name, value) in extra {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    let event = consent_sync_sim::gateway::event(
        &Method::POST,
        &Uri::from_static("/"),
        &headers,
        body.as_bytes(),
        "20.50.0.1",
        None,
    );
    serde_json::from_value(event).unwrap()
}

/// The `dynamics-to-didomi` handler, configured for a simulator.
pub struct ReverseFixture {
    pub sim: Simulator,
    pub function: DynamicsToDidomi,
}

impl ReverseFixture {
    pub async fn new(adjust: impl FnOnce(&mut Value)) -> ReverseFixture {
        let sim = Simulator::start(Identity::default(), sample_contacts())
            .await
            .unwrap();
        let mut config = sim.config();
        adjust(&mut config);
        let function = DynamicsToDidomi::new(
            ConfigSource::Inline(config.to_string()),
            Duration::from_secs(300),
        );
        ReverseFixture { sim, function }
    }

    pub async fn deliver(&self, request: &ApiGatewayV2httpRequest) -> (i64, Value) {
        let response = self
            .function
            .handle(request, Deadline::after(Duration::from_secs(10)))
            .await
            .expect("configuration loads");
        answer(&response)
    }
}

/// Serves a function handler behind the local API Gateway, as `consent-sync local` does.
pub async fn serve(function: Arc<DidomiToDynamics>) -> consent_sync_sim::gateway::Gateway {
    let handler = consent_sync_cli::local::gateway_handler(function);
    consent_sync_sim::gateway::Gateway::start(SocketAddr::from(([127, 0, 0, 1], 0)), handler, None)
        .await
        .unwrap()
}

/// Builds the workspace's binaries (a no-op when they are up to date)
/// and returns its path, next to this test's own executable.
pub fn binary(name: &str) -> std::path::PathBuf {
    // Another build's binaries, to compare two builds with the same benchmark.
    if let Some(dir) = std::env::var_os("CONSENT_SYNC_BINARIES") {
        let path = std::path::Path::new(&dir).join(name);
        assert!(path.exists(), "{} not found", path.display());
        return path;
    }
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    // All of the workspace's binaries, so that dependencies are built with the
    // same features as for `cargo test --workspace` and are not compiled again.
    let mut args = vec!["build", "--quiet", "--workspace", "--bins"];
    if profile_dir.ends_with("release") {
        args.push("--release");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(&args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// The id of the `i`th contact of [`reconcile_simulator`].
pub fn numbered_contact_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-{i:012x}")
}

/// A simulator with `count` contacts and as many Didomi users: each contact
/// opted in or out of marketing by parity, Didomi agreeing except for every
/// `every`th (one in `every` differs); every 7th Didomi id differs from the
/// contact's key in case only.
pub async fn reconcile_simulator(count: usize, every: usize) -> Simulator {
    let contacts = (0..count)
        .map(|i| {
            let mut row = serde_json::Map::new();
            row.insert("contactid".into(), Value::String(numbered_contact_id(i)));
            row.insert(
                "emailaddress1".into(),
                Value::String(format!("user{i}@example.com")),
            );
            row.insert("donotbulkemail".into(), Value::Bool(i % 2 == 0));
            row
        })
        .collect();
    let sim = Simulator::start(Identity::default(), contacts)
        .await
        .unwrap();
    {
        let mut state = sim.state();
        for i in 0..count {
            let opted_in = (i % 2 == 1) != (i % every == 0);
            let id = if i % 7 == 0 {
                format!("User{i}@Example.com")
            } else {
                format!("user{i}@example.com")
            };
            state.didomi.users.push(consent_sync_sim::DidomiUser {
                id: format!("didomi-{i}"),
                organization_user_id: id,
                consents:
                    serde_json::json!({"purposes": [{"id": "marketing", "enabled": opted_in}]})
                        .as_object()
                        .cloned()
                        .unwrap(),
                created_at: "2026-11-01T00:00:00.000Z".into(),
                updated_at: "2026-11-01T00:00:00.000Z".into(),
            });
        }
    }
    sim
}

/// Runs `program` with `args` to its end, polling its peak resident memory
/// (`VmHWM`): the wall time, the peak in kB, and its standard output (its
/// standard error, a progress line on a terminal, is not shown).
pub fn run_measured(
    program: &std::path::Path,
    args: &[&std::ffi::OsStr],
) -> (Duration, u64, Vec<u8>) {
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
            {
                peak = kb;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    (started.elapsed(), peak, output.stdout)
}
