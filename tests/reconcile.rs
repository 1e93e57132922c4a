//! `consent-sync reconcile` against the simulators: tens of thousands of
//! contacts and Didomi users, paged on both sides as the services page them.

use consent_sync::Config;
use consent_sync_cli::reconcile::{run, From, Options};
use consent_sync_sim::{Identity, Simulator};
use serde_json::{json, Value};

const CONTACTS: usize = 20_000;

fn contact_id(i: usize) -> String {
    consent_sync_tests::numbered_contact_id(i)
}

async fn seeded() -> (Simulator, Config) {
    let sim = consent_sync_tests::reconcile_simulator(CONTACTS).await;
    let config = Config::from_json(&sim.config().to_string()).unwrap();
    (sim, config)
}

fn options(from: From, apply: bool, limit: Option<usize>) -> Options {
    Options { from, apply, limit }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_exactly_the_differences_and_apply_fixes_them_and_nothing_else() {
    let (sim, config) = seeded().await;

    let report = run(&config, options(From::Didomi, false, None))
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

    let report = run(&config, options(From::Didomi, true, Some(10)))
        .await
        .unwrap();
    assert_eq!(
        (
            report.json["differing"].clone(),
            report.json["written"].clone()
        ),
        (json!(10), json!(10))
    );
    assert_eq!(sim.writes().len(), 10);

    sim.clear_requests();
    let report = run(&config, options(From::Didomi, true, None))
        .await
        .unwrap();
    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["differing"], 990);
    assert_eq!(report.json["written"], 990);
    let writes = sim.writes();
    assert_eq!(writes.len(), 990);
    assert!(writes.iter().all(|w| w.method == "PATCH"
        && w.body
            .as_ref()
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
            == ["donotbulkemail"]));
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

    let again = run(&config, options(From::Didomi, false, None))
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

    let report = run(&config, options(From::Dynamics, false, None))
        .await
        .unwrap();
    assert_eq!(report.json["differing"], 1, "{}", report.text);
    assert_eq!(report.json["per_column"], json!({"donotbulkemail": 1}));
    assert_eq!(
        report.json["contacts_without_user"], 1,
        "Ada: reported, not sent"
    );
    assert_eq!(sim.didomi_events(), Vec::<Value>::new());

    let report = run(&config, options(From::Dynamics, true, None))
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

    let again = run(&config, options(From::Dynamics, false, None))
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

    let report = run(&config, options(From::Didomi, true, None))
        .await
        .unwrap();

    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["written"], 1);
    assert_eq!(
        sim.contact_by_id(consent_sync_tests::JANE).unwrap()["donotbulkemail"],
        json!(true)
    );
}
