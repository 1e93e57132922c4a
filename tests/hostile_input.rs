//! Hostile and racing input: one contact per person when deliveries race
//! (upsert by alternate key), input no system could accept refused where it
//! enters, callers' values never echoed at length, and truncation read from
//! the body.

use std::time::Duration;

use consent_sync_tests::lambda::{
    invoke_concurrently, Deployment, FunctionProcess, DIDOMI_TO_DYNAMICS, DYNAMICS_TO_DIDOMI,
};
use consent_sync_tests::{
    dataverse_post, post, sample, sample_for, Fixture, ReverseFixture, WEBHOOK_KEY,
};
use serde_json::{json, Value};

fn upsert(config: &mut Value) {
    config["upsert_mode"] = json!(true);
}

/// The contacts whose key is `email` (case-insensitively).
fn contacts_of(sim: &consent_sync_sim::Simulator, email: &str) -> usize {
    sim.contacts_where("emailaddress1", email).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_alternate_key_twenty_racing_deliveries_for_ten_new_people_make_exactly_ten_contacts(
) {
    let deployment = Deployment::start_configured(DIDOMI_TO_DYNAMICS, &[], upsert).await;
    deployment.sim.add_contact_key("emailaddress1");
    let env = [
        ("CONFIG_SECRET_ID", "consent-sync/config"),
        ("AWS_ENDPOINT_URL", deployment.proxy.url.as_str()),
        ("PARKED_QUEUE_URL", deployment.queue_url.as_str()),
    ];
    // Two instances, as Lambda runs concurrent deliveries.
    let second = FunctionProcess::start(&deployment.runtime, &env);
    let people: Vec<String> = (0..10)
        .map(|i| format!("new.person{i}@example.com"))
        .collect();
    // Didomi sends user.created and event.created for a new person at once.
    let mut deliveries = Vec::new();
    for person in &people {
        deliveries
            .push(sample("didomi-user-created.json").replace("new.customer@example.com", person));
        deliveries.push(sample_for("didomi-event-created.json", person));
    }
    // Dataverse's latency, so that two deliveries' reads overlap as they
    // do against a real environment.
    deployment.sim.fail_dataverse(
        1_000,
        consent_sync_sim::Fault::Delay(Duration::from_millis(30)),
    );
    let answers =
        invoke_concurrently(&deployment.runtime, deliveries, Duration::from_secs(20)).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    let created = answers
        .iter()
        .filter(|(_, b)| b.contains("\"created\""))
        .count();
    assert_eq!(created, 10, "{answers:?}");
    for person in &people {
        assert_eq!(contacts_of(&deployment.sim, person), 1, "{person}");
    }
    second.stop();
    deployment.stop();
}

#[tokio::test]
async fn given_the_alternate_key_a_duplicate_key_refusal_turns_into_an_update() {
    // Both create paths: by key, and the plain one for a value key syntax
    // cannot carry (`+`).
    for person in ["racing.person@example.com", "racing+news@example.com"] {
        let fixture = Fixture::new(upsert).await;
        fixture.sim.add_contact_key("emailaddress1");
        // Another delivery creates the person between this one's read and
        // its create.
        fixture.sim.race_next_contact_create();
        let delivery =
            sample("didomi-user-created.json").replace("new.customer@example.com", person);
        let (status, body) = fixture.deliver(&post(&delivery)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "updated", "{person}: {body}");
        assert_eq!(contacts_of(&fixture.sim, person), 1, "{person}");
        let contact = &fixture.sim.contacts_where("emailaddress1", person)[0];
        // The delivery's choices, written over the competitor's bare row.
        assert_eq!(
            contact["new_topics"],
            json!("news"),
            "{person}: {contact:?}"
        );
        let by_key = fixture
            .sim
            .writes()
            .iter()
            .filter(|w| w.method == "PATCH" && w.path_and_query.contains("contacts(emailaddress1="))
            .count();
        assert_eq!(by_key, usize::from(!person.contains('+')), "{person}");
    }
}

#[tokio::test]
async fn without_the_alternate_key_a_new_person_is_created_the_plain_way_once() {
    let fixture = Fixture::new(upsert).await;
    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-created.json")))
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("created")),
        "{body}"
    );
    let writes = fixture.sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path_and_query.as_str()),
        ("POST", "/api/data/v9.2/contacts")
    );
}

