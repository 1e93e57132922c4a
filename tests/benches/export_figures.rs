//! Reconcile from Didomi's batch export against reconcile through the
//! Didomi API, and the watch's run time — the release `consent-sync` binary
//! against the simulators.
//!
//! `cargo bench -p consent-sync-tests --bench export_figures [-- USERS [API_USERS]]`
//! (defaults 1,000,000 and 20,000).
//!
//! - From the export: USERS contacts and Didomi users (one in ten
//!   differing), the users written as Didomi writes its export (8 gzip
//!   files, `_SUCCESS`), `reconcile --didomi-export DIR` (report only):
//!   wall time, peak memory, Didomi requests (none expected); then the
//!   same export against no contacts, the Didomi side alone.
//! - Through the API: `/consents/users` pages 100 users on a cursor, one
//!   page after another. Measured on API_USERS users with every Didomi
//!   request answered after 100 ms (a model of a real API's latency), then
//!   scaled to USERS by the page count — the pages cannot overlap, so the
//!   time grows linearly with them.
//! - The watch: 2,000 contacts modified in the last 24 hours, each looked
//!   up in Didomi with the same 100 ms per request.

use std::ffi::OsStr;
use std::io::Write;
use std::time::{Duration, Instant};

use consent_sync_sim::Fault;
use consent_sync_tests::export::{self, TempDir};
use consent_sync_tests::{binary, run_measured};
use serde_json::Value;

const DIDOMI_LATENCY: Duration = Duration::from_millis(100);

/// Runs the CLI; (wall time, peak kB, stdout).
fn consent_sync(config: &std::path::Path, args: &[&str]) -> (Duration, u64, String) {
    // Built (if need be) before the clock starts.
    let program = binary("consent-sync");
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.extend([OsStr::new("--config"), config.as_os_str()]);
    let (elapsed, peak, stdout) = run_measured(&program, &all);
    (elapsed, peak, String::from_utf8_lossy(&stdout).into_owned())
}

fn config_file(sim: &consent_sync_sim::Simulator, dir: &TempDir) -> std::path::PathBuf {
    let path = dir.0.join("config.json");
    std::fs::write(&path, sim.config().to_string()).unwrap();
    path
}

/// Every Didomi request of the next `n` answered after the model's latency.
fn slow_didomi(sim: &consent_sync_sim::Simulator, n: usize) {
    sim.state()
        .didomi
        .faults
        .extend(std::iter::repeat_n(Fault::Delay(DIDOMI_LATENCY), n));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let users = args.first().copied().unwrap_or(1_000_000);
    let api_users = args.get(1).copied().unwrap_or(20_000);
    println!(
        "reconcile of {users} users (release, {}), one in ten differing:",
        std::env::consts::ARCH
    );

    // From the export.
    let sim = consent_sync_tests::reconcile_simulator(users, 10).await;
    let dir = TempDir::new("export-figures");
    let config = config_file(&sim, &dir);
    let root = dir.0.join("data").join("export-id=bench");
    let started = Instant::now();
    let lines: Vec<Value> = sim.state().didomi.users.iter().map(export::line).collect();
    let files = export::files(&lines, 8);
    drop(lines);
    let gzip_bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    export::write(&root, "2026-11-29", &files, true);
    drop(files);
    println!(
        "  export written: 8 files, {:.1} MB of gzip ({:.1} s to write, not counted)",
        gzip_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    sim.clear_requests();
    let (elapsed, peak, stdout) = consent_sync(
        &config,
        &[
            "reconcile",
            "--json",
            "--didomi-export",
            root.to_str().unwrap(),
        ],
    );
    let report: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    println!(
        "  from the export:   {:>7.1} s, peak {:>4} MB, {} users, {} differing, {} Didomi requests",
        elapsed.as_secs_f64(),
        peak / 1024,
        report["didomi_users"],
        report["differing"],
        sim.didomi_requests().len()
    );
    // The Didomi side alone: the same export against an environment without
    // contacts, so that the simulator's serving of a million rows (one
    // request at a time, from memory) is not in the figure.
    {
        let mut state = sim.state();
        state.contacts.clear();
        state.contact_positions.clear();
    }
    let (elapsed, peak, _) = consent_sync(
        &config,
        &[
            "reconcile",
            "--json",
            "--didomi-export",
            root.to_str().unwrap(),
        ],
    );
    println!(
        "  the export alone:  {:>7.1} s, peak {:>4} MB (both passes over {users} users, no contacts)",
        elapsed.as_secs_f64(),
        peak / 1024,
    );
    drop(sim);

    // Through the API, on fewer users, scaled by pages.
    let sim = consent_sync_tests::reconcile_simulator(api_users, 10).await;
    let api_dir = TempDir::new("api-figures");
    let config = config_file(&sim, &api_dir);
    slow_didomi(&sim, api_users / 100 + 10);
    let (elapsed, peak, stdout) = consent_sync(&config, &["reconcile", "--json"]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    let scaled = elapsed.as_secs_f64() * users as f64 / api_users as f64;
    println!(
        "  through the API:   {:>7.1} s for {api_users} users ({} differing, peak {} MB), {} Didomi requests at {} ms each",
        elapsed.as_secs_f64(),
        report["differing"],
        peak / 1024,
        sim.didomi_requests().len(),
        DIDOMI_LATENCY.as_millis()
    );
    println!(
        "                     {scaled:>7.0} s scaled to {users} users ({} pages of 100, one after another)",
        users / 100
    );
    drop(sim);

    // The watch on 2,000 recently modified contacts.
    let sim = consent_sync_tests::reconcile_simulator(2000, 10).await;
    let watch_dir = TempDir::new("watch-figures");
    let config = config_file(&sim, &watch_dir);
    slow_didomi(&sim, 2000 + 10);
    let (elapsed, peak, stdout) = consent_sync(&config, &["watch"]);
    println!(
        "  the watch, 2,000 contacts, {} ms per Didomi lookup: {:.1} s, peak {} MB",
        DIDOMI_LATENCY.as_millis(),
        elapsed.as_secs_f64(),
        peak / 1024
    );
    for line in stdout.lines().take(6) {
        println!("    {line}");
    }
    std::io::stdout().flush().unwrap();
}
