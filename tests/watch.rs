//! The watch and reconcile from Didomi's batch export (DESIGN §12): the
//! export written as Didomi writes it, on disk and in moto's S3; the
//! compiled `consent-watch` under the Lambda Runtime API.

use std::path::Path;
use std::time::Duration;

use consent_sync::dataverse::registration::DEFAULT_NAME;
use consent_sync::dataverse::DataverseClient;
use consent_sync::didomi::export::Export;
use consent_sync::{Config, Deadline, RetryPolicy};
use consent_sync_cli::reconcile::{run, Options, Truth};
use consent_sync_sim::runtime_api::Invocation;
use consent_sync_sim::Simulator;
use consent_sync_tests::export::{self, TempDir};
use consent_sync_tests::lambda::Deployment;
use serde_json::{json, Value};

const USERS: usize = 2000;
const EXPORT_ID: &str = "export-id=3f1c2a9e";

/// 2,000 contacts and Didomi users, one in 20 differing (100); the export
/// of those users in 2 files of the partition of 2026-11-29, with an older
/// complete partition that disagrees everywhere and a newer one still being
/// written; user 1 also appears a second time, older and opposite.
async fn exported() -> (Simulator, Config, TempDir, Vec<(String, Vec<u8>)>) {
    let sim = consent_sync_tests::reconcile_simulator(USERS, 20).await;
    let config = Config::from_json(&sim.config().to_string()).unwrap();
    let users: Vec<_> = sim.state().didomi.users.clone();
    let mut lines: Vec<Value> = users.iter().map(export::line).collect();
    let mut stale = export::line(&users[1]);
    stale["user"]["updated_at"] = json!("2026-10-01T00:00:00.000Z");
    stale["user"]["consents"] = json!({"purposes": [{"id": "marketing", "enabled": false}]});
    lines.insert(1500, stale);
    let files = export::files(&lines, 2);
    let dir = TempDir::new("export");
    let root = dir.0.join("data").join(EXPORT_ID);
    let flipped: Vec<Value> = users
        .iter()
        .map(|u| {
            let mut line = export::line(u);
            let enabled = line["user"]["consents"]["purposes"][0]["enabled"] == json!(true);
            line["user"]["consents"]["purposes"][0]["enabled"] = json!(!enabled);
            line
        })
        .collect();
    export::write(&root, "2026-11-28", &export::files(&flipped, 3), true);
    export::write(&root, "2026-11-29", &files, true);
    export::write(
        &root,
        "2026-11-30",
        &[("users/part-00000-x.json.gz".into(), b"not gzip".to_vec())],
        false,
    );
    (sim, config, dir, files)
}

fn from_export(dir: &Path, apply: bool) -> Options {
    Options {
        export: Some(Export::parse(dir.to_str().unwrap(), None).unwrap()),
        ..Options::new(Truth::Didomi, apply)
    }
}

