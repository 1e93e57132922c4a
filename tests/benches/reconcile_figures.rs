//! Measures `consent-sync reconcile` (the release binary) against the
//! simulators: 20,000 contacts, 20,000 Didomi users, 1,000 differing. Prints
//! wall time, Dataverse and Didomi requests and the CLI's peak memory, for
//! a report and for `--apply`.
//!
//! `cargo bench -p consent-sync-tests --bench reconcile_figures [-- CONTACTS]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use consent_sync_tests::binary;
use serde_json::Value;

/// Runs the CLI, polling its peak resident memory; (wall time, peak kB, JSON).
fn reconcile(config: &std::path::Path, args: &[&str]) -> (Duration, u64, Value) {
    let program = binary("consent-sync");
    let started = Instant::now();
    let mut child = Command::new(program)
        .arg("reconcile")
        .args(args)
        .args(["--json", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let elapsed = started.elapsed();
    (
        elapsed,
        peak,
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let sim = consent_sync_tests::reconcile_simulator(count).await;
    let path = std::env::temp_dir().join(format!(
        "consent-sync-reconcile-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, sim.config().to_string()).unwrap();
    println!(
        "reconcile (release, {}), {count} contacts and Didomi users, {} differing:",
        std::env::consts::ARCH,
        count / 20
    );

    for (name, args) in [
        ("report", vec![]),
        ("--apply", vec!["--apply"]),
        ("report again", vec![]),
    ] {
        sim.clear_requests();
        let path = path.clone();
        let (elapsed, peak, report) = tokio::task::spawn_blocking(move || reconcile(&path, &args))
            .await
            .unwrap();
        let dataverse = sim.dataverse_requests().len();
        let didomi = sim.didomi_requests().len();
        println!(
            "{name:<13} wall {:>7.2} s  differing {:>6}  written {:>6}  Dataverse requests {:>5}  Didomi requests {:>4}  peak memory {:>6} kB",
            elapsed.as_secs_f64(),
            report["differing"],
            report["written"],
            dataverse,
            didomi,
            peak
        );
    }
    let _ = std::fs::remove_file(path);
}
