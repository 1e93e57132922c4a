//! `dynamics-to-didomi` against the Entra ID, Dataverse and Didomi
//! simulators, over HTTP, through the same code paths as in Lambda.

use consent_sync::function::Function;
use consent_sync_sim::Fault;
use consent_sync_tests::*;
use serde_json::{json, Value};

fn post(body: &str) -> aws_lambda_events::apigw::ApiGatewayV2httpRequest {
    dataverse_post(body, Some(WEBHOOK_KEY), &[])
}

/// A sample context with its initiating user replaced.
fn initiated_by(name: &str, user: &str) -> String {
    let mut context: Value = serde_json::from_str(&sample(name)).unwrap();
    context["InitiatingUserId"] = json!(user);
    context.to_string()
}

/// A contact Update context whose Target holds `target` (plus contactid).
fn update_of(target: Value, image: Option<Value>) -> String {
    let mut context: Value =
        serde_json::from_str(&sample("dynamics-contact-updated.json")).unwrap();
    let mut attributes: Vec<Value> = target
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    attributes.push(json!({"key": "contactid", "value": JANE}));
    context["InputParameters"][0]["value"]["Attributes"] = json!(attributes);
    match image {
        Some(image) => {
            let attributes: Vec<Value> = image
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            context["PostEntityImages"][0]["value"]["Attributes"] = json!(attributes);
        }
        None => context["PostEntityImages"] = json!([]),
    }
    context.to_string()
}

fn nothing_sent(fixture: &ReverseFixture) {
    assert_eq!(
        fixture.sim.didomi_requests(),
        vec![],
        "nothing may reach Didomi"
    );
    assert_eq!(
        fixture.sim.writes(),
        vec![],
        "nothing may be written to Dataverse"
    );
}

#[tokio::test]
async fn given_a_person_changed_two_mapped_columns_when_dataverse_posts_the_update_then_one_consent_event_is_sent(
) {
    let fixture = ReverseFixture::new(|_| {}).await;

    let (status, body) = fixture
        .deliver(&post(&sample("dynamics-contact-updated.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"outcome": "sent", "purposes": ["marketing", "profiling"], "channels": []})
    );
    let events = fixture.sim.didomi_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["user"]["organization_user_id"],
        "jane.doe@example.com"
    );
    assert_eq!(
        events[0]["consents"],
        json!({"purposes": [{"id": "marketing", "enabled": false}, {"id": "profiling", "enabled": false}], "channels": []})
    );
    assert_eq!(
        events[0]["delegate"],
        json!({"id": "consent-sync", "name": "Microsoft Dynamics 365"})
    );
    assert_eq!(events[0]["regulation"], "gdpr");
    let posted = fixture
        .sim
        .didomi_requests()
        .into_iter()
        .find(|r| r.path_and_query.starts_with("/v1/consents/events"))
        .unwrap();
    assert_eq!(
        posted.path_and_query,
        "/v1/consents/events?organization_id=acme"
    );
    // Target and the post image held everything: no read of the contact.
    let reads: Vec<String> = fixture
        .sim
        .dataverse_requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(reads, ["/api/data/v9.2/WhoAmI"]);
    assert_eq!(fixture.sim.writes(), vec![]);
}

#[tokio::test]
async fn given_the_integrations_own_write_when_its_webhook_arrives_then_it_is_skipped_as_an_echo() {
    let fixture = ReverseFixture::new(|_| {}).await;
    let own = fixture.sim.state().identity.application_user_id.clone();

    let (status, body) = fixture
        .deliver(&post(&initiated_by(
            "dynamics-contact-updated.json",
            &own.to_uppercase(),
        )))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "skipped");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("own application user"),
        "{body}"
    );
    nothing_sent(&fixture);
}

