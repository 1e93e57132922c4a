//! Measures the release function binaries as Lambda runs them: their size,
//! their peak memory while handling deliveries, the time of cold and warm
//! invocations against the simulators (Runtime API round trip included),
//! and for `dynamics-to-didomi` the Didomi requests per change. Needs
//! `moto_server` on PATH, as the tests do.
//!
//! Init time is from the process's start to its first poll of the Runtime
//! API; CPU per warm event is the process's scheduler time over a run of
//! warm invocations, divided by their number.
//!
//! `cargo bench -p consent-sync-tests --bench lambda_figures [-- ROUNDS]`;
//! `CONSENT_SYNC_BINARIES=DIR` measures the function binaries in DIR instead
//! of this workspace's (to compare two builds on the same machine).

use std::time::Duration;

use consent_sync_tests::lambda::{Deployment, DYNAMICS_TO_DIDOMI};
use consent_sync_tests::{binary, dataverse_post, sample, WEBHOOK_KEY};

async fn invoke(deployment: &Deployment, body: &str) -> (Duration, String) {
    let (elapsed, status, answer) = deployment.request("POST", body).await;
    assert_eq!(status, 200, "{answer}");
    (
        elapsed,
        answer["outcome"].as_str().unwrap_or("?").to_string(),
    )
}

/// Waits for the function's first poll: its init time.
async fn init_time(deployment: &Deployment) -> Duration {
    for _ in 0..500 {
        if let Some(polled) = deployment.runtime.first_poll() {
            return polled - deployment.function.started;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the function never polled for an event");
}

/// Init over repeated cold starts (a single start is too noisy): the
/// process started as Lambda starts it, until its first poll for an event —
/// the wall time (median, p90) and the CPU time it used (median).
async fn init_times(name: &str, starts: usize) -> (Duration, Duration, Duration) {
    let mut times = Vec::with_capacity(starts);
    let mut cpu = Vec::with_capacity(starts);
    for _ in 0..starts {
        let runtime = consent_sync_sim::runtime_api::RuntimeApi::start()
            .await
            .unwrap();
        let function = consent_sync_tests::lambda::FunctionProcess::start_binary(
            name,
            &runtime,
            &[
                ("CONFIG_SECRET_ID", "consent-sync/config"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ],
        );
        let mut polled = None;
        for _ in 0..2500 {
            if let Some(at) = runtime.first_poll() {
                polled = Some(at);
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(polled.expect("the function polled for an event") - function.started);
        // Idle once it polls: its CPU time now is its init's.
        tokio::time::sleep(Duration::from_millis(20)).await;
        cpu.push(function.cpu_time());
        function.stop();
    }
    times.sort();
    cpu.sort();
    (
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        cpu[cpu.len() / 2],
    )
}

fn print_init((median, p90, cpu): (Duration, Duration, Duration), starts: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "init over {starts} starts      wall median {:.2} ms, p90 {:.2} ms; CPU median {:.2} ms",
        ms(median),
        ms(p90),
        ms(cpu)
    );
}

fn cpu_per_event(name: &str, cpu: Duration, events: usize) {
    println!(
        "{name:<28} CPU per event {:.3} ms",
        cpu.as_secs_f64() * 1000.0 / events as f64
    );
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<28} n={:<5} p50={:>6.2} ms  p95={:>6.2} ms  max={:>6.2} ms",
        times.len(),
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(1.0))
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let path = binary("didomi-to-dynamics");
    let size = std::fs::metadata(&path).unwrap().len();

    let deployment = Deployment::start(&[]).await;
    let init = init_time(&deployment).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = deployment.function.status_kb("VmRSS").unwrap_or(0);

    let opt_out = sample("didomi-user-updated.json");
    let opt_in = opt_out.replacen(
        "\"id\": \"marketing\", \"enabled\": false",
        "\"id\": \"marketing\", \"enabled\": true",
        1,
    );
    assert_ne!(opt_in, opt_out);

    // The first invocation reads the secret and requests a token.
    let (cold, outcome) = invoke(&deployment, &opt_out).await;
    assert_eq!(outcome, "updated");

    let cpu_before = deployment.function.cpu_time();
    let mut unchanged = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (elapsed, outcome) = invoke(&deployment, &opt_out).await;
        assert_eq!(outcome, "skipped");
        unchanged.push(elapsed);
    }
    let cpu_between = deployment.function.cpu_time();
    let mut updated = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let body = if round % 2 == 0 { &opt_in } else { &opt_out };
        let (elapsed, outcome) = invoke(&deployment, body).await;
        assert_eq!(outcome, "updated");
        updated.push(elapsed);
    }
    let cpu_after = deployment.function.cpu_time();
    let peak = deployment.function.status_kb("VmHWM").unwrap_or(0);
    let rss_end = deployment.function.status_kb("VmRSS").unwrap_or(0);
    let token_requests = deployment.sim.token_requests();
    deployment.stop();

    println!("didomi-to-dynamics (release, {}):", std::env::consts::ARCH);
    println!(
        "binary size                  {size} bytes ({:.2} MiB)",
        size as f64 / 1048576.0
    );
    println!(
        "resident memory              idle {rss_idle} kB, after {} invocations {rss_end} kB",
        2 * rounds + 1
    );
    println!(
        "peak resident memory (VmHWM) {peak} kB ({:.1} MiB)",
        peak as f64 / 1024.0
    );
    println!("token requests               {token_requests}");
    println!(
        "init (start to first poll)   {:.2} ms",
        init.as_secs_f64() * 1000.0
    );
    print_init(init_times("didomi-to-dynamics", 30).await, 30);
    println!(
        "first invocation (secret read + token + GET + PATCH)  {:.2} ms",
        cold.as_secs_f64() * 1000.0
    );
    summary("warm, unchanged (GET)", unchanged);
    summary("warm, updated (GET + PATCH)", updated);
    cpu_per_event("warm, unchanged (GET)", cpu_between - cpu_before, rounds);
    cpu_per_event(
        "warm, updated (GET + PATCH)",
        cpu_after - cpu_between,
        rounds,
    );

    dynamics_to_didomi(rounds).await;
}

