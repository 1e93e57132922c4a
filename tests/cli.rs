//! The operator CLI, run as a person runs it.

use std::process::Command;

use consent_sync_tests::{binary, sample, JANE};
use serde_json::json;

fn consent_sync(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary("consent-sync"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_remove("CONFIG_SECRET_ID")
        .output()
        .expect("consent-sync runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn local_replays_the_sample_delivery_and_shows_what_changed() {
    let (code, stdout, stderr) = consent_sync(&["local"]);

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("-> HTTP 200"), "{stdout}");
    // A narrative only: the functions' log lines go to the file it names.
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        stdout.lines().all(|l| !l.trim_start().starts_with('{')),
        "{stdout}"
    );
    let log = stdout
        .lines()
        .find_map(|l| l.strip_prefix("the functions' log lines:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no log file named:\n{stdout}"));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("\"message\":\"delivery handled\""), "{log}");
    assert!(log.contains("parked for the drain"), "{log}");
    assert!(
        stdout.contains("donotbulkemail   false -> true"),
        "{stdout}"
    );
    assert!(
        stdout.contains("new_topics       null -> \"sports,news\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("donotemail "),
        "an unchanged column is not listed:\n{stdout}"
    );
    // With consent records: the sample lands in four records, and a Didomi
    // opt-out updates the newsletter record in place.
    assert!(
        stdout.contains("\"consent_records\":{\"created\":4,\"updated\":0}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"consent_records\":{\"created\":0,\"updated\":1}"),
        "{stdout}"
    );
    let last = stdout.rsplit("opt-out of the newsletter").next().unwrap();
    assert!(
        last.contains("Newsletter (purpose)                 Opted Out"),
        "{stdout}"
    );
    // The whole loop: our own write is not echoed; a person's edit becomes
    // one Didomi event, whose delivery back is not applied again.
    for expected in [
        "The webhook this write fired -> dynamics-to-didomi: HTTP 200 {\"outcome\":\"skipped\",\"reason\":\"written by consent-sync's own application user; not synced back\"}",
        "2. Dynamics -> Didomi: a person sets donotbulkemail = false",
        "Dataverse webhook -> dynamics-to-didomi: HTTP 200 {\"channels\":[],\"outcome\":\"sent\",\"purposes\":[\"marketing\"]}",
        "Didomi recorded 1 consent event(s):",
        "delegate \"consent-sync\"",
        "Didomi webhook back -> didomi-to-dynamics: HTTP 200 {\"outcome\":\"skipped\",\"reason\":\"written by consent-sync from Dynamics; not synced back\"}",
        "Dataverse writes caused by the echo: 0",
    ] {
        assert!(stdout.contains(expected), "{expected}\n{stdout}");
    }
    // An outage that heals by itself: parked and answered 202 while
    // Dataverse is down, applied by the drain once it is back.
    let outage = stdout
        .split("4. An outage heals by itself")
        .nth(1)
        .unwrap_or_else(|| panic!("no fourth step:\n{stdout}"));
    for expected in [
        "-> HTTP 202 {\"error_class\":\"dataverse_unavailable\",\"outcome\":\"parked\"}",
        "parked queue (simulated SQS) holds 1 record(s)",
        "a batch of 1 -> {\"batchItemFailures\":[]} (1 applied)",
        "donotbulkemail   true -> false",
        "The parked queue holds 0 record(s)",
    ] {
        assert!(outage.contains(expected), "{expected}\n{stdout}");
    }
    // The first day: init maps every purpose it can, creating what is missing.
    let first_day = stdout
        .split("6. The first day")
        .nth(1)
        .unwrap_or_else(|| panic!("no sixth step:\n{stdout}"));
    for expected in [
        "marketing   new_marketing   create",
        "profiling   new_profiling   conflict  column new_profiling exists as Picklist",
        "sports      new_sports      exists    Yes/No column of that name",
        "created  column new_surveys",
        "published the contact table",
        "wrote    4 new mapping(s)",
        "ok   columns          all 4 mapped columns exist with a fitting type",
    ] {
        assert!(first_day.contains(expected), "{expected}\n{first_day}");
    }
}