#[tokio::test]
async fn given_a_created_contact_when_dataverse_posts_the_create_then_every_mapped_column_is_sent()
{
    let fixture = ReverseFixture::new(|_| {}).await;

    let (status, body) = fixture
        .deliver(&post(&sample("dynamics-contact-created.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    let events = fixture.sim.didomi_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["user"]["organization_user_id"], "ada@example.com");
    // donotphone flows to Didomi only; the text column wins over the value flag.
    assert_eq!(
        events[0]["consents"],
        json!({
            "purposes": [
                {"id": "marketing", "enabled": true},
                {"id": "newsletter", "values": {"topics": {"value": "news"}}}
            ],
            "channels": [{"id": "email", "enabled": true}, {"id": "sms", "enabled": false}]
        })
    );
}

#[tokio::test]
async fn given_a_created_contact_when_its_author_set_no_consent_column_then_defaults_are_not_sent()
{
    let fixture = ReverseFixture::new(|_| {}).await;
    let mut context: Value =
        serde_json::from_str(&sample("dynamics-contact-created.json")).unwrap();
    // Only the name and the address were set; the image shows Dataverse's defaults.
    context["InputParameters"][0]["value"]["Attributes"] = json!([
        {"key": "firstname", "value": "Ada"},
        {"key": "emailaddress1", "value": "ada@example.com"}
    ]);

    let (status, body) = fixture.deliver(&post(&context.to_string())).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "skipped", "{body}");
    assert_eq!(fixture.sim.didomi_events(), Vec::<Value>::new());
}

#[tokio::test]
async fn given_dataverse_dropped_the_target_when_the_size_was_exceeded_then_the_contact_is_read() {
    let fixture = ReverseFixture::new(|_| {}).await;
    fixture
        .sim
        .set_contact_columns(JANE, json!({"donotemail": true}));

    let request = dataverse_post(
        &sample("dynamics-contact-size-exceeded.json"),
        Some(WEBHOOK_KEY),
        &[("x-ms-dynamics-msg-size-exceeded", "true")],
    );
    let (status, body) = fixture.deliver(&request).await;

    assert_eq!(status, 200, "{body}");
    let reads: Vec<String> = fixture
        .sim
        .dataverse_requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads[1].starts_with(&format!("/api/data/v9.2/contacts({JANE})?$select=")));
    let events = fixture.sim.didomi_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["consents"]["channels"],
        json!([{"id": "email", "enabled": false}, {"id": "sms", "enabled": true}])
    );
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([
            {"id": "marketing", "enabled": true},
            {"id": "newsletter", "values": {"topics": {"value": ""}}}
        ])
    );
}

#[tokio::test]
async fn given_a_changed_value_flag_without_its_siblings_when_the_image_lacks_them_then_the_contact_fills_them_in(
) {
    let fixture = ReverseFixture::new(|config| {
        config["mappings"] = json!([
            {"column": "new_sports", "purpose": "newsletter", "preference": "topics", "value": "sports"},
            {"column": "new_news", "purpose": "newsletter", "preference": "topics", "value": "news"}
        ]);
    })
    .await;
    fixture
        .sim
        .set_contact_columns(JANE, json!({"new_news": true}));

    let (status, body) = fixture
        .deliver(&post(&update_of(json!({"new_sports": true}), None)))
        .await;

    assert_eq!(status, 200, "{body}");
    let events = fixture.sim.didomi_events();
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "newsletter", "values": {"topics": {"value": "sports,news"}}}])
    );
}

