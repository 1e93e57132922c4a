//! Contact Point Consent records (Customer Insights – Journeys) against the
//! simulators: Didomi choices written as records, and a person's change or
//! a one-click unsubscribe there carried back to Didomi.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use consent_sync::function::Function;
use consent_sync::{Config, ConfigSource, Deadline, DidomiToDynamics, DynamicsToDidomi};
use consent_sync_sim::registration::{
    CONSENT_SET, PURPOSE_MARKETING, PURPOSE_NEWSLETTER, TOPIC_NEWS, TOPIC_SPORTS,
};
use consent_sync_sim::{sample_contacts, Identity, Simulator};
use consent_sync_tests::{answer, post, sample, Fixture};
use serde_json::{json, Map, Value};

const OPTED_IN: i64 = 534_120_001;
const OPTED_OUT: i64 = 534_120_002;
const PURPOSE: i64 = 534_120_000;
const TOPIC: i64 = 534_120_001;
const EMAIL: i64 = 534_120_000;
const JANE_ADDRESS: &str = "jane.doe@example.com";

/// Two purposes and two topic values, by name and by id.
fn section() -> Value {
    json!({
        "channel": "email",
        "purposes": [
            {"purpose": "newsletter", "consent_purpose": "Newsletter"},
            {"purpose": "marketing", "consent_purpose": PURPOSE_MARKETING}
        ],
        "topics": [
            {"purpose": "newsletter", "preference": "topics", "value": "sports", "consent_topic": "Sports"},
            {"purpose": "newsletter", "preference": "topics", "value": "news", "consent_topic": TOPIC_NEWS}
        ]
    })
}

/// Consent records only, no contact columns.
fn records_only(config: &mut Value) {
    config.as_object_mut().unwrap().remove("mappings");
    config["contact_point_consent"] = section();
}

fn records(sim: &Simulator) -> Vec<Map<String, Value>> {
    sim.rows(CONSENT_SET)
}

/// The record of (type, purpose, topic) for Jane's address.
fn record_of(
    sim: &Simulator,
    kind: i64,
    purpose: &str,
    topic: Option<&str>,
) -> Vec<Map<String, Value>> {
    records(sim)
        .into_iter()
        .filter(|r| {
            r["msdynmkt_contactpointvalue"] == JANE_ADDRESS
                && r["msdynmkt_contactpointconsenttype"] == kind
                && r["_msdynmkt_purposeid_value"] == purpose
                && r.get("_msdynmkt_topicid_value").and_then(Value::as_str) == topic
        })
        .collect()
}

fn event_for(consents: Value) -> String {
    let mut delivery: Value = serde_json::from_str(&sample("didomi-event-created.json")).unwrap();
    delivery["parameters"]["entity"]["consents"] = consents;
    delivery.to_string()
}

#[tokio::test]
async fn given_two_purposes_and_two_topic_values_then_four_records_once_and_a_withdrawal_updates_in_place(
) {
    let fixture = Fixture::new(records_only).await;

    // marketing off; newsletter on with topics "sports,news".
    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "updated", "{body}");
    assert_eq!(body["consent_records"], json!({"created": 4, "updated": 0}));
    let all = records(&fixture.sim);
    assert_eq!(all.len(), 4, "{all:#?}");
    for record in &all {
        assert_eq!(record["msdynmkt_contactpointtype"], EMAIL);
        assert_eq!(record["msdynmkt_source"], 534_120_000);
        assert_eq!(record["msdynmkt_logicalreason"], 534_119_999);
        let reason = record["msdynmkt_reason"].as_str().unwrap();
        assert!(
            reason.starts_with("consent-sync: Didomi user.updated"),
            "{reason}"
        );
        assert!(
            !reason.contains(JANE_ADDRESS),
            "no personal data in the reason"
        );
    }
    let newsletter = record_of(&fixture.sim, PURPOSE, PURPOSE_NEWSLETTER, None);
    assert_eq!(newsletter.len(), 1);
    assert_eq!(newsletter[0]["msdynmkt_value"], OPTED_IN);
    assert_eq!(
        record_of(&fixture.sim, PURPOSE, PURPOSE_MARKETING, None)[0]["msdynmkt_value"],
        OPTED_OUT
    );
    for topic in [TOPIC_SPORTS, TOPIC_NEWS] {
        let found = record_of(&fixture.sim, TOPIC, PURPOSE_NEWSLETTER, Some(topic));
        assert_eq!(found.len(), 1, "topic records carry their purpose too");
        assert_eq!(found[0]["msdynmkt_value"], OPTED_IN);
    }
    // Resolving the purposes and topics (two reads), the address's records
    // (one read), then the four creates.
    let requests = fixture.sim.dataverse_requests();
    let (reads, writes): (Vec<_>, Vec<_>) = requests.iter().partition(|r| r.method == "GET");
    assert_eq!((reads.len(), writes.len()), (3, 4), "{requests:#?}");

    // The same delivery again: one read, nothing written.
    fixture.sim.clear_requests();
    let (_, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;
    assert_eq!(body["outcome"], "skipped", "{body}");
    assert_eq!(fixture.sim.dataverse_requests().len(), 1);
    assert_eq!(fixture.sim.writes(), vec![]);

    // A withdrawal: the existing record changes in place.
    let id = newsletter[0]["msdynmkt_contactpointconsent4id"].clone();
    let (_, body) = fixture
        .deliver(&post(&event_for(json!({
            "purposes": [{"id": "newsletter", "enabled": false}], "channels": []
        }))))
        .await;
    assert_eq!(
        body["consent_records"],
        json!({"created": 0, "updated": 1}),
        "{body}"
    );
    let newsletter = record_of(&fixture.sim, PURPOSE, PURPOSE_NEWSLETTER, None);
    assert_eq!(newsletter.len(), 1);
    assert_eq!(newsletter[0]["msdynmkt_contactpointconsent4id"], id);
    assert_eq!(newsletter[0]["msdynmkt_value"], OPTED_OUT);
    assert_eq!(records(&fixture.sim).len(), 4);
}

