//! A function binary run as Lambda runs it: its environment, its Runtime API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use consent_sync_sim::runtime_api::RuntimeApi;

use crate::binary;
use crate::moto::REGION;

/// The `didomi-to-dynamics` process, its stdout (the JSON log lines) kept in a file.
pub struct FunctionProcess {
    child: Child,
    log: PathBuf,
}

impl FunctionProcess {
    /// Starts the binary with Lambda's variables, local AWS credentials and `env`.
    pub fn start(runtime: &RuntimeApi, env: &[(&str, &str)]) -> FunctionProcess {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let log = std::env::temp_dir().join(format!(
            "didomi-to-dynamics-{}-{nanos}.log",
            std::process::id()
        ));
        let mut command = Command::new(binary("didomi-to-dynamics"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "didomi-to-dynamics")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/didomi-to-dynamics",
            )
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
        FunctionProcess {
            child: command.spawn().expect("the function starts"),
            log,
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

    /// Stops the process and returns what it logged.
    pub fn stop(mut self) -> String {
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
    pub runtime: RuntimeApi,
    pub function: FunctionProcess,
    _moto: crate::moto::Moto,
}

impl Deployment {
    /// Starts everything; `env` adds to the function's environment.
    pub async fn start(env: &[(&str, &str)]) -> Deployment {
        let sim = consent_sync_sim::Simulator::start(
            consent_sync_sim::Identity::default(),
            consent_sync_sim::sample_contacts(),
        )
        .await
        .unwrap();
        let moto = crate::moto::Moto::start().await;
        let proxy = crate::moto::CountingProxy::start(&moto.url).await;
        moto.create_secret("consent-sync/config", &sim.config().to_string())
            .await;
        let runtime = RuntimeApi::start().await.unwrap();
        let mut function_env = vec![
            ("CONFIG_SECRET_ID", "consent-sync/config"),
            ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ];
        function_env.extend_from_slice(env);
        let function = FunctionProcess::start(&runtime, &function_env);
        Deployment {
            sim,
            proxy,
            runtime,
            function,
            _moto: moto,
        }
    }

    /// Invokes the function with the v2.0 event of an HTTP request; the
    /// invocation's time, and the response's status and JSON body.
    pub async fn request(
        &self,
        method: &str,
        body: &str,
    ) -> (std::time::Duration, i64, serde_json::Value) {
        let event =
            serde_json::to_value(crate::http_event(method, body, "203.0.113.10", None)).unwrap();
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

    /// Stops everything and returns what the function logged.
    pub fn stop(self) -> String {
        self.function.stop()
    }
}