#[tokio::test]
async fn given_changes_that_cannot_be_sent_when_they_arrive_then_they_are_skipped_with_a_reason() {
    let fixture = ReverseFixture::new(|_| {}).await;

    let unmapped = update_of(json!({"firstname": "Janet"}), None);
    let (status, body) = fixture.deliver(&post(&unmapped)).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("skipped")),
        "{body}"
    );
    assert!(body["reason"]
        .as_str()
        .unwrap()
        .contains("no column mapped"));

    let one_way = update_of(
        json!({"new_profiling": null}),
        Some(json!({"emailaddress1": "jane.doe@example.com"})),
    );
    let (_, body) = fixture.deliver(&post(&one_way)).await;
    assert_eq!(body["outcome"], "skipped", "{body}");

    let no_key = update_of(
        json!({"donotbulkemail": true}),
        Some(json!({"donotbulkemail": true})),
    );
    fixture
        .sim
        .set_contact_columns(JANE, json!({"emailaddress1": null}));
    let (status, body) = fixture.deliver(&post(&no_key)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("no emailaddress1 value"),
        "{body}"
    );

    let mut other_table: Value =
        serde_json::from_str(&sample("dynamics-contact-updated.json")).unwrap();
    other_table["PrimaryEntityName"] = json!("account");
    let (_, body) = fixture.deliver(&post(&other_table.to_string())).await;
    // A table consent-sync does not know is described, not echoed.
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("changes of table (unknown table, 7 characters) are not synced"),
        "{body}"
    );

    assert_eq!(fixture.sim.didomi_events(), Vec::<Value>::new());
    assert_eq!(fixture.sim.writes(), vec![]);
}

#[tokio::test]
async fn given_a_deleted_contact_when_its_context_was_truncated_then_nothing_is_sent() {
    let fixture = ReverseFixture::new(|_| {}).await;
    fixture
        .sim
        .state()
        .contacts
        .retain(|c| c["contactid"] != JANE);
    let request = dataverse_post(
        &sample("dynamics-contact-size-exceeded.json"),
        Some(WEBHOOK_KEY),
        &[("x-ms-dynamics-msg-size-exceeded", "true")],
    );
    let (status, body) = fixture.deliver(&request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reason"], "the contact no longer exists");
    assert_eq!(fixture.sim.didomi_events(), Vec::<Value>::new());
}

#[tokio::test]
async fn given_bad_requests_when_they_arrive_then_each_gets_its_answer_and_nothing_is_sent() {
    let fixture = ReverseFixture::new(|_| {}).await;
    let context = sample("dynamics-contact-updated.json");

    let missing = fixture.deliver(&dataverse_post(&context, None, &[])).await;
    assert_eq!(missing.0, 401, "{}", missing.1);
    let wrong = fixture
        .deliver(&dataverse_post(
            &context,
            Some("local-dynamics-webhook-key-0123456780"),
            &[],
        ))
        .await;
    assert_eq!(wrong.0, 403);
    assert!(!wrong.1.to_string().contains("0123456789"), "{}", wrong.1);
    assert!(!wrong.1.to_string().contains("0123456780"), "{}", wrong.1);
    assert_eq!(fixture.deliver(&post("{not json")).await.0, 400);
    let (status, body) = fixture.deliver(&post(r#"{"MessageName": "Update"}"#)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "`PrimaryEntityName` is missing");
    let mut get = post(&context);
    get.request_context.http.method = http::Method::GET;
    assert_eq!(fixture.deliver(&get).await.0, 405);
    let oversized = format!("{}{}", context.trim_end(), " ".repeat(1024 * 1024));
    assert_eq!(fixture.deliver(&post(&oversized)).await.0, 413);

    nothing_sent(&fixture);
    assert_eq!(fixture.sim.dataverse_requests(), vec![], "not even WhoAmI");
}

#[tokio::test]
async fn given_warm_invocations_when_ten_changes_arrive_then_one_session_one_token_and_one_who_am_i_serve_them(
) {
    let fixture = ReverseFixture::new(|_| {}).await;
    for _ in 0..10 {
        let (status, body) = fixture
            .deliver(&post(&sample("dynamics-contact-updated.json")))
            .await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (200, Some("sent")),
            "{body}"
        );
    }
    assert_eq!(fixture.sim.didomi_events().len(), 10);
    assert_eq!(fixture.sim.didomi_sessions(), 1);
    assert_eq!(fixture.sim.token_requests(), 1);
    let who_am_i = fixture
        .sim
        .dataverse_requests()
        .iter()
        .filter(|r| r.path_and_query.ends_with("/WhoAmI"))
        .count();
    assert_eq!(who_am_i, 1);
}

#[tokio::test]
async fn given_a_didomi_outage_when_retries_run_out_then_the_answer_is_503_and_the_next_change_goes_through(
) {
    let fixture = ReverseFixture::new(|_| {}).await;
    fixture.sim.fail_didomi(
        100,
        Fault::Status {
            status: 503,
            retry_after: Some(0),
        },
    );
    let context = sample("dynamics-contact-updated.json");

    let (status, body) = fixture.deliver(&post(&context)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("HTTP 503"),
        "{body}"
    );
    assert!(!body.to_string().contains("jane.doe"), "{body}");
    assert_eq!(fixture.sim.didomi_events(), Vec::<Value>::new());

    fixture.sim.state().didomi.faults.clear();
    let (status, body) = fixture.deliver(&post(&context)).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("sent")),
        "{body}"
    );
    assert_eq!(fixture.sim.didomi_events().len(), 1);
}