#[tokio::test]
async fn given_duplicate_records_even_inactive_ones_then_every_one_is_updated() {
    let fixture = Fixture::new(records_only).await;
    let person = fixture.sim.state().identity.person_user_id.clone();
    for statecode in [0, 1] {
        fixture
            .sim
            .write_row_as(
                &person,
                "POST",
                CONSENT_SET,
                json!({
                    "msdynmkt_contactpointvalue": JANE_ADDRESS,
                    "msdynmkt_contactpointtype": EMAIL,
                    "msdynmkt_contactpointconsenttype": TOPIC,
                    "msdynmkt_value": OPTED_IN,
                    "statecode": statecode,
                    "statuscode": statecode + 1,
                    "msdynmkt_purposeId@odata.bind": format!("/msdynmkt_purposes({PURPOSE_NEWSLETTER})"),
                    "msdynmkt_topicId@odata.bind": format!("/msdynmkt_topics({TOPIC_SPORTS})"),
                }),
            )
            .unwrap();
    }

    let (_, body) = fixture
        .deliver(&post(&event_for(json!({
            "purposes": [{"id": "newsletter", "values": {"topics": {"value": "news"}}}],
            "channels": []
        }))))
        .await;

    assert_eq!(
        body["consent_records"],
        json!({"created": 1, "updated": 2}),
        "{body}"
    );
    let sports = record_of(&fixture.sim, TOPIC, PURPOSE_NEWSLETTER, Some(TOPIC_SPORTS));
    assert_eq!(sports.len(), 2);
    assert!(
        sports.iter().all(|r| r["msdynmkt_value"] == OPTED_OUT),
        "{sports:#?}"
    );
    let news = record_of(&fixture.sim, TOPIC, PURPOSE_NEWSLETTER, Some(TOPIC_NEWS));
    assert_eq!(news[0]["msdynmkt_value"], OPTED_IN);
    // The event says nothing of the purposes' own choice: no purpose record.
    assert!(record_of(&fixture.sim, PURPOSE, PURPOSE_NEWSLETTER, None).is_empty());
}

#[tokio::test]
async fn given_the_address_in_a_contact_column_then_records_follow_the_matched_contacts_and_beside_columns(
) {
    let fixture = Fixture::new(|config| {
        let mut section = section();
        section["contact_point"] = json!("emailaddress2");
        config["contact_point_consent"] = section;
    })
    .await;
    fixture.sim.set_contact_columns(
        consent_sync_tests::JANE,
        json!({"emailaddress2": "jane@work.example.com"}),
    );

    let (_, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(body["outcome"], "updated", "{body}");
    assert_eq!(body["contacts"], 1, "the contact columns are written too");
    assert_eq!(body["consent_records"]["created"], 4, "{body}");
    assert!(records(&fixture.sim)
        .iter()
        .all(|r| r["msdynmkt_contactpointvalue"] == "jane@work.example.com"));
}

#[tokio::test]
async fn given_a_purpose_the_environment_lacks_then_the_delivery_fails_naming_it_and_writes_nothing(
) {
    let fixture = Fixture::new(|config| {
        records_only(config);
        config["contact_point_consent"]["purposes"][1]["consent_purpose"] = json!("Loyalty");
    })
    .await;

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 500, "a configuration problem: {body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("purposes[1].consent_purpose") && error.contains("Loyalty"),
        "{error}"
    );
    assert_eq!(fixture.sim.writes(), vec![]);
}

