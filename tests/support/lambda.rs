//! A function binary run as Lambda runs it: its environment, its Runtime API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use consent_sync_cli::event_source::{Batch, EventSource};
use consent_sync_sim::gateway::{Gateway, Handler};
use consent_sync_sim::runtime_api::{Invocation, RuntimeApi};

use crate::binary;
use crate::moto::REGION;

pub const DIDOMI_TO_DYNAMICS: &str = "didomi-to-dynamics";
/// The command line (split at spaces) a function process runs under, when set.
pub const FUNCTION_WRAPPER: &str = "CONSENT_SYNC_FUNCTION_WRAPPER";
pub const DYNAMICS_TO_DIDOMI: &str = "dynamics-to-didomi";

/// A function process, its stdout (the JSON log lines) kept in a file.
pub struct FunctionProcess {
    child: Child,
    log: PathBuf,
    /// When the process was started.
    pub started: std::time::Instant,
}

/// A test that ends early (a failed assertion) leaves no function process
/// running after it.
impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl FunctionProcess {
    /// Starts `didomi-to-dynamics` with Lambda's variables, local AWS credentials and `env`.
    pub fn start(runtime: &RuntimeApi, env: &[(&str, &str)]) -> FunctionProcess {
        Self::start_binary(DIDOMI_TO_DYNAMICS, runtime, env)
    }

    /// Starts the function binary `name` as Lambda would.
    pub fn start_binary(name: &str, runtime: &RuntimeApi, env: &[(&str, &str)]) -> FunctionProcess {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let log = std::env::temp_dir().join(format!("{name}-{}-{nanos}.log", std::process::id()));
        // A tool to run the function under (a benchmark's `valgrind
        // --tool=callgrind …`), from the environment of the test process.
        let wrapper: Vec<String> = std::env::var(FUNCTION_WRAPPER)
            .map(|w| w.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut command = match wrapper.split_first() {
            Some((tool, args)) => {
                let mut command = Command::new(tool);
                command.args(args).arg(binary(name));
                command
            }
            None => Command::new(binary(name)),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let started = std::time::Instant::now();
        FunctionProcess {
            child: command.spawn().expect("the function starts"),
            log,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of `/proc/<pid>/status`, e.g. `VmHWM` (peak resident memory), in kB.
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time the process's threads have used so far (user and system),
    /// from the scheduler's nanosecond counters in `/proc/<pid>/task/*/schedstat`.
    pub fn cpu_time(&self) -> Duration {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid()));
        let nanos: u64 = tasks
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(nanos)
    }

    /// Stops the process and returns what it logged.
    pub fn stop(mut self) -> String {
        self.halt()
    }

    /// Stops the process as Lambda shuts an instance down (SIGTERM), so that
    /// a tool it runs under writes its results; what it logged.
    pub fn terminate(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.halt()
    }

    fn halt(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let logs = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        logs
    }
}

/// The function as deployed: its configuration (pointed at the simulator) in
/// a Secrets Manager secret, read through a counting proxy, and the process
/// polling its own Runtime API.
pub struct Deployment {
    pub sim: consent_sync_sim::Simulator,
    pub proxy: crate::moto::CountingProxy,
    pub runtime: Arc<RuntimeApi>,
    pub function: FunctionProcess,
    /// The parked queue (`PARKED_QUEUE_URL`), in moto.
    pub queue_url: String,
    pub moto: crate::moto::Moto,
}

impl Deployment {
    /// Starts everything with `didomi-to-dynamics`; `env` adds to the function's environment.
    pub async fn start(env: &[(&str, &str)]) -> Deployment {
        Self::start_function(DIDOMI_TO_DYNAMICS, env).await
    }

    /// Starts everything with the function binary `name`.
    pub async fn start_function(name: &str, env: &[(&str, &str)]) -> Deployment {
        Self::start_configured(name, env, |_| {}).await
    }

    /// Starts everything with the function binary `name`, its configuration
    /// changed by `adjust`.
    pub async fn start_configured(
        name: &str,
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut serde_json::Value),
    ) -> Deployment {
        let sim = consent_sync_sim::Simulator::start(
            consent_sync_sim::Identity::default(),
            consent_sync_sim::sample_contacts(),
        )
        .await
        .unwrap();
        let moto = crate::moto::Moto::start().await;
        let proxy = crate::moto::CountingProxy::start(&moto.url).await;
        let mut config = sim.config();
        adjust(&mut config);
        moto.create_secret("consent-sync/config", &config.to_string())
            .await;
        let queue_url = moto.create_queue("consent-sync-parked").await;
        let runtime = Arc::new(RuntimeApi::start().await.unwrap());
        let mut function_env = vec![
            ("CONFIG_SECRET_ID", "consent-sync/config"),
            ("AWS_ENDPOINT_URL", proxy.url.as_str()),
            ("PARKED_QUEUE_URL", queue_url.as_str()),
        ];
        function_env.extend_from_slice(env);
        let function = FunctionProcess::start_binary(name, &runtime, &function_env);
        Deployment {
            sim,
            proxy,
            runtime,
            function,
            queue_url,
            moto,
        }
    }

    /// Invokes the function with the v2.0 event of an HTTP request; the
    /// invocation's time, and the response's status and JSON body.
    pub async fn request(
        &self,
        method: &str,
        body: &str,
    ) -> (std::time::Duration, i64, serde_json::Value) {
        self.invoke(crate::http_event(method, body, "203.0.113.10", None))
            .await
    }

    /// Invokes the function with a v2.0 event.
    pub async fn invoke(
        &self,
        request: ApiGatewayV2httpRequest,
    ) -> (std::time::Duration, i64, serde_json::Value) {
        let event = serde_json::to_value(request).unwrap();
        let started = std::time::Instant::now();
        let invocation = self
            .runtime
            .invoke(event, std::time::Duration::from_secs(20))
            .await;
        let elapsed = started.elapsed();
        match invocation {
            Some(consent_sync_sim::runtime_api::Invocation::Response(response)) => {
                let body = response["body"]
                    .as_str()
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or(serde_json::Value::Null);
                (elapsed, response["statusCode"].as_i64().unwrap(), body)
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Lambda's SQS event source on the function's parked queue.
    pub fn event_source(&self) -> EventSource {
        EventSource::new(self.moto.sqs_client(), &self.queue_url)
    }

    /// One batch of the parked queue through the function, as Lambda's event
    /// source runs it: the batch, the function's answer, and the ids it
    /// named as failed (the others are deleted). `None`: nothing visible.
    pub async fn drain_once(&self) -> Option<(Batch, serde_json::Value, Vec<String>)> {
        drain_once(&self.event_source(), &self.runtime).await
    }

    /// Stops everything and returns what the function logged.
    pub fn stop(self) -> String {
        self.function.stop()
    }

    /// Stops everything, the function with SIGTERM (see [`FunctionProcess::terminate`]).
    pub fn terminate(self) -> String {
        self.function.terminate()
    }

    /// Replaces the function process with `name` started with `env`, as a
    /// redeployment does; what the stopped one logged. The new process
    /// starts only once the runtime holds no poll of the old one, so that
    /// the next event cannot go to a process that is gone.
    pub async fn redeploy(&mut self, name: &str, env: &[(&str, &str)]) -> String {
        let logs = self.function.halt();
        assert!(
            self.runtime
                .wait_until_unpolled(Duration::from_secs(10))
                .await,
            "the stopped function's poll is still open"
        );
        self.function = FunctionProcess::start_binary(name, &self.runtime, env);
        logs
    }
}

/// One batch of `source` through the function behind `runtime`.
pub async fn drain_once(
    source: &EventSource,
    runtime: &RuntimeApi,
) -> Option<(Batch, serde_json::Value, Vec<String>)> {
    // Hidden for six times the function's timeout, as the template sets.
    let batch = source.receive(180).await.unwrap()?;
    let answer = match runtime
        .invoke(batch.event.clone(), Duration::from_secs(20))
        .await
    {
        Some(Invocation::Response(answer)) => answer,
        other => panic!("the function did not answer the batch: {other:?}"),
    };
    let failed = source.settle(&batch, &answer).await.unwrap();
    Some((batch, answer, failed))
}

/// API Gateway in front of a function process: each HTTP request becomes an
/// invocation through the function's Runtime API.
pub fn runtime_handler(runtime: Arc<RuntimeApi>) -> Handler {
    Arc::new(move |request: ApiGatewayV2httpRequest| {
        let runtime = runtime.clone();
        Box::pin(async move {
            let event = serde_json::to_value(request).map_err(|e| e.to_string())?;
            match runtime.invoke(event, Duration::from_secs(20)).await {
                Some(Invocation::Response(response)) => {
                    serde_json::from_value::<ApiGatewayV2httpResponse>(response)
                        .map_err(|e| e.to_string())
                }
                other => Err(format!("the function did not answer: {other:?}")),
            }
        })
    })
}

/// Both functions as deployed: one secret, two processes each behind its
/// own Runtime API and HTTP endpoint; the Dataverse webhook registered on
/// the simulator with `consent-sync webhook register`'s code, and the Didomi
/// webhook pointed at `didomi-to-dynamics`.
pub struct BothFunctions {
    pub sim: consent_sync_sim::Simulator,
    pub forward: FunctionProcess,
    pub reverse: FunctionProcess,
    pub forward_url: String,
    pub reverse_url: String,
    _gateways: (Gateway, Gateway),
    _runtimes: (Arc<RuntimeApi>, Arc<RuntimeApi>),
    _moto: crate::moto::Moto,
}

impl BothFunctions {
    pub async fn start() -> BothFunctions {
        let sim = consent_sync_sim::Simulator::start(
            consent_sync_sim::Identity::default(),
            consent_sync_sim::sample_contacts(),
        )
        .await
        .unwrap();
        let moto = crate::moto::Moto::start().await;
        let config_text = sim.config().to_string();
        moto.create_secret("consent-sync/config", &config_text)
            .await;
        let env = [
            ("CONFIG_SECRET_ID", "consent-sync/config"),
            ("AWS_ENDPOINT_URL", moto.url.as_str()),
        ];
        let forward_runtime = Arc::new(RuntimeApi::start().await.unwrap());
        let reverse_runtime = Arc::new(RuntimeApi::start().await.unwrap());
        let forward = FunctionProcess::start_binary(DIDOMI_TO_DYNAMICS, &forward_runtime, &env);
        let reverse = FunctionProcess::start_binary(DYNAMICS_TO_DIDOMI, &reverse_runtime, &env);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let forward_gateway =
            Gateway::start(loopback, runtime_handler(forward_runtime.clone()), None)
                .await
                .unwrap();
        let reverse_gateway =
            Gateway::start(loopback, runtime_handler(reverse_runtime.clone()), None)
                .await
                .unwrap();
        let forward_url = format!("{}/didomi", forward_gateway.url);
        let reverse_url = format!("{}/dynamics", reverse_gateway.url);

        let config = consent_sync::Config::from_json(&config_text).unwrap();
        let client = consent_sync::dataverse::DataverseClient::new(
            consent_sync::http_client(),
            consent_sync::RetryPolicy::default(),
        );
        client
            .session(
                &config,
                consent_sync::Deadline::after(Duration::from_secs(10)),
            )
            .register(&config, "consent-sync", &reverse_url)
            .await
            .expect("the webhook registers");
        sim.deliver_didomi_webhooks_to(&forward_url);
        sim.clear_requests();
        BothFunctions {
            sim,
            forward,
            reverse,
            forward_url,
            reverse_url,
            _gateways: (forward_gateway, reverse_gateway),
            _runtimes: (forward_runtime, reverse_runtime),
            _moto: moto,
        }
    }

    /// The answers `url` gave to webhook deliveries, as (status, JSON body).
    pub fn answers(&self, url: &str) -> Vec<(u16, serde_json::Value)> {
        self.sim
            .deliveries_to(url)
            .into_iter()
            .map(|d| match d.result {
                Ok((status, body)) => (status, serde_json::from_str(&body).unwrap_or_default()),
                Err(failure) => (0, serde_json::Value::String(failure)),
            })
            .collect()
    }

    /// Stops both functions; what each logged.
    pub fn stop(self) -> (String, String) {
        (self.forward.stop(), self.reverse.stop())
    }
}

/// Sends every delivery at once, as concurrent API Gateway requests to the
/// function instances polling `runtime`, each invocation with `timeout`;
/// the status and body of each answer, in order.
pub async fn invoke_concurrently(
    runtime: &Arc<RuntimeApi>,
    deliveries: Vec<String>,
    timeout: Duration,
) -> Vec<(i64, String)> {
    let mut invocations = tokio::task::JoinSet::new();
    for (at, delivery) in deliveries.into_iter().enumerate() {
        let runtime = runtime.clone();
        let event =
            serde_json::to_value(crate::http_event("POST", &delivery, "203.0.113.10", None))
                .unwrap();
        invocations.spawn(async move {
            match runtime.invoke(event, timeout).await {
                Some(Invocation::Response(response)) => (
                    at,
                    response["statusCode"].as_i64().unwrap(),
                    response["body"].as_str().unwrap_or_default().to_string(),
                ),
                other => panic!("no answer: {other:?}"),
            }
        });
    }
    let mut answers = invocations.join_all().await;
    answers.sort_by_key(|(at, _, _)| *at);
    answers
        .into_iter()
        .map(|(_, status, body)| (status, body))
        .collect()
}