const SAME: [&str; 7] = [
    "didomi_users",
    "contacts",
    "matched",
    "differing",
    "per_column",
    "users_without_contact",
    "contacts_without_user",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_from_an_export_reports_what_the_api_reports_and_apply_fixes_exactly_those() {
    let (sim, config, dir, _) = exported().await;
    let export_dir = dir.0.join("data").join(EXPORT_ID);

    let api = run(&config, Options::new(Truth::Didomi, false))
        .await
        .unwrap();
    assert_eq!(api.json["differing"], 100, "{}", api.text);
    sim.clear_requests();
    let report = run(&config, from_export(&export_dir, false)).await.unwrap();
    for field in SAME {
        assert_eq!(
            report.json[field], api.json[field],
            "{field}: {}",
            report.text
        );
    }
    assert_eq!(report.json["didomi_users"], USERS, "user 1 counted once");
    assert!(
        sim.didomi_requests().is_empty(),
        "no Didomi request at all: {:?}",
        sim.didomi_requests()
    );

    let report = run(&config, from_export(&export_dir, true)).await.unwrap();
    assert!(report.ok, "{}", report.text);
    assert_eq!(
        (
            report.json["differing"].clone(),
            report.json["written"].clone()
        ),
        (json!(100), json!(100))
    );
    let written: usize = sim
        .writes()
        .iter()
        .map(|w| {
            w.body.as_ref().unwrap()["Targets"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(written, 100, "exactly the differing contacts");
    assert!(sim
        .didomi_requests()
        .iter()
        .all(|r| !r.path_and_query.contains("/consents/users")));
    // User 1's latest line won: the stale copy was not applied.
    let one = sim
        .contact_by_id(&consent_sync_tests::numbered_contact_id(1))
        .unwrap();
    assert_eq!(one["donotbulkemail"], json!(false));

    let again = run(&config, Options::new(Truth::Didomi, false))
        .await
        .unwrap();
    assert_eq!(again.json["differing"], 0, "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_partition_or_a_bad_line_is_refused_and_nothing_is_written() {
    let (sim, config, dir, files) = exported().await;
    let export_dir = dir.0.join("data").join(EXPORT_ID);

    let error = run(
        &config,
        from_export(&export_dir.join("date=2026-11-30"), true),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.contains("date=2026-11-30") && error.contains("has no _SUCCESS"),
        "{error}"
    );

    let only_incomplete = TempDir::new("incomplete");
    export::write(&only_incomplete.0, "2026-11-29", &files, false);
    let error = run(&config, from_export(&only_incomplete.0, true))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("no complete partition"), "{error}");

    // A complete partition with a line that is not JSON, in its second file.
    let broken = TempDir::new("broken");
    let mut files = files.clone();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gzip,
        b"{\"user\": {\"organization_user_id\": \"a\"}}\n{\"user\": oops\n",
    )
    .unwrap();
    files.push((
        "users/part-00009-late.json.gz".into(),
        gzip.finish().unwrap(),
    ));
    export::write(&broken.0, "2026-11-29", &files, true);
    let error = run(&config, from_export(&broken.0, true))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("part-00009-late.json.gz, line 2: not a user record (not JSON"),
        "{error}"
    );
    assert!(
        !error.contains("oops"),
        "the line itself is not repeated: {error}"
    );
    assert_eq!(
        sim.writes(),
        vec![],
        "nothing written from a refused export"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reads_the_export_from_s3_with_the_role_assumed() {
    let (sim, _, _dir, files) = exported().await;
    let moto = consent_sync_tests::moto::Moto::start().await;
    moto.create_bucket("didomi-exports").await;
    let s3 = moto.s3_client();
    let prefix = format!("data/{EXPORT_ID}");
    export::upload(&s3, "didomi-exports", &prefix, "2026-11-29", &files, true).await;
    export::upload(
        &s3,
        "didomi-exports",
        &prefix,
        "2026-11-30",
        &files[..1],
        false,
    )
    .await;
    let source = format!("s3://didomi-exports/{prefix}/");
    let role = "arn:aws:iam::123456789012:role/didomi-export-access";

    let (code, stdout, stderr) = consent_sync_tests::moto::consent_sync_with_aws(
        &moto.url,
        &sim.config(),
        &[
            "reconcile",
            "--didomi-export",
            &source,
            "--role-arn",
            role,
            "--apply",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            report["didomi_users"].clone(),
            report["differing"].clone(),
            report["written"].clone()
        ),
        (json!(USERS), json!(100), json!(100)),
        "{stdout}"
    );
    assert!(sim
        .didomi_requests()
        .iter()
        .all(|r| !r.path_and_query.contains("/consents/users")));

    let (code, stdout, stderr) = consent_sync_tests::moto::consent_sync_with_aws(
        &moto.url,
        &sim.config(),
        &[
            "reconcile",
            "--didomi-export",
            &format!("{source}date=2026-11-30/"),
        ],
    );
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains(
            "s3://didomi-exports/data/export-id=3f1c2a9e/date=2026-11-30 has no _SUCCESS"
        ),
        "{stderr}"
    );
}

/// Three days ago, in Dataverse's format.
fn days_ago(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    consent_sync::time::iso_utc(now - days * 86_400)
}

/// Contacts `watch{i}@example.com` with Didomi users, all agreeing and last
/// modified three days ago; then three recent ones made to differ, and
/// two older ones that differ too.
fn seed_watch(sim: &Simulator) -> Vec<String> {
    let old = days_ago(3);
    let mut ids = Vec::new();
    {
        let mut state = sim.state();
        for contact in state.contacts.iter_mut() {
            contact.insert("modifiedon".into(), json!(old));
        }
        for i in 0..10 {
            let id = consent_sync_tests::numbered_contact_id(9000 + i);
            let mut row = serde_json::Map::new();
            row.insert("contactid".into(), json!(id));
            row.insert(
                "emailaddress1".into(),
                json!(format!("watch{i}@example.com")),
            );
            row.insert("donotbulkemail".into(), json!(false));
            row.insert("modifiedon".into(), json!(old));
            let columns = state.columns.clone();
            state
                .contacts
                .push(consent_sync_sim::contacts::with_defaults(&columns, row));
            state.didomi.users.push(consent_sync_sim::DidomiUser {
                id: format!("didomi-watch-{i}"),
                organization_user_id: format!("watch{i}@example.com"),
                consents: json!({"purposes": [{"id": "marketing", "enabled": true}]})
                    .as_object()
                    .cloned()
                    .unwrap(),
                created_at: "2026-11-01T00:00:00.000Z".into(),
                updated_at: "2026-11-01T00:00:00.000Z".into(),
            });
            ids.push(id);
        }
    }
    let recent = days_ago(0);
    for id in &ids[..3] {
        sim.set_contact_columns(id, json!({"donotbulkemail": true, "modifiedon": recent}));
    }
    for id in &ids[3..5] {
        sim.set_contact_columns(id, json!({"donotbulkemail": true}));
    }
    ids
}

/// The metric records a function wrote, in order.
fn metric_records(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect()
}

async fn watch_once(deployment: &Deployment) -> Value {
    match deployment
        .runtime
        .invoke(json!({"source": "aws.scheduler"}), Duration::from_secs(120))
        .await
    {
        Some(Invocation::Response(report)) => report,
        other => panic!("the watch did not answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_finds_recent_drift_a_removed_step_and_failed_jobs_and_repairs_from_didomi() {
    let mut deployment = Deployment::start_function("consent-watch", &[]).await;
    let sim = &deployment.sim;
    let config = Config::from_json(&sim.config().to_string()).unwrap();
    let dataverse = DataverseClient::new(consent_sync::http_client(), RetryPolicy::default());
    dataverse
        .session(&config, Deadline::after(Duration::from_secs(30)))
        .register(&config, DEFAULT_NAME, "http://127.0.0.1:9/dynamics")
        .await
        .unwrap();
    sim.clear_requests();
    let ids = seed_watch(sim);
    let step = sim
        .rows("sdkmessageprocessingsteps")
        .into_iter()
        .find(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.contains("consent-sync"))
        })
        .unwrap();
    for (completed, days) in [("recent", 0), ("old", 2)] {
        sim.state()
            .tables
            .get_mut("asyncoperations")
            .unwrap()
            .rows
            .push(
                json!({
                    "asyncoperationid": format!("{:08x}-0000-4000-8000-000000000000", days),
                    "name": completed,
                    "statuscode": 31,
                    "completedon": days_ago(days),
                    "_owningextensionid_value": step["sdkmessageprocessingstepid"],
                })
                .as_object()
                .cloned()
                .unwrap(),
            );
    }

    let report = watch_once(&deployment).await;
    assert_eq!(report["ContactsChecked"], 3, "{report}");
    assert_eq!(report["ContactsDiffering"], 3, "{report}");
    assert_eq!(report["ContactsWithoutDidomiUser"], 0, "{report}");
    assert_eq!(report["ContactsRepaired"], 0, "{report}");
    assert_eq!(report["RegistrationMismatch"], 0, "{report}");
    assert_eq!(
        report["FailedWebhookJobs"], 1,
        "the old one is not counted: {report}"
    );
    assert_eq!(report["partial"], false);
    assert_eq!(sim.writes(), vec![], "no repair unless asked");

    // A Dataverse admin deletes the Update step.
    {
        let mut state = sim.state();
        let steps = &mut state
            .tables
            .get_mut("sdkmessageprocessingsteps")
            .unwrap()
            .rows;
        let at = steps
            .iter()
            .position(|s| s["sdkmessageprocessingstepid"] == step["sdkmessageprocessingstepid"])
            .unwrap();
        steps.remove(at);
    }
    let report = watch_once(&deployment).await;
    assert_eq!(report["RegistrationMismatch"], 1, "{report}");
    assert!(
        report["registration_mismatches"][0]
            .as_str()
            .unwrap()
            .contains("no step"),
        "{report}"
    );

    // The same run with repair, as the function runs with WATCH_REPAIR.
    let proxy = deployment.proxy.url.clone();
    let logs = deployment
        .redeploy(
            "consent-watch",
            &[
                ("CONFIG_SECRET_ID", "consent-sync/config"),
                ("AWS_ENDPOINT_URL", proxy.as_str()),
                ("WATCH_REPAIR", "from-didomi"),
            ],
        )
        .await;
    let sim = &deployment.sim;
    let report = watch_once(&deployment).await;
    assert_eq!(report["ContactsRepaired"], 3, "{report}");
    for id in &ids[..3] {
        assert_eq!(
            sim.contact_by_id(id).unwrap()["donotbulkemail"],
            json!(false)
        );
    }
    for id in &ids[3..5] {
        assert_eq!(
            sim.contact_by_id(id).unwrap()["donotbulkemail"],
            json!(true),
            "not modified in the last 24 hours: not looked at"
        );
    }
    let report = watch_once(&deployment).await;
    assert_eq!(report["ContactsDiffering"], 0, "{report}");
    assert_eq!(report["ContactsRepaired"], 0, "{report}");

    let records = metric_records(&logs);
    assert_eq!(records.len(), 2, "one record per run: {logs}");
    let first = &records[0];
    assert_eq!(
        first["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "ConsentSync"
    );
    assert_eq!(
        first["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"]])
    );
    assert_eq!(first["Function"], "consent-watch");
    assert_eq!(first["ContactsDiffering"], 3);
    assert_eq!(records[1]["RegistrationMismatch"], 1);
    let report_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "watch finished")
        .unwrap_or_else(|| panic!("one report line: {logs}"));
    assert_eq!(report_line["level"], "INFO");
    assert!(
        !logs.contains("watch0@example.com"),
        "no user id in the logs"
    );
    let logs = deployment.stop();
    assert_eq!(metric_records(&logs)[0]["ContactsRepaired"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_sync_watch_prints_one_figure_per_line_and_uses_the_export_when_given() {
    let (sim, _, dir, _) = exported().await;
    let config_path = dir.0.join("config.json");
    std::fs::write(&config_path, sim.config().to_string()).unwrap();
    let export_dir = dir.0.join("data").join(EXPORT_ID);
    let output = std::process::Command::new(consent_sync_tests::binary("consent-sync"))
        .args(["watch", "--config", config_path.to_str().unwrap()])
        .args(["--didomi-export", export_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Vec<&str> = stdout.lines().take(6).collect();
    assert_eq!(
        figures,
        [
            "ContactsChecked: 2000",
            "ContactsDiffering: 100",
            "ContactsWithoutDidomiUser: 0",
            "ContactsRepaired: 0",
            "RegistrationMismatch: 1",
            "FailedWebhookJobs: 0",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("registration: not registered"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_cannot_reach_didomi_reports_what_it_could_not_check_and_fails() {
    let sim = Simulator::start(
        consent_sync_sim::Identity::default(),
        consent_sync_sim::sample_contacts(),
    )
    .await
    .unwrap();
    sim.state().didomi.faults.extend(std::iter::repeat_n(
        consent_sync_sim::Fault::Status {
            status: 503,
            retry_after: None,
        },
        400,
    ));
    let dir = TempDir::new("unreachable");
    let config_path = dir.0.join("config.json");
    std::fs::write(&config_path, sim.config().to_string()).unwrap();
    let output = std::process::Command::new(consent_sync_tests::binary("consent-sync"))
        .args(["watch", "--json", "--config", config_path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["ContactsChecked"], 0, "{report}");
    let unchecked = report["unchecked"].as_array().unwrap();
    assert!(
        !unchecked.is_empty()
            && unchecked.iter().all(|u| u
                .as_str()
                .unwrap()
                .contains("its Didomi user could not be read")),
        "{report}"
    );
    assert!(unchecked.len() <= 20, "a bounded list: {report}");
    assert!(stderr.contains("the watch could not check"), "{stderr}");
}