#[tokio::test]
async fn an_organization_user_id_no_contact_could_hold_is_a_400_naming_the_field_and_asks_nothing()
{
    let fixture = Fixture::new(|config| config["upsert_mode"] = json!(false)).await;
    for (user, problem) in [
        ("x".repeat(65_000), "65000 characters long"),
        ("a".repeat(4_001), "4001 characters long"),
        // A NUL, as JSON carries it.
        ("jane\\u0000@example.com".to_string(), "control character"),
    ] {
        let (status, body) = fixture
            .deliver(&post(&sample_for("didomi-user-updated.json", &user)))
            .await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("parameters.new_entity.organization_user_id"),
            "{error}"
        );
        assert!(error.contains(problem), "{error}");
        assert!(error.len() < 300, "{error}");
    }
    assert!(fixture.sim.dataverse_requests().is_empty());
    // 4,000 characters is a value a contact can hold: looked up, no match.
    let (status, body) = fixture
        .deliver(&post(&sample_for(
            "didomi-user-updated.json",
            &"a".repeat(4_000),
        )))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fixture.sim.writes(), vec![]);
}

#[tokio::test]
async fn a_primary_entity_id_that_is_not_a_guid_is_a_400_and_dataverse_is_never_asked() {
    let fixture = ReverseFixture::new(|_| {}).await;
    let mut change: Value = serde_json::from_str(&sample("dynamics-contact-updated.json")).unwrap();
    change["PrimaryEntityId"] = json!("x') or (1 eq 1");
    fixture.sim.clear_requests();
    let (status, body) = fixture
        .deliver(&dataverse_post(&change.to_string(), Some(WEBHOOK_KEY), &[]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "`PrimaryEntityId` is not a GUID (14 characters)"
    );
    assert!(fixture.sim.dataverse_requests().is_empty());
    assert!(fixture.sim.didomi_events().is_empty());
}

#[tokio::test]
async fn a_size_exceeded_header_saying_false_leaves_target_as_sent() {
    let fixture = ReverseFixture::new(|_| {}).await;
    // Target changes one column; the contact also holds other mapped values
    // (defaults nobody chose) that must not be sent.
    let change = sample("dynamics-contact-updated.json");
    for header in ["false", "False", "0"] {
        let header: &'static str = Box::leak(header.to_string().into_boxed_str());
        let (status, body) = fixture
            .deliver(&dataverse_post(
                &change,
                Some(WEBHOOK_KEY),
                &[("x-ms-dynamics-msg-size-exceeded", header)],
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["purposes"],
            json!(["marketing", "profiling"]),
            "{header}: {body}"
        );
        assert_eq!(body["channels"], json!([]), "{header}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_values_come_back_cut_and_never_reach_the_log() {
    let planted = "planted.person@example.com";
    let deployment = Deployment::start(&[]).await;
    let mut event: Value = serde_json::from_str(&sample("didomi-event-created.json")).unwrap();
    event["parameters"]["entity"]["status"] = json!(planted);
    let (_, status, body) = deployment.request("POST", &event.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["reason"],
        "the event is not confirmed (status (unknown status, 26 characters))"
    );
    event["parameters"]["entity"]["status"] = json!("confirmed");
    event["parameters"]["entity"]["regulation"] = json!("r".repeat(100_000));
    let (_, status, body) = deployment.request("POST", &event.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().len() < 300, "{body}");
    let mut wrong_type: Value = serde_json::from_str(&sample("didomi-user-updated.json")).unwrap();
    wrong_type["type"] = json!(planted);
    let (_, status, body) = deployment.request("POST", &wrong_type.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains(planted), "{body}");
    let logs = deployment.stop();
    assert!(!logs.contains(planted), "{logs}");
    assert!(!logs.contains("rrrrrrrr"), "{logs}");
    assert!(
        logs.lines().all(|l| l.len() <= 4_000),
        "a log line over 4,000 characters"
    );

    let deployment = Deployment::start_function(DYNAMICS_TO_DIDOMI, &[]).await;
    let mut change: Value = serde_json::from_str(&sample("dynamics-contact-updated.json")).unwrap();
    change["MessageName"] = json!("M".repeat(100_000));
    change["PrimaryEntityName"] = json!(planted);
    let (_, status, body) = deployment
        .invoke(dataverse_post(&change.to_string(), Some(WEBHOOK_KEY), &[]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().len() < 300, "{body}");
    assert!(!body.to_string().contains(planted), "{body}");
    change["PrimaryEntityName"] = json!("contact");
    let (_, status, body) = deployment
        .invoke(dataverse_post(&change.to_string(), Some(WEBHOOK_KEY), &[]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().len() < 300, "{body}");
    let logs = deployment.stop();
    assert!(!logs.contains(planted), "{logs}");
    assert!(!logs.contains("MMMMMMMM"), "{logs}");
    assert!(
        logs.lines().all(|l| l.len() <= 4_000),
        "a log line over 4,000 characters"
    );
}