#[tokio::test]
async fn given_didomi_refuses_when_the_event_or_the_key_is_rejected_then_the_answer_is_502() {
    let fixture = ReverseFixture::new(|_| {}).await;
    let context = sample("dynamics-contact-updated.json");
    fixture.sim.fail_didomi(
        1,
        Fault::Status {
            status: 400,
            retry_after: None,
        },
    );
    // The fault hits the session request: a refused API key.
    let (status, body) = fixture.deliver(&post(&context)).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("refused the API key"),
        "{body}"
    );

    let fixture = ReverseFixture::new(|config| {
        config["didomi"]["organization_id"] = json!("someone-else");
    })
    .await;
    let (status, body) = fixture.deliver(&post(&context)).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("HTTP 403"),
        "{body}"
    );
}

#[tokio::test]
async fn given_a_sent_event_when_the_user_is_looked_up_then_didomi_holds_the_new_choice() {
    let fixture = ReverseFixture::new(|_| {}).await;
    assert_eq!(
        fixture
            .deliver(&post(&sample("dynamics-contact-updated.json")))
            .await
            .0,
        200
    );
    let config = consent_sync::Config::from_json(&fixture.sim.config().to_string()).unwrap();

    let user = fixture
        .function
        .setup
        .didomi
        .session(
            &config,
            consent_sync::Deadline::after(std::time::Duration::from_secs(5)),
        )
        .find_user("jane.doe@example.com")
        .await
        .unwrap()
        .expect("Didomi knows the user");

    assert_eq!(
        user.organization_user_id.as_deref(),
        Some("jane.doe@example.com")
    );
    assert_eq!(
        user.consents.purpose("marketing").unwrap().enabled,
        Some(false)
    );
    let nobody = fixture
        .function
        .setup
        .didomi
        .session(
            &config,
            consent_sync::Deadline::after(std::time::Duration::from_secs(5)),
        )
        .find_user("nobody@example.com")
        .await
        .unwrap();
    assert_eq!(nobody, None);
}

#[tokio::test]
async fn given_a_session_that_ended_early_when_didomi_answers_401_then_it_is_renewed_once() {
    let fixture = ReverseFixture::new(|_| {}).await;
    let context = sample("dynamics-contact-updated.json");
    assert_eq!(fixture.deliver(&post(&context)).await.0, 200);
    fixture.sim.state().didomi.tokens.clear();

    let (status, body) = fixture.deliver(&post(&context)).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(fixture.sim.didomi_sessions(), 2);
    assert_eq!(fixture.sim.didomi_events().len(), 2);
}

#[tokio::test]
async fn given_no_webhook_key_in_the_configuration_when_a_change_arrives_then_the_invocation_fails_naming_the_field(
) {
    let fixture = ReverseFixture::new(|config| {
        config
            .as_object_mut()
            .unwrap()
            .remove("dynamics_webhook_key");
    })
    .await;
    let error = fixture
        .function
        .handle(
            &post(&sample("dynamics-contact-updated.json")),
            consent_sync::Deadline::after(std::time::Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("configuration field `dynamics_webhook_key`"),
        "{error}"
    );
    nothing_sent(&fixture);
}