/// Both functions against one simulator, `dynamics-to-didomi` behind a local
/// gateway with its webhook registered as `consent-sync webhook register` does.
struct Both {
    sim: Simulator,
    didomi_to_dynamics: DidomiToDynamics,
    _gateway: consent_sync_sim::gateway::Gateway,
    url: String,
}

impl Both {
    async fn start() -> Both {
        let sim = Simulator::start(Identity::default(), sample_contacts())
            .await
            .unwrap();
        let mut config = sim.config();
        records_only(&mut config);
        let source = || ConfigSource::Inline(config.to_string());
        let didomi_to_dynamics = DidomiToDynamics::new(source(), Duration::from_secs(300));
        let reverse = Arc::new(DynamicsToDidomi::new(source(), Duration::from_secs(300)));
        let gateway = consent_sync_sim::gateway::Gateway::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            consent_sync_cli::local::gateway_handler(reverse),
            None,
        )
        .await
        .unwrap();
        let url = format!("{}/dynamics", gateway.url);
        let parsed = Config::from_json(&config.to_string()).unwrap();
        let report = consent_sync_cli::webhook::register(&parsed, "consent-sync", &url)
            .await
            .unwrap();
        assert_eq!(
            report.json["tables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["entity"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["msdynmkt_contactpointconsent4"],
            "no contact steps without contact columns towards Didomi"
        );
        Both {
            sim,
            didomi_to_dynamics,
            _gateway: gateway,
            url,
        }
    }

    /// consent-sync writes Jane's four records from the sample delivery, and
    /// the webhooks they fire are answered.
    async fn write_sample_records(&self) -> Value {
        let response = self
            .didomi_to_dynamics
            .handle(
                &post(&sample("didomi-user-updated.json")),
                Deadline::after(Duration::from_secs(10)),
            )
            .await
            .unwrap();
        self.sim.settle().await;
        answer(&response).1
    }

    fn answers(&self) -> Vec<(String, Value)> {
        self.sim
            .deliveries_to(&self.url)
            .into_iter()
            .map(|d| match d.result {
                Ok((status, body)) => (
                    status.to_string(),
                    serde_json::from_str(&body).unwrap_or(Value::Null),
                ),
                Err(e) => (e, Value::Null),
            })
            .collect()
    }
}