async fn invoke_reverse(deployment: &Deployment, body: &str) -> (Duration, String) {
    let (elapsed, status, answer) = deployment
        .invoke(dataverse_post(body, Some(WEBHOOK_KEY), &[]))
        .await;
    assert_eq!(status, 200, "{answer}");
    (
        elapsed,
        answer["outcome"].as_str().unwrap_or("?").to_string(),
    )
}

async fn dynamics_to_didomi(rounds: usize) {
    let path = binary(DYNAMICS_TO_DIDOMI);
    let size = std::fs::metadata(&path).unwrap().len();
    let deployment = Deployment::start_function(DYNAMICS_TO_DIDOMI, &[]).await;
    let init = init_time(&deployment).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = deployment.function.status_kb("VmRSS").unwrap_or(0);

    let human = sample("dynamics-contact-updated.json");
    let own_user = deployment.sim.state().identity.application_user_id.clone();
    let mut echo: serde_json::Value = serde_json::from_str(&human).unwrap();
    echo["InitiatingUserId"] = serde_json::json!(own_user);
    let echo = echo.to_string();

    // The first invocation reads the secret, gets a token, WhoAmI and a Didomi session.
    let (cold, outcome) = invoke_reverse(&deployment, &human).await;
    assert_eq!(outcome, "sent");
    let didomi_before = deployment.sim.didomi_requests().len();

    let cpu_before = deployment.function.cpu_time();
    let mut sent = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (elapsed, outcome) = invoke_reverse(&deployment, &human).await;
        assert_eq!(outcome, "sent");
        sent.push(elapsed);
    }
    let cpu_sent = deployment.function.cpu_time() - cpu_before;
    let didomi_per_change =
        (deployment.sim.didomi_requests().len() - didomi_before) as f64 / rounds as f64;
    let cpu_before = deployment.function.cpu_time();
    let mut echoes = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (elapsed, outcome) = invoke_reverse(&deployment, &echo).await;
        assert_eq!(outcome, "skipped");
        echoes.push(elapsed);
    }
    let cpu_echoes = deployment.function.cpu_time() - cpu_before;
    let peak = deployment.function.status_kb("VmHWM").unwrap_or(0);
    let rss_end = deployment.function.status_kb("VmRSS").unwrap_or(0);
    let sessions = deployment.sim.didomi_sessions();
    let dataverse = deployment.sim.dataverse_requests().len();
    deployment.stop();

    println!();
    println!("dynamics-to-didomi (release, {}):", std::env::consts::ARCH);
    println!(
        "binary size                  {size} bytes ({:.2} MiB)",
        size as f64 / 1048576.0
    );
    println!(
        "resident memory              idle {rss_idle} kB, after {} invocations {rss_end} kB",
        2 * rounds + 1
    );
    println!(
        "peak resident memory (VmHWM) {peak} kB ({:.1} MiB)",
        peak as f64 / 1024.0
    );
    println!("Didomi sessions              {sessions}");
    println!("Didomi requests per change   {didomi_per_change:.2}");
    println!(
        "Dataverse requests in all    {dataverse} (WhoAmI once; Target and image carry the rest)"
    );
    println!(
        "init (start to first poll)   {:.2} ms",
        init.as_secs_f64() * 1000.0
    );
    print_init(init_times(DYNAMICS_TO_DIDOMI, 30).await, 30);
    println!(
        "first invocation (secret + token + WhoAmI + session + event)  {:.2} ms",
        cold.as_secs_f64() * 1000.0
    );
    summary("warm, sent (one POST)", sent);
    summary("warm, own echo skipped", echoes);
    cpu_per_event("warm, sent (one POST)", cpu_sent, rounds);
    cpu_per_event("warm, own echo skipped", cpu_echoes, rounds);
}