#[test]
fn local_replays_a_given_event() {
    let (code, stdout, _) = consent_sync(&["local", "--event", "events/didomi-event-created.json"]);

    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("donotbulkemail   false -> true"),
        "{stdout}"
    );
    assert!(!stdout.contains("new_topics"), "{stdout}");
}

#[test]
fn local_with_an_invalid_configuration_fails_with_one_line_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("consent-sync-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(consent_sync_sim::LOCAL_CONFIG).unwrap();
    config.as_object_mut().unwrap().remove("tenant_id");
    std::fs::write(&path, config.to_string()).unwrap();

    let (code, stdout, stderr) = consent_sync(&["local", "--config", path.to_str().unwrap()]);

    assert_ne!(code, 0, "{stdout}");
    assert_eq!(
        stderr.trim(),
        "consent-sync: configuration field `tenant_id`: is required"
    );
    assert_eq!(stderr.trim().lines().count(), 1);
    let _ = std::fs::remove_dir_all(dir);
    // The sample events stay valid deliveries.
    assert!(sample("didomi-event-created.json").contains("event.created"));
}

/// A configuration file pointing at `sim`, changed by `adjust`.
fn config_file(
    sim: &consent_sync_sim::Simulator,
    adjust: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let mut config = sim.config();
    adjust(&mut config);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let path = std::env::temp_dir().join(format!(
        "consent-sync-cli-{}-{nanos}.json",
        std::process::id()
    ));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn with_config(path: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", path.to_str().unwrap()]);
    consent_sync(&all)
}

const TABLES: [&str; 5] = [
    "serviceendpoints",
    "sdkmessageprocessingsteps",
    "sdkmessageprocessingstepimages",
    "sdkmessages",
    "sdkmessagefilters",
];

fn snapshot(
    sim: &consent_sync_sim::Simulator,
) -> Vec<Vec<serde_json::Map<String, serde_json::Value>>> {
    TABLES.iter().map(|t| sim.rows(t)).collect()
}

async fn simulator() -> consent_sync_sim::Simulator {
    consent_sync_sim::Simulator::start(
        consent_sync_sim::Identity::default(),
        consent_sync_sim::sample_contacts(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_register_converges_and_unregister_leaves_the_environment_as_it_was() {
    let sim = simulator().await;
    let config = config_file(&sim, |_| {});
    let before = snapshot(&sim);
    let url = "http://127.0.0.1:9/dynamics";

    let (code, stdout, stderr) = with_config(&config, &["webhook", "register", "--url", url]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("registered"), "{stdout}");
    let endpoints = sim.rows("serviceendpoints");
    let ours: Vec<_> = endpoints
        .iter()
        .filter(|e| e["name"] == "consent-sync")
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["url"], url);
    assert_eq!(
        (
            ours[0]["contract"].clone(),
            ours[0]["authtype"].clone(),
            ours[0]["messageformat"].clone()
        ),
        (json!(8), json!(5), json!(2))
    );
    assert_eq!(
        ours[0]["authvalue"],
        "<settings><setting name=\"x-consent-sync-key\" value=\"local-dynamics-webhook-key-0123456789\"/></settings>"
    );
    let endpoint_id = ours[0]["serviceendpointid"].as_str().unwrap().to_string();
    let steps: Vec<_> = sim
        .rows("sdkmessageprocessingsteps")
        .into_iter()
        .filter(|s| s["_eventhandler_value"] == endpoint_id.as_str())
        .collect();
    assert_eq!(steps.len(), 2);
    for step in &steps {
        assert_eq!(
            (step["stage"].clone(), step["mode"].clone()),
            (json!(40), json!(1))
        );
        assert_eq!(
            step["filteringattributes"],
            "donotbulkemail,donotemail,donotphone,emailaddress1,new_profiling,new_sports,new_topics"
        );
    }
    assert_eq!(sim.rows("sdkmessageprocessingstepimages").len(), 1 + 2);

    // Again, as JSON: the same rows, updated in place.
    let (code, stdout, _) = with_config(
        &config,
        &[
            "webhook",
            "register",
            "--url",
            "http://127.0.0.1:10/dynamics",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    let actions: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "updated",
            "unchanged",
            "unchanged",
            "unchanged",
            "unchanged"
        ]
    );
    assert_eq!(sim.rows("serviceendpoints").len(), 2);
    assert_eq!(sim.rows("sdkmessageprocessingsteps").len(), 1 + 2);
    assert_eq!(sim.rows("sdkmessageprocessingstepimages").len(), 1 + 2);
    assert!(sim
        .rows("serviceendpoints")
        .iter()
        .any(|e| e["url"] == "http://127.0.0.1:10/dynamics"));

    let (code, stdout, stderr) = with_config(&config, &["webhook", "status"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("Matches the configuration."), "{stdout}");
    assert!(stdout.contains("No failed deliveries."), "{stdout}");

    // A mapping added later: status says so, register brings the steps in line.
    let changed = config_file(&sim, |c| {
        c["mappings"]
            .as_array_mut()
            .unwrap()
            .push(json!({"column": "donotfax", "channel": "fax", "invert": true}));
    });
    let (code, stdout, stderr) = with_config(&changed, &["webhook", "status"]);
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.contains("donotfax"), "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("consent-sync: the webhook does not match the configuration"),
        "{stderr}"
    );
    let (code, _, _) = with_config(&changed, &["webhook", "register", "--url", url]);
    assert_eq!(code, 0);
    assert_eq!(with_config(&changed, &["webhook", "status"]).0, 0);

    let (code, stdout, stderr) = with_config(&config, &["webhook", "unregister"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert_eq!(
        snapshot(&sim),
        before,
        "the environment is as it was, other rows untouched"
    );

    let (code, stdout, _) = with_config(&config, &["webhook", "unregister"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing to remove"), "{stdout}");
    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_file(changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_register_leaves_an_endpoint_it_did_not_create_alone() {
    let sim = simulator().await;
    let config = config_file(&sim, |_| {});
    let before = snapshot(&sim);

    let (code, _, stderr) = with_config(
        &config,
        &[
            "webhook",
            "register",
            "--url",
            "http://127.0.0.1:9/",
            "--name",
            "Contoso audit",
        ],
    );

    assert_ne!(code, 0);
    assert!(stderr.contains("consent-sync did not create"), "{stderr}");
    assert_eq!(snapshot(&sim), before);
    let (code, _, stderr) = with_config(
        &config,
        &["webhook", "register", "--url", "http://example.com/"],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("must use https"), "{stderr}");
    let _ = std::fs::remove_file(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_reports_the_alternate_key_and_warns_without_one_in_upsert_mode() {
    let sim = simulator().await;
    let warning =
        "upsert_mode is on and no active alternate key is defined on contact emailaddress1";
    let upsert = config_file(&sim, |c| c["upsert_mode"] = json!(true));
    let (code, stdout, stderr) = with_config(&upsert, &["config", "check"]);
    assert_eq!(code, 0, "a warning, not a failure: {stdout}\n{stderr}");
    assert!(
        stdout.contains("ok   alternate key    none active on emailaddress1"),
        "{stdout}"
    );
    assert!(stdout.contains(warning), "{stdout}");
    assert!(
        stdout.contains("Power Apps → Tables → Contact → Keys"),
        "{stdout}"
    );

    sim.add_contact_key("emailaddress1");
    let (code, stdout, _) = with_config(&upsert, &["config", "check"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("ok   alternate key    `emailaddress1_key` on emailaddress1 is active"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("duplicate"),
        "nothing about duplicates: {stdout}"
    );
    assert!(!stdout.contains(warning), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_status_shows_failed_deliveries_with_their_message() {
    let sim = simulator().await;
    let config = config_file(&sim, |_| {});
    // Nothing listens on port 9 of the loopback: every delivery fails.
    assert_eq!(
        with_config(
            &config,
            &["webhook", "register", "--url", "http://127.0.0.1:9/"]
        )
        .0,
        0
    );
    sim.edit_contact_as_person(JANE, json!({"donotbulkemail": true}))
        .unwrap();
    sim.settle().await;
    assert_eq!(sim.rows("asyncoperations").len(), 1);

    let (code, stdout, _) = with_config(&config, &["webhook", "status"]);

    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("Recent failed deliveries (1)"), "{stdout}");
    assert!(stdout.contains("contact Update"), "{stdout}");
    assert!(stdout.contains("The webhook call failed"), "{stdout}");
    let _ = std::fs::remove_file(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_tries_everything_and_names_a_missing_column() {
    let sim = simulator().await;
    let section = json!({
        "purposes": [
            {"purpose": "newsletter", "consent_purpose": "Newsletter"},
            {"purpose": "marketing", "consent_purpose": "Commercial communications"}
        ],
        "topics": [{"purpose": "newsletter", "preference": "topics", "value": "sports", "consent_topic": "Sports"}]
    });
    let good = config_file(&sim, |c| {
        c["sync_timestamp_column"] = json!("new_consentsyncedon");
        c["contact_point_consent"] = section.clone();
    });
    let (code, stdout, stderr) = with_config(&good, &["config", "check"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for line in [
        "ok   dataverse",
        "ok   columns",
        "ok   didomi",
        "ok   consent records  2 purpose(s) and 1 topic(s) found",
        "purpose \"Newsletter\", email: Restrictive: Journeys sends only to an address with an Opted In record; a missing record blocks sending",
        "purpose \"Commercial communications\", email: Non-restrictive",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }

    let bad = config_file(&sim, |c| {
        c["mappings"]
            .as_array_mut()
            .unwrap()
            .push(json!({"column": "new_missing", "purpose": "surveys"}));
        c["mappings"][3]["preference"] = json!("topics");
        c["mappings"][0]["choice"] = json!({"true": 1, "false": 2});
        c["didomi"]["api_secret"] = json!("wrong-secret");
        c["sync_timestamp_column"] = json!("firstname");
        let mut section = section.clone();
        section["purposes"][1]["consent_purpose"] = json!("Loyalty");
        c["contact_point_consent"] = section;
    });
    let (code, stdout, stderr) = with_config(&bad, &["config", "check", "--json"]);
    assert_ne!(code, 0, "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("column `new_missing` does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("column `donotbulkemail` is of type Boolean"),
        "{stderr}"
    );
    assert!(stderr.contains("refused the API key"), "{stderr}");
    assert!(
        stderr.contains(
            "column `firstname` is of type String, but the sync_timestamp_column needs DateTime"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "contact_point_consent.purposes[1].consent_purpose: no purpose \"Loyalty\" in msdynmkt_purposes"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn commands_without_a_configuration_say_how_to_give_one() {
    let (code, _, stderr) = consent_sync(&["config", "check"]);
    assert_ne!(code, 0);
    assert_eq!(
        stderr.trim(),
        "consent-sync: no configuration: pass --config FILE or set CONFIG_SECRET_ID to the secret's name or ARN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_exit_code_tells_a_script_whether_a_report_found_differences() {
    let sim = simulator().await;
    let path = config_file(&sim, |_| {});
    sim.state().didomi.user_mut("jane.doe@example.com").consents = json!({
        "purposes": [{"id": "marketing", "enabled": false}]
    })
    .as_object()
    .cloned()
    .unwrap();
    let run = |args: &'static [&'static str]| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || with_config(&path, args))
    };
    let (code, stdout, _) = run(&["reconcile"]).await.unwrap();
    assert_eq!(code, 0, "a run that worked: {stdout}");
    assert!(stdout.contains("differing contacts      1"), "{stdout}");
    let (code, _, _) = run(&["reconcile", "--exit-code"]).await.unwrap();
    assert_eq!(code, 2, "a report that found differences");
    let (code, _, _) = run(&["reconcile", "--apply", "--exit-code"]).await.unwrap();
    assert_eq!(code, 0, "applied");
    let (code, stdout, _) = run(&["reconcile", "--exit-code"]).await.unwrap();
    assert_eq!(code, 0, "nothing differs any more: {stdout}");

    let (code, _, stderr) = consent_sync(&["local", "--json"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--json is not available"), "{stderr}");
    let (_, _, stderr) = consent_sync(&["reconcle"]);
    assert!(
        stderr.contains("a similar subcommand exists: 'reconcile'"),
        "{stderr}"
    );
    let (_, help, _) = consent_sync(&["replay", "--help"]);
    assert!(help.contains("[env: PARKED_QUEUE_URL"), "{help}");
    assert!(help.contains("[env: CONFIG_SECRET_ID"), "{help}");
}