#[tokio::test]
async fn given_a_persons_opt_out_and_a_one_click_unsubscribe_then_each_makes_one_didomi_event_and_own_writes_none(
) {
    let both = Both::start().await;
    // consent-sync writes the four records: their webhooks are its own echo.
    assert_eq!(
        both.write_sample_records().await["consent_records"]["created"],
        4
    );
    let answers = both.answers();
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert!(answers
        .iter()
        .all(|(status, body)| status == "200" && body["outcome"] == "skipped"));
    assert_eq!(both.sim.didomi_events(), Vec::<Value>::new());

    // A person opts out of the newsletter in Dynamics.
    let newsletter = record_of(&both.sim, PURPOSE, PURPOSE_NEWSLETTER, None);
    let id = newsletter[0]["msdynmkt_contactpointconsent4id"]
        .as_str()
        .unwrap();
    let person = both.sim.state().identity.person_user_id.clone();
    both.sim
        .write_row_as(
            &person,
            "PATCH",
            &format!("{CONSENT_SET}({id})"),
            json!({"msdynmkt_value": OPTED_OUT, "msdynmkt_source": 534_120_004}),
        )
        .unwrap();
    both.sim.settle().await;
    let events = both.sim.didomi_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["user"]["organization_user_id"], JANE_ADDRESS);
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "newsletter", "enabled": false}])
    );
    assert_eq!(events[0]["delegate"]["id"], "consent-sync");

    // A one-click unsubscribe from the sports topic, by Journeys' own user.
    let sports = record_of(&both.sim, TOPIC, PURPOSE_NEWSLETTER, Some(TOPIC_SPORTS));
    let id = sports[0]["msdynmkt_contactpointconsent4id"]
        .as_str()
        .unwrap();
    both.sim
        .write_row_as(
            "5f1c0de0-0000-4000-8000-00000000d365",
            "PATCH",
            &format!("{CONSENT_SET}({id})"),
            json!({"msdynmkt_value": OPTED_OUT, "msdynmkt_source": 534_120_007, "msdynmkt_logicalreason": 534_120_003}),
        )
        .unwrap();
    both.sim.settle().await;
    let events = both.sim.didomi_events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        events[1]["consents"]["purposes"],
        json!([{"id": "newsletter", "values": {"topics": {"value": "news"}}}]),
        "the preference's values now Opted In, without `enabled`"
    );
    // Neither event came back to Dynamics as a write.
    both.sim.settle().await;
    assert_eq!(
        record_of(&both.sim, TOPIC, PURPOSE_NEWSLETTER, Some(TOPIC_NEWS))[0]["msdynmkt_value"],
        OPTED_IN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_parked_consent_record_changes_then_replay_applies_the_current_truth_both_ways() {
    let both = Both::start().await;
    both.write_sample_records().await;
    // Didomi holds: newsletter on (sports, news), marketing off.
    both.sim.state().didomi.user_mut(JANE_ADDRESS).consents = json!({
        "purposes": [
            {"id": "newsletter", "enabled": true, "values": {"topics": {"value": "sports,news"}}},
            {"id": "marketing", "enabled": true}
        ]
    })
    .as_object()
    .cloned()
    .unwrap();

    // A person opts out of the newsletter while Didomi is down: the change
    // fails and would be parked.
    both.sim.fail_didomi(
        20,
        consent_sync_sim::Fault::Status {
            status: 503,
            retry_after: None,
        },
    );
    let newsletter = record_of(&both.sim, PURPOSE, PURPOSE_NEWSLETTER, None);
    let newsletter_id = newsletter[0]["msdynmkt_contactpointconsent4id"]
        .as_str()
        .unwrap()
        .to_string();
    let person = both.sim.state().identity.person_user_id.clone();
    both.sim
        .write_row_as(
            &person,
            "PATCH",
            &format!("{CONSENT_SET}({newsletter_id})"),
            json!({"msdynmkt_value": OPTED_OUT}),
        )
        .unwrap();
    both.sim.settle().await;
    both.sim.state().didomi.faults.clear();
    assert_eq!(both.sim.didomi_events(), Vec::<Value>::new());

    let moto = consent_sync_tests::moto::Moto::start().await;
    let queue = moto.create_queue("consent-sync-parked").await;
    for record in [
        json!({"direction": "dynamics-to-didomi", "consent_record_id": newsletter_id,
               "error_class": "didomi_unavailable", "parked_at": "2026-11-27T08:00:00Z"}),
        json!({"direction": "didomi-to-dynamics", "organization_user_id": JANE_ADDRESS,
               "error_class": "dataverse_unavailable", "parked_at": "2026-11-27T08:00:01Z"}),
    ] {
        moto.sqs_client()
            .send_message()
            .queue_url(&queue)
            .message_body(record.to_string())
            .send()
            .await
            .unwrap();
    }
    let mut config = both.sim.config();
    records_only(&mut config);
    let url = moto.url.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        consent_sync_tests::moto::consent_sync_with_aws(
            &url,
            &config,
            &["replay", "--queue", &queue],
        )
    })
    .await
    .unwrap();

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 parked deliveries replayed, 0 failed"),
        "{stdout}"
    );
    let events = both.sim.didomi_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "newsletter", "enabled": false}])
    );
    // Didomi's marketing choice, now on, reached its record.
    assert_eq!(
        record_of(&both.sim, PURPOSE, PURPOSE_MARKETING, None)[0]["msdynmkt_value"],
        OPTED_IN
    );
}

fn set_didomi_user(sim: &Simulator, id: &str, consents: Value) {
    sim.state().didomi.user_mut(id).consents = consents.as_object().cloned().unwrap();
}

fn reconcile_options(
    from: consent_sync_cli::reconcile::Truth,
    apply: bool,
) -> consent_sync_cli::reconcile::Options {
    consent_sync_cli::reconcile::Options::new(from, apply)
}

