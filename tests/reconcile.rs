//! `consent-sync reconcile` against the simulators: tens of thousands of
//! contacts and Didomi users, paged on both sides as the services page them.

use consent_sync::Config;
use consent_sync_cli::reconcile::{run, Options, Truth};
use consent_sync_sim::{Identity, Simulator};
use serde_json::{json, Value};

const CONTACTS: usize = 20_000;

fn contact_id(i: usize) -> String {
    consent_sync_tests::numbered_contact_id(i)
}

async fn seeded() -> (Simulator, Config) {
    let sim = consent_sync_tests::reconcile_simulator(CONTACTS, 20).await;
    let config = Config::from_json(&sim.config().to_string()).unwrap();
    (sim, config)
}

fn options(from: Truth, apply: bool, limit: Option<usize>) -> Options {
    Options {
        limit,
        ..Options::new(from, apply)
    }
}

/// The contacts an `UpdateMultiple` request targets, each with the columns it sets.
fn targets(write: &consent_sync_sim::Recorded) -> Vec<serde_json::Map<String, Value>> {
    assert_eq!(write.method, "POST");
    assert_eq!(
        write.path_and_query,
        "/api/data/v9.2/contacts/Microsoft.Dynamics.CRM.UpdateMultiple"
    );
    write.body.as_ref().unwrap()["Targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_object().unwrap().clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_exactly_the_differences_and_apply_fixes_them_and_nothing_else() {
    let (sim, config) = seeded().await;

    let report = run(&config, options(Truth::Didomi, false, None))
        .await
        .unwrap();
    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["didomi_users"], CONTACTS);
    assert_eq!(report.json["contacts"], CONTACTS);
    assert_eq!(
        report.json["matched"], CONTACTS,
        "matched case-insensitively"
    );
    assert_eq!(report.json["differing"], 1000, "{}", report.text);
    assert_eq!(report.json["per_column"], json!({"donotbulkemail": 1000}));
    assert_eq!(sim.writes(), vec![], "a report writes nothing");
    let pages: Vec<String> = sim
        .dataverse_requests()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(pages.len(), CONTACTS / 5000, "large pages: {pages:?}");
    assert_eq!(
        sim.didomi_requests().len(),
        1 + CONTACTS / 100,
        "a session, then pages of 100"
    );

    let report = run(&config, options(Truth::Didomi, true, Some(10)))
        .await
        .unwrap();
    assert_eq!(
        (
            report.json["differing"].clone(),
            report.json["written"].clone()
        ),
        (json!(10), json!(10))
    );
    let writes = sim.writes();
    assert_eq!(writes.len(), 1, "ten contacts, one bulk request");
    assert_eq!(targets(&writes[0]).len(), 10);

    sim.clear_requests();
    let report = run(&config, options(Truth::Didomi, true, None))
        .await
        .unwrap();
    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["differing"], 990);
    assert_eq!(report.json["written"], 990);
    let writes = sim.writes();
    assert_eq!(writes.len(), 10, "990 contacts in bulk requests of 100");
    let targets: Vec<_> = writes.iter().flat_map(targets).collect();
    assert_eq!(targets.len(), 990);
    assert!(targets.iter().all(|t| {
        t["@odata.type"] == "Microsoft.Dynamics.CRM.contact"
            && t.keys().collect::<Vec<_>>() == ["@odata.type", "contactid", "donotbulkemail"]
    }));
    for i in [0, 20, 19_980] {
        let contact = sim.contact_by_id(&contact_id(i)).unwrap();
        assert_eq!(
            contact["donotbulkemail"],
            json!(i % 2 == 1),
            "contact {i} follows Didomi"
        );
    }
    assert_eq!(
        sim.contact_by_id(&contact_id(1)).unwrap()["donotbulkemail"],
        json!(false)
    );

    let again = run(&config, options(Truth::Didomi, false, None))
        .await
        .unwrap();
    assert_eq!(again.json["differing"], 0, "{}", again.text);
}

