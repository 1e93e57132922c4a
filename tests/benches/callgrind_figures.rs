//! Instructions per warm event of each release function binary, counted by
//! valgrind's callgrind: unlike time, the count is the same run after run
//! whatever else the machine does, so two builds compare to the unit.
//!
//! Each function runs as Lambda runs it (its Runtime API, its secret in
//! moto, the simulators over loopback) under `valgrind --tool=callgrind`,
//! once with the cold invocation alone and once with EVENTS warm events
//! after it; the difference divided by EVENTS is one warm event's cost,
//! init and the cold start excluded. Needs `valgrind` and `moto_server` on
//! PATH.
//!
//! `cargo bench -p consent-sync-tests --bench callgrind_figures [-- EVENTS]`
//! (default 200); `CONSENT_SYNC_BINARIES=DIR` counts another build's
//! binaries; `CALLGRIND_DIR=DIR` keeps the profiles there, for
//! `callgrind_annotate DIR/<function>-<workload>-<events>.out`.

use std::path::PathBuf;
use std::time::Duration;

use consent_sync_tests::lambda::{
    Deployment, DIDOMI_TO_DYNAMICS, DYNAMICS_TO_DIDOMI, FUNCTION_WRAPPER,
};
use consent_sync_tests::{dataverse_post, sample, WEBHOOK_KEY};

/// The `i`th event of a run (0: the cold invocation).
type Event = Box<dyn Fn(&Deployment, usize) -> aws_lambda_events::apigw::ApiGatewayV2httpRequest>;

/// A kind of event and how to send the `i`th of them.
struct Workload {
    function: &'static str,
    name: &'static str,
    event: Event,
    outcome: &'static str,
}

fn didomi_delivery(enabled: bool) -> String {
    let opt_out = sample("didomi-user-updated.json");
    if enabled {
        opt_out.replacen(
            "\"id\": \"marketing\", \"enabled\": false",
            "\"id\": \"marketing\", \"enabled\": true",
            1,
        )
    } else {
        opt_out
    }
}

fn workloads() -> Vec<Workload> {
    let post = |body: String| consent_sync_tests::http_event("POST", &body, "203.0.113.10", None);
    vec![
        Workload {
            function: DIDOMI_TO_DYNAMICS,
            name: "updated (GET + PATCH)",
            // The cold invocation opts out; the warm ones alternate.
            event: Box::new(move |_, i| post(didomi_delivery(i % 2 == 1))),
            outcome: "updated",
        },
        Workload {
            function: DIDOMI_TO_DYNAMICS,
            name: "up to date (GET)",
            event: Box::new(move |_, _| post(didomi_delivery(false))),
            outcome: "",
        },
        Workload {
            function: DYNAMICS_TO_DIDOMI,
            name: "sent (one POST)",
            event: Box::new(|_, _| {
                dataverse_post(
                    &sample("dynamics-contact-updated.json"),
                    Some(WEBHOOK_KEY),
                    &[],
                )
            }),
            outcome: "sent",
        },
        Workload {
            function: DYNAMICS_TO_DIDOMI,
            name: "own echo skipped",
            event: Box::new(|deployment, i| {
                let body = sample("dynamics-contact-updated.json");
                if i == 0 {
                    // The cold invocation asks WhoAmI, as a first change does.
                    return dataverse_post(&body, Some(WEBHOOK_KEY), &[]);
                }
                let own = deployment.sim.state().identity.application_user_id.clone();
                let mut echo: serde_json::Value = serde_json::from_str(&body).unwrap();
                echo["InitiatingUserId"] = serde_json::json!(own);
                dataverse_post(&echo.to_string(), Some(WEBHOOK_KEY), &[])
            }),
            outcome: "skipped",
        },
    ]
}

/// The instructions callgrind counted in a profile (`totals:` or `summary:`).
fn instructions(profile: &PathBuf) -> u64 {
    let text = std::fs::read_to_string(profile)
        .unwrap_or_else(|e| panic!("{}: {e} (is valgrind installed?)", profile.display()));
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .expect("callgrind wrote a total")
}

/// One run: the cold invocation, then `warm` events; the instructions counted.
async fn run(workload: &Workload, warm: usize, dir: &std::path::Path) -> u64 {
    let profile = dir.join(format!(
        "{}-{}-{warm}.out",
        workload.function,
        workload.name.split_whitespace().next().unwrap()
    ));
    let _ = std::fs::remove_file(&profile);
    std::env::set_var(
        FUNCTION_WRAPPER,
        format!(
            "valgrind -q --tool=callgrind --callgrind-out-file={} --dump-instr=no",
            profile.display()
        ),
    );
    let deployment = Deployment::start_function(workload.function, &[]).await;
    std::env::remove_var(FUNCTION_WRAPPER);
    for i in 0..=warm {
        let (_, status, body) = deployment.invoke((workload.event)(&deployment, i)).await;
        assert_eq!(status, 200, "{body}");
        if i > 0 && !workload.outcome.is_empty() {
            assert_eq!(body["outcome"], workload.outcome, "{body}");
        }
    }
    // Let the last answer leave before the count stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    deployment.terminate();
    instructions(&profile)
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    // CALLGRIND_DIR keeps the profiles, for `callgrind_annotate`.
    let kept = std::env::var_os("CALLGRIND_DIR").map(PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("consent-sync-callgrind-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "instructions per warm event (callgrind, release, {}), {events} events:",
        std::env::consts::ARCH
    );
    for workload in workloads() {
        let cold = run(&workload, 0, &dir).await;
        let with_warm = run(&workload, events, &dir).await;
        let per_event = with_warm.saturating_sub(cold) as f64 / events as f64;
        println!(
            "{:<20} {:<24} {:>10.0} per event   (init + cold invocation {cold})",
            workload.function, workload.name, per_event
        );
    }
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