#[tokio::test]
async fn reconcile_brings_the_records_of_every_address_in_line_both_ways() {
    use consent_sync_cli::reconcile::{run, Truth};
    let sim = Simulator::start(Identity::default(), sample_contacts())
        .await
        .unwrap();
    let mut config = sim.config();
    records_only(&mut config);
    let config = Config::from_json(&config.to_string()).unwrap();
    // Jane: newsletter on with sports; marketing off. Ada: marketing on, no contact needed.
    set_didomi_user(
        &sim,
        JANE_ADDRESS,
        json!({"purposes": [
            {"id": "newsletter", "enabled": true, "values": {"topics": {"value": "sports"}}},
            {"id": "marketing", "enabled": false}
        ]}),
    );
    set_didomi_user(
        &sim,
        "ada.nocontact@example.com",
        json!({"purposes": [{"id": "marketing", "enabled": true}]}),
    );
    // Jane already has two Newsletter records, both out of date.
    let person = sim.state().identity.person_user_id.clone();
    for _ in 0..2 {
        sim.write_row_as(
            &person,
            "POST",
            CONSENT_SET,
            json!({
                "msdynmkt_contactpointvalue": "Jane.Doe@example.com",
                "msdynmkt_contactpointtype": EMAIL,
                "msdynmkt_contactpointconsenttype": PURPOSE,
                "msdynmkt_value": OPTED_OUT,
                "msdynmkt_purposeId@odata.bind": format!("/msdynmkt_purposes({PURPOSE_NEWSLETTER})"),
            }),
        )
        .unwrap();
    }

    let report = run(&config, reconcile_options(Truth::Didomi, false))
        .await
        .unwrap();
    // Jane: 2 Newsletter updates, Marketing, Sports (in) and News (out)
    // created; Ada: Marketing created.
    assert_eq!(
        report.json["consent_records_differing"], 6,
        "{}",
        report.text
    );
    assert_eq!(sim.writes(), vec![], "a report writes nothing");

    sim.clear_requests();
    let report = run(&config, reconcile_options(Truth::Didomi, true))
        .await
        .unwrap();
    assert!(report.ok, "{}", report.text);
    assert_eq!(report.json["consent_records_written"], 6, "{}", report.text);
    let writes = sim.writes();
    let paths: Vec<&str> = writes.iter().map(|w| w.path_and_query.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/data/v9.2/msdynmkt_contactpointconsent4s/Microsoft.Dynamics.CRM.UpdateMultiple",
            "/api/data/v9.2/msdynmkt_contactpointconsent4s/Microsoft.Dynamics.CRM.CreateMultiple"
        ],
        "in bulk"
    );
    assert!(record_of(&sim, PURPOSE, PURPOSE_NEWSLETTER, None)
        .iter()
        .all(|r| r["msdynmkt_value"] == OPTED_IN));
    assert_eq!(
        record_of(&sim, TOPIC, PURPOSE_NEWSLETTER, Some(TOPIC_NEWS))[0]["msdynmkt_value"],
        OPTED_OUT
    );
    let ada: Vec<_> = records(&sim)
        .into_iter()
        .filter(|r| r["msdynmkt_contactpointvalue"] == "ada.nocontact@example.com")
        .collect();
    assert_eq!(ada.len(), 1);
    assert_eq!(ada[0]["_msdynmkt_purposeid_value"], PURPOSE_MARKETING);
    let again = run(&config, reconcile_options(Truth::Didomi, false))
        .await
        .unwrap();
    assert_eq!(again.json["consent_records_differing"], 0, "{}", again.text);

    // From Dynamics: a person drops the sports topic; Didomi does not know yet.
    let sports = record_of(&sim, TOPIC, PURPOSE_NEWSLETTER, Some(TOPIC_SPORTS));
    let id = sports[0]["msdynmkt_contactpointconsent4id"]
        .as_str()
        .unwrap();
    sim.write_row_as(
        &person,
        "PATCH",
        &format!("{CONSENT_SET}({id})"),
        json!({"msdynmkt_value": OPTED_OUT}),
    )
    .unwrap();
    let report = run(&config, reconcile_options(Truth::Dynamics, true))
        .await
        .unwrap();
    assert!(report.ok, "{}", report.text);
    assert_eq!(
        report.json["consent_records_differing"], 1,
        "{}",
        report.text
    );
    let events = sim.didomi_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["user"]["organization_user_id"], JANE_ADDRESS);
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "newsletter", "values": {"topics": {"value": ""}}}])
    );
}