#[tokio::test]
async fn reconcile_from_dynamics_sends_only_for_contacts_with_a_didomi_user() {
    let sim = Simulator::start(Identity::default(), consent_sync_sim::sample_contacts())
        .await
        .unwrap();
    sim.set_contact_columns(consent_sync_tests::JANE, json!({"donotbulkemail": true}));
    {
        let mut state = sim.state();
        for (id, marketing) in [
            ("Jane.Doe@example.com", true),
            ("o'brien+news&co@example.com", true),
        ] {
            state.didomi.user_mut(id).consents = json!({
                "purposes": [{"id": "marketing", "enabled": marketing}],
                "channels": [{"id": "email", "enabled": true}, {"id": "sms", "enabled": true}]
            })
            .as_object()
            .cloned()
            .unwrap();
        }
    }
    let config = Config::from_json(&sim.config().to_string()).unwrap();

    let report = run(&config, options(Truth::Dynamics, false, None))
        .await
        .unwrap();
    assert_eq!(report.json["differing"], 1, "{}", report.text);
    assert_eq!(report.json["per_column"], json!({"donotbulkemail": 1}));
    assert_eq!(
        report.json["contacts_without_user"], 1,
        "Ada: reported, not sent"
    );
    assert_eq!(sim.didomi_events(), Vec::<Value>::new());

    let report = run(&config, options(Truth::Dynamics, true, None))
        .await
        .unwrap();
    assert_eq!(report.json["written"], 1, "{}", report.text);
    let events = sim.didomi_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["user"]["organization_user_id"],
        "Jane.Doe@example.com"
    );
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "marketing", "enabled": false}])
    );
    assert_eq!(events[0]["delegate"]["id"], "consent-sync");
    assert_eq!(sim.writes(), vec![]);

    let again = run(&config, options(Truth::Dynamics, false, None))
        .await
        .unwrap();
    assert_eq!(again.json["differing"], 0, "{}", again.text);
}

