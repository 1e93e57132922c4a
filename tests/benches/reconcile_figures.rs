//! Measures `consent-sync reconcile` (the release binary) against the
//! simulators: by default 100,000 contacts and as many Didomi users, one in
//! ten differing, under Dataverse's service protection limit scaled down
//! sixty-fold (100 requests per 5 s instead of 6,000 per 300 s: the same
//! rate, a shorter window). Prints wall time, Dataverse requests, 429s,
//! Didomi requests and the CLI's peak memory, for a report, `--apply`, and
//! a report again.
//!
//! `cargo bench -p consent-sync-tests --bench reconcile_figures [-- CONTACTS [dynamics] [unlimited]]`
//! — `dynamics` reconciles `--from dynamics` (Didomi events) instead;
//! `unlimited` lifts the service protection limit.

use std::ffi::OsStr;
use std::time::Duration;

use consent_sync_tests::{binary, run_measured};
use serde_json::Value;

/// Runs `consent-sync reconcile`; (wall time, peak kB, JSON).
fn reconcile(config: &std::path::Path, args: &[&str]) -> (Duration, u64, Value) {
    let program = binary("consent-sync");
    let mut all: Vec<&OsStr> = vec![OsStr::new("reconcile")];
    all.extend(args.iter().map(OsStr::new));
    all.extend([
        OsStr::new("--json"),
        OsStr::new("--config"),
        config.as_os_str(),
    ]);
    let (elapsed, peak, stdout) = run_measured(&program, &all);
    (
        elapsed,
        peak,
        serde_json::from_slice(&stdout).unwrap_or(Value::Null),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let from_dynamics = args.iter().any(|a| a == "dynamics");
    let limited = !args.iter().any(|a| a == "unlimited");
    let every = 10;
    let sim = consent_sync_tests::reconcile_simulator(count, every).await;
    if limited {
        sim.limit_dataverse(100, Duration::from_secs(5));
    }
    let path = std::env::temp_dir().join(format!(
        "consent-sync-reconcile-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, sim.config().to_string()).unwrap();
    println!(
        "reconcile --from {} (release, {}), {count} contacts and Didomi users, {} differing, service protection {}:",
        if from_dynamics { "dynamics" } else { "didomi" },
        std::env::consts::ARCH,
        count / every,
        if limited { "100 requests per 5 s" } else { "off" }
    );

    let from = if from_dynamics { "dynamics" } else { "didomi" };
    for (name, apply) in [
        ("report", false),
        ("--apply", true),
        ("report again", false),
    ] {
        sim.clear_requests();
        let throttled_before = sim.throttled();
        let path = path.clone();
        let mut args = vec!["--from", from];
        if apply {
            args.push("--apply");
        }
        let (elapsed, peak, report) = tokio::task::spawn_blocking(move || reconcile(&path, &args))
            .await
            .unwrap();
        let (dataverse, didomi) = sim.request_counts();
        println!(
            "{name:<13} wall {:>7.2} s  differing {:>6}  written {:>6}  Dataverse requests {:>5} (429: {:>2})  Didomi requests {:>6}  peak memory {:>7} kB",
            elapsed.as_secs_f64(),
            report["differing"],
            report["written"],
            dataverse,
            sim.throttled() - throttled_before,
            didomi,
            peak
        );
    }
    let _ = std::fs::remove_file(path);
}