#[tokio::test]
async fn the_simulated_consent_table_refuses_what_dataverse_refuses() {
    let sim = Simulator::start(Identity::default(), sample_contacts())
        .await
        .unwrap();
    let person = sim.state().identity.person_user_id.clone();
    let record = |extra: Value| {
        let mut body = json!({
            "msdynmkt_contactpointvalue": JANE_ADDRESS,
            "msdynmkt_contactpointtype": EMAIL,
            "msdynmkt_contactpointconsenttype": PURPOSE,
            "msdynmkt_value": OPTED_IN,
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let bind = format!("/msdynmkt_purposes({PURPOSE_NEWSLETTER})");
    // A choice value out of range, a lower-case navigation property, an
    // unknown column: each refused, nothing written.
    for refused in [
        json!({"msdynmkt_value": 534_120_009, "msdynmkt_purposeId@odata.bind": bind}),
        json!({"msdynmkt_purposeid@odata.bind": bind}),
        json!({"msdynmkt_purposeId@odata.bind": bind, "emailaddress1": JANE_ADDRESS}),
    ] {
        let answer = sim.write_row_as(&person, "POST", CONSENT_SET, record(refused.clone()));
        assert!(answer.is_err(), "{refused} was accepted");
    }
    assert!(records(&sim).is_empty());
    sim.write_row_as(
        &person,
        "POST",
        CONSENT_SET,
        record(json!({"msdynmkt_purposeId@odata.bind": bind})),
    )
    .unwrap();
    assert_eq!(
        records(&sim)[0]["_msdynmkt_purposeid_value"],
        PURPOSE_NEWSLETTER
    );
}

#[tokio::test]
async fn webhook_status_and_unregister_cover_the_consent_table_steps() {
    let both = Both::start().await;
    let mut config = both.sim.config();
    records_only(&mut config);
    let config = Config::from_json(&config.to_string()).unwrap();

    let status = consent_sync_cli::webhook::status(&config, "consent-sync")
        .await
        .unwrap();
    assert!(status.ok, "{}", status.text);
    let steps = both.sim.rows("sdkmessageprocessingsteps");
    let ours: Vec<_> = steps
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("consent-sync:"))
        .collect();
    assert_eq!(ours.len(), 2, "Create and Update on the consent table");
    assert!(ours
        .iter()
        .all(|s| s["filteringattributes"] == "msdynmkt_value"));
    let images = both.sim.rows("sdkmessageprocessingstepimages");
    assert!(images.iter().any(|i| i["attributes"]
        == "msdynmkt_contactpointconsenttype,msdynmkt_contactpointtype,msdynmkt_contactpointvalue,msdynmkt_purposeid,msdynmkt_topicid,msdynmkt_value"));

    consent_sync_cli::webhook::unregister(&config, "consent-sync")
        .await
        .unwrap();
    let left = both.sim.rows("sdkmessageprocessingsteps");
    assert!(
        left.iter()
            .all(|s| !s["name"].as_str().unwrap().starts_with("consent-sync:")),
        "{left:#?}"
    );
    assert_eq!(left.len(), 1, "the foreign registration is left alone");
}

#[tokio::test]
async fn given_the_sample_one_click_unsubscribe_then_the_topic_leaves_the_preference_in_didomi() {
    let both = Both::start().await;
    both.write_sample_records().await;
    // The sample's record id stands for Jane's sports topic record here.
    let sports = record_of(&both.sim, TOPIC, PURPOSE_NEWSLETTER, Some(TOPIC_SPORTS));
    let id = sports[0]["msdynmkt_contactpointconsent4id"]
        .as_str()
        .unwrap();
    let body = sample("dynamics-consent-record-unsubscribed.json")
        .replace("4c0ffee0-1d2e-4f3a-8b4c-5d6e7f8a9b0c", id);
    let reverse = DynamicsToDidomi::new(
        ConfigSource::Inline({
            let mut config = both.sim.config();
            records_only(&mut config);
            config.to_string()
        }),
        Duration::from_secs(300),
    );

    let response = reverse
        .handle(
            &consent_sync_tests::dataverse_post(&body, Some(consent_sync_tests::WEBHOOK_KEY), &[]),
            Deadline::after(Duration::from_secs(10)),
        )
        .await
        .unwrap();

    let (status, answer) = answer(&response);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "sent", "{answer}");
    let events = both.sim.didomi_events();
    assert_eq!(events.len(), 1);
    // Sports leaves (the event's value); news stays Opted In in Dynamics.
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "newsletter", "values": {"topics": {"value": "news"}}}])
    );
}