#[tokio::test]
async fn reconcile_waits_out_throttling_instead_of_failing() {
    let sim = Simulator::start(Identity::default(), consent_sync_sim::sample_contacts())
        .await
        .unwrap();
    sim.state().didomi.user_mut("jane.doe@example.com").consents =
        json!({"purposes": [{"id": "marketing", "enabled": false}]})
            .as_object()
            .cloned()
            .unwrap();
    let config = Config::from_json(&sim.config().to_string()).unwrap();
    // Service protection: the first two requests are refused with Retry-After.
    sim.fail_dataverse(
        2,
        consent_sync_sim::Fault::Status {
            status: 429,
            retry_after: Some(1),
        },
    );

    let report = run(&config, options(Truth::Didomi, true, None))
        .await
        .unwrap();

    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["written"], 1);
    assert_eq!(
        sim.contact_by_id(consent_sync_tests::JANE).unwrap()["donotbulkemail"],
        json!(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_under_a_tight_limit_fixes_a_thousand_contacts_in_a_few_dozen_requests() {
    let (sim, config) = seeded().await;
    // A handful of requests per few seconds: far below Dataverse's 6,000 per
    // five minutes, so that every burst would be throttled.
    sim.limit_dataverse(6, std::time::Duration::from_secs(2));

    let report = run(&config, options(Truth::Didomi, true, None))
        .await
        .unwrap();

    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["written"], 1000, "{}", report.text);
    let requests = sim.dataverse_requests().len();
    let throttled = sim.throttled();
    assert!(
        requests <= 40,
        "{requests} Dataverse requests (reads and throttled ones included)"
    );
    // 3 or 4 here: each time the window fills, the request that finds it
    // full (and at most one more already in flight) is answered 429, then
    // every worker waits.
    assert!(
        throttled <= 6,
        "{throttled} answers 429: the pause was not shared or not honoured"
    );
    assert_eq!(report.json["throttled"], throttled);
    assert_eq!(report.json["dataverse_requests"], requests - throttled);

    let again = run(&config, options(Truth::Didomi, false, None))
        .await
        .unwrap();
    assert_eq!(again.json["differing"], 0, "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_contact_deleted_meanwhile_applies_the_others_and_reports_it() {
    // 400 contacts, 20 of them differing (every 20th); one of those is
    // deleted after the contacts were read and before the writes.
    let sim = consent_sync_tests::reconcile_simulator(400, 20).await;
    let config = Config::from_json(&sim.config().to_string()).unwrap();
    let deleted = contact_id(40);
    // Didomi answers slowly at first: the window in which the contact goes.
    sim.fail_didomi(
        1,
        consent_sync_sim::Fault::Delay(std::time::Duration::from_millis(700)),
    );
    let reconcile = {
        let config = config.clone();
        tokio::spawn(async move { run(&config, options(Truth::Didomi, true, None)).await })
    };
    while sim.dataverse_requests().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    sim.delete_contact(&deleted);

    let report = reconcile.await.unwrap().unwrap();

    assert!(!report.ok, "a refused contact is a failure to report");
    assert_eq!(report.json["written"], 19, "{}", report.text);
    let failed = report.json["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let failure = failed[0].as_str().unwrap();
    assert!(
        failure.starts_with(&format!("contact {deleted}: refused by Dataverse"))
            && failure.contains("Does Not Exist"),
        "{failure}"
    );
    assert!(report.reason.unwrap().contains("1 write(s) failed"));
    for i in (0..400).step_by(20).filter(|&i| i != 40) {
        let contact = sim.contact_by_id(&contact_id(i)).unwrap();
        assert_eq!(contact["donotbulkemail"], json!(i % 2 == 1), "contact {i}");
    }
    // The whole batch, refused; then the batch without the contact Dataverse named.
    let writes = sim.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(targets(&writes[0]).len(), 20);
    assert_eq!(targets(&writes[1]).len(), 19);
    assert!(targets(&writes[1])
        .iter()
        .all(|t| t["contactid"] != deleted.as_str()));
}

/// With `sync_timestamp_column`, reconcile writes as the functions write:
/// the change's time with the columns, so that a late older event is
/// skipped, and a contact holding a newer change is left alone.
#[tokio::test]
async fn given_the_stale_event_guard_reconcile_writes_the_time_and_a_late_older_event_is_skipped() {
    let fixture = consent_sync_tests::Fixture::new(|config| {
        config["sync_timestamp_column"] = json!("new_consentsyncedon");
    })
    .await;
    let sim = &fixture.sim;
    for (user, at) in [
        ("jane.doe@example.com", "2026-11-30T08:00:00Z"),
        ("o'brien+news&co@example.com", "2026-11-30T08:00:00Z"),
    ] {
        let mut state = sim.state();
        let didomi_user = state.didomi.user_mut(user);
        didomi_user.consents = json!({"purposes": [{"id": "marketing", "enabled": false}]})
            .as_object()
            .cloned()
            .unwrap();
        didomi_user.updated_at = at.into();
    }
    // O'Brien's contact holds a change newer than Didomi's state.
    sim.set_contact_columns(
        consent_sync_tests::OBRIEN,
        json!({"new_consentsyncedon": "2026-11-30T09:00:00Z"}),
    );
    let config = Config::from_json(&{
        let mut c = sim.config();
        c["sync_timestamp_column"] = json!("new_consentsyncedon");
        c.to_string()
    })
    .unwrap();

    let report = run(&config, options(Truth::Didomi, true, None))
        .await
        .unwrap();
    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["newer_than_didomi"], 1, "{}", report.text);
    assert_eq!(report.json["per_column"], json!({"donotbulkemail": 1}));
    let jane = fixture.contact(consent_sync_tests::JANE);
    assert_eq!(jane["donotbulkemail"], json!(true));
    assert_eq!(jane["new_consentsyncedon"], json!("2026-11-30T08:00:00Z"));
    let obrien = fixture.contact(consent_sync_tests::OBRIEN);
    assert_eq!(obrien["donotbulkemail"], json!(false), "left alone");

    // A late event from before reconcile's state: skipped as stale.
    let mut late: Value =
        serde_json::from_str(&consent_sync_tests::sample("didomi-event-created.json")).unwrap();
    late["parameters"]["entity"]["created_at"] = json!("2026-11-30T07:00:00Z");
    late["parameters"]["entity"]["consents"]["purposes"] =
        json!([{"id": "marketing", "enabled": true}]);
    let (status, body) = fixture
        .deliver(&consent_sync_tests::post(&late.to_string()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("not newer"),
        "{body}"
    );
    assert_eq!(
        fixture.contact(consent_sync_tests::JANE)["donotbulkemail"],
        json!(true)
    );
}
