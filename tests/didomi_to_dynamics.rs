//! `didomi-to-dynamics` against the Entra ID and Dataverse simulators, over
//! HTTP, through the same code paths as in Lambda.

use std::sync::Arc;
use std::time::{Duration, Instant};

use consent_sync_sim::Fault;
use consent_sync_tests::*;
use serde_json::{json, Value};

fn no_writes(fixture: &Fixture) {
    assert_eq!(fixture.sim.writes(), vec![], "nothing may be written");
}

#[tokio::test]
async fn given_a_known_contact_when_a_user_update_arrives_then_exactly_the_differing_columns_change(
) {
    let fixture = Fixture::new(|_| {}).await;
    let before = fixture.contact(JANE);

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"outcome": "updated", "contacts": 1,
               "columns": ["donotbulkemail", "new_profiling", "new_sports", "new_topics"]})
    );
    let writes = fixture.sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "PATCH");
    assert_eq!(
        writes[0].path_and_query,
        format!("/api/data/v9.2/contacts({JANE})")
    );
    assert_eq!(
        writes[0].headers.get("if-match").map(String::as_str),
        Some("*")
    );
    // donotemail already says "email allowed"; donotphone flows to Didomi only.
    assert_eq!(
        writes[0].body,
        Some(
            json!({"donotbulkemail": true, "new_topics": "sports,news", "new_sports": true, "new_profiling": 100000001})
        )
    );
    let after = fixture.contact(JANE);
    for (column, value) in &before {
        if ![
            "donotbulkemail",
            "new_topics",
            "new_sports",
            "new_profiling",
            "versionnumber",
        ]
        .contains(&column.as_str())
        {
            assert_eq!(after.get(column), Some(value), "{column} must not change");
        }
    }
    assert_eq!(after["donotbulkemail"], json!(true));
    assert_eq!(after["donotphone"], json!(false));
}

#[tokio::test]
async fn given_an_up_to_date_contact_when_the_same_status_arrives_again_then_nothing_is_written() {
    let fixture = Fixture::new(|_| {}).await;
    fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;
    fixture.sim.clear_requests();

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(
        (status, body),
        (
            200,
            json!({"outcome": "skipped", "reason": "the contact is already up to date"})
        )
    );
    no_writes(&fixture);
}

#[tokio::test]
async fn given_no_matching_contact_when_upsert_mode_is_off_then_nothing_is_created() {
    let fixture = Fixture::new(|_| {}).await;

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-created.json")))
        .await;

    assert_eq!(
        (status, body),
        (
            200,
            json!({"outcome": "skipped", "reason": "no contact matches and upsert_mode is off"})
        )
    );
    no_writes(&fixture);
    assert!(fixture
        .sim
        .contacts_where("emailaddress1", "new.customer@example.com")
        .is_empty());
}

#[tokio::test]
async fn given_no_matching_contact_when_upsert_mode_is_on_then_one_is_created_with_key_and_mapped_columns(
) {
    let fixture = Fixture::new(|config| config["upsert_mode"] = json!(true)).await;

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-created.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "created");
    let created = fixture
        .sim
        .contacts_where("emailaddress1", "new.customer@example.com");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["contactid"], body["contact_id"]);
    let writes = fixture.sim.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "POST");
    assert_eq!(
        writes[0].body,
        Some(
            json!({"emailaddress1": "new.customer@example.com", "donotbulkemail": false, "donotemail": false,
                    "new_topics": "news", "new_sports": false})
        )
    );

    // A redelivery finds the created contact instead of creating another.
    fixture
        .deliver(&post(&sample("didomi-user-created.json")))
        .await;
    assert_eq!(
        fixture
            .sim
            .contacts_where("emailaddress1", "new.customer@example.com")
            .len(),
        1
    );
}

#[tokio::test]
async fn identifiers_with_quotes_and_url_syntax_match_their_contact() {
    let fixture = Fixture::new(|_| {}).await;
    let user = "o'brien+news&co@example.com";

    let (status, body) = fixture
        .deliver(&post(&sample_for("didomi-user-updated.json", user)))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "updated");
    assert_eq!(fixture.contact(OBRIEN)["donotbulkemail"], json!(true));
    let query = &fixture.sim.dataverse_requests()[0].path_and_query;
    assert!(
        query.contains("%27o%27%27brien%2Bnews%26co%40example.com%27"),
        "{query}"
    );
}

#[tokio::test]
async fn the_key_matches_case_insensitively_and_every_matching_contact_is_updated() {
    let fixture = Fixture::new(|_| {}).await;
    let twin = json!({"contactid": "11111111-2222-4333-8444-555555555555", "emailaddress1": "JANE.DOE@example.com"});
    {
        let mut state = fixture.sim.state();
        let columns = state.columns.clone();
        state
            .contacts
            .push(consent_sync_sim::contacts::with_defaults(
                &columns,
                twin.as_object().unwrap().clone(),
            ));
    }

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["contacts"], 2);
    assert_eq!(
        fixture
            .sim
            .contact_by_id("11111111-2222-4333-8444-555555555555")
            .unwrap()["new_sports"],
        json!(true)
    );
}

#[tokio::test]
async fn an_event_updates_only_the_columns_of_what_it_names() {
    let fixture = Fixture::new(|_| {}).await;

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-event-created.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fixture.sim.writes()[0].body,
        Some(json!({"donotbulkemail": true}))
    );
    let (_, body) = fixture
        .deliver(&post(&sample("didomi-event-updated.json")))
        .await;
    assert_eq!(body["columns"], json!(["new_sports", "new_topics"]));
    assert_eq!(fixture.contact(JANE)["new_profiling"], Value::Null);
}

#[tokio::test]
async fn deliveries_that_must_not_apply_are_acknowledged_as_skipped_and_change_nothing() {
    let fixture = Fixture::new(|_| {}).await;
    let event = |patch: Value| {
        let mut body: Value = serde_json::from_str(&sample("didomi-event-created.json")).unwrap();
        for (key, value) in patch.as_object().unwrap() {
            body["parameters"]["entity"][key] = value.clone();
        }
        body.to_string()
    };
    let cases = [
        (
            sample("didomi-user-deleted.json"),
            "user.deleted: deletions are not synced",
        ),
        (
            event(json!({"status": "pending_approval"})),
            "the event is not confirmed (status \"pending_approval\")",
        ),
        (
            event(json!({"regulation": "cpra"})),
            "regulation \"cpra\" is not the configured \"gdpr\"",
        ),
        (
            event(json!({"delegate": {"id": "consent-sync", "name": "Microsoft Dynamics 365"}})),
            "written by consent-sync from Dynamics; not synced back",
        ),
        (
            event(json!({"user": {"id": "x"}})),
            "the delivery has no organization_user_id",
        ),
        (
            event(json!({"consents": {"purposes": [{"id": "unmapped", "enabled": true}]}})),
            "no mapped purpose or channel has a choice in this delivery",
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = fixture.deliver(&post(&body)).await;
        assert_eq!(
            (status, answer),
            (200, json!({"outcome": "skipped", "reason": reason}))
        );
    }
    no_writes(&fixture);
}

#[tokio::test]
async fn bad_requests_get_their_answer_and_touch_nothing() {
    let fixture = Fixture::new(|_| {}).await;
    let valid = sample("didomi-user-updated.json");
    let cases = [
        (http_event("GET", "", "203.0.113.10", None), 405),
        (post("{\"type\": \"user.updated\""), 400),
        (post("[]"), 400),
        (
            post("{\"type\": \"user.updated\", \"parameters\": {}}"),
            400,
        ),
        (
            post(&format!("{{\"pad\": \"{}\"}}", " ".repeat(1024 * 1024))),
            413,
        ),
    ];
    for (request, expected) in cases {
        let (status, body) = fixture.deliver(&request).await;
        assert_eq!(status, expected, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    assert_eq!(fixture.sim.dataverse_requests(), vec![]);
    assert_eq!(fixture.sim.token_requests(), 0);
    // The valid body still goes through afterwards.
    assert_eq!(fixture.deliver(&post(&valid)).await.0, 200);
}

#[tokio::test]
async fn webhook_authentication_checks_jwt_claims_and_source_addresses() {
    let fixture = Fixture::new(|config| {
        config["didomi_webhook"] =
            json!({"auth": "jwt", "client_ids": ["didomi-webhooks"], "allowed_source_ips": ["203.0.113.10"]});
    })
    .await;
    let body = sample("didomi-user-updated.json");
    let claims = |id: &str| Some(json!({"client_id": id, "iss": "https://auth.example.com"}));

    let cases = [
        (http_event("POST", &body, "203.0.113.10", None), 401),
        (
            http_event("POST", &body, "203.0.113.10", claims("someone-else")),
            403,
        ),
        (
            http_event("POST", &body, "198.51.100.99", claims("didomi-webhooks")),
            403,
        ),
    ];
    for (request, expected) in cases {
        let (status, answer) = fixture.deliver(&request).await;
        assert_eq!(status, expected, "{answer}");
    }
    assert_eq!(fixture.sim.dataverse_requests(), vec![]);

    let (status, _) = fixture
        .deliver(&http_event(
            "POST",
            &body,
            "203.0.113.10",
            claims("didomi-webhooks"),
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_base64_body_is_decoded() {
    use base64::Engine;
    let fixture = Fixture::new(|_| {}).await;
    let mut request = post("");
    request.body =
        Some(base64::engine::general_purpose::STANDARD.encode(sample("didomi-user-updated.json")));
    request.is_base64_encoded = true;

    let (status, body) = fixture.deliver(&request).await;

    assert_eq!((status, body["outcome"].clone()), (200, json!("updated")));
}

#[tokio::test]
async fn given_a_dataverse_outage_then_the_delivery_fails_with_5xx_and_the_next_one_works() {
    let fixture = Fixture::new(|_| {}).await;
    fixture.sim.fail_dataverse(
        100,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    );

    let started = Instant::now();
    let (status, body) = fixture
        .deliver_within(
            &post(&sample("didomi-user-updated.json")),
            Duration::from_secs(3),
        )
        .await;

    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("HTTP 503"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered within the budget: {:?}",
        started.elapsed()
    );
    assert!(fixture.sim.dataverse_requests().len() > 1, "it retried");
    assert_eq!(
        fixture.contact(JANE)["donotbulkemail"],
        json!(false),
        "nothing applied"
    );

    fixture.sim.state().dataverse_faults.clear();
    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;
    assert_eq!((status, body["outcome"].clone()), (200, json!("updated")));
}

#[tokio::test]
async fn throttling_is_waited_out_as_retry_after_says() {
    let fixture = Fixture::new(|_| {}).await;
    fixture.sim.fail_dataverse(
        1,
        Fault::Status {
            status: 429,
            retry_after: Some(1),
        },
    );

    let started = Instant::now();
    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(fixture.contact(JANE)["donotbulkemail"], json!(true));
}

#[tokio::test]
async fn a_slow_dataverse_is_cut_off_at_the_deadline() {
    let fixture = Fixture::new(|_| {}).await;
    fixture
        .sim
        .fail_dataverse(10, Fault::Delay(Duration::from_secs(5)));

    let started = Instant::now();
    let (status, body) = fixture
        .deliver_within(
            &post(&sample("didomi-user-updated.json")),
            Duration::from_millis(1500),
        )
        .await;

    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_token_is_renewed_once() {
    let fixture = Fixture::new(|_| {}).await;
    fixture
        .deliver(&post(&sample("didomi-event-created.json")))
        .await;
    fixture.sim.revoke_tokens();

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(fixture.sim.token_requests(), 2);
}

#[tokio::test]
async fn a_creation_is_not_repeated_after_an_unclear_outcome() {
    let fixture = Fixture::new(|config| config["upsert_mode"] = json!(true)).await;
    // The lookup succeeds; the create times out at the gateway.
    fixture
        .deliver(&post(&sample("didomi-event-created.json")))
        .await;
    fixture.sim.fail_dataverse(1, Fault::Delay(Duration::ZERO));
    // The alternate-key lookup that precedes a warm function's first create.
    fixture.sim.fail_dataverse(1, Fault::Delay(Duration::ZERO));
    fixture.sim.fail_dataverse(
        1,
        Fault::Status {
            status: 504,
            retry_after: None,
        },
    );
    fixture.sim.clear_requests();

    let (status, _) = fixture
        .deliver(&post(&sample("didomi-user-created.json")))
        .await;

    assert_eq!(status, 503);
    let posts = fixture
        .sim
        .writes()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "a 504 on create is not retried");
}

#[tokio::test]
async fn wrong_client_credentials_fail_with_the_entra_reason_and_touch_nothing() {
    let fixture = Fixture::new(|config| config["client_secret"] = json!("wrong-secret")).await;

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("invalid_client") && error.contains("AADSTS7000215"),
        "{error}"
    );
    assert!(!error.contains("wrong-secret"));
    assert_eq!(fixture.sim.dataverse_requests(), vec![]);
}

#[tokio::test]
async fn a_mapped_column_the_environment_lacks_is_reported_without_the_identifier() {
    let fixture = Fixture::new(|config| {
        config["mappings"] = json!([{"column": "new_missing", "purpose": "marketing"}]);
    })
    .await;

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("new_missing") && error.contains("0x80060888"),
        "{error}"
    );
    assert!(!error.contains("jane.doe"), "{error}");
}

#[tokio::test]
async fn twenty_warm_deliveries_use_one_token() {
    let fixture = Fixture::new(|_| {}).await;
    for _ in 0..20 {
        assert_eq!(
            fixture
                .deliver(&post(&sample("didomi-user-updated.json")))
                .await
                .0,
            200
        );
    }
    assert_eq!(fixture.sim.token_requests(), 1);
}

#[tokio::test]
async fn over_http_the_local_gateway_delivers_v2_events_and_answers_json() {
    let fixture = Fixture::new(|_| {}).await;
    let function = Arc::new(fixture.function);
    let gateway = serve(function).await;
    let http = reqwest::Client::new();

    let response = http
        .post(format!("{}/webhooks/didomi", gateway.url))
        .header("content-type", "application/json")
        .body(sample("didomi-user-updated.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outcome"], "updated");

    let response = http.get(&gateway.url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(
        fixture.sim.contact_by_id(JANE).unwrap()["new_topics"],
        json!("sports,news")
    );
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires_whatever_form_its_lifetime_takes() {
    let fixture = Fixture::new(|_| {}).await;
    {
        let mut state = fixture.sim.state();
        // The v1 endpoint's string form; renewal comes at half of a short lifetime.
        state.token_lifetime = 2;
        state.token_lifetime_as_text = true;
    }

    fixture
        .deliver(&post(&sample("didomi-event-created.json")))
        .await;
    fixture
        .deliver(&post(&sample("didomi-event-created.json")))
        .await;
    assert_eq!(fixture.sim.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 200);
    assert_eq!(fixture.sim.token_requests(), 2);
}

#[tokio::test]
async fn an_unavailable_token_endpoint_is_retried() {
    let fixture = Fixture::new(|_| {}).await;
    fixture.sim.fail_token_endpoint(
        2,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    );

    let (status, body) = fixture
        .deliver(&post(&sample("didomi-user-updated.json")))
        .await;

    assert_eq!(status, 200, "{body}");
    let attempts = fixture
        .sim
        .state()
        .requests
        .iter()
        .filter(|r| r.path_and_query.ends_with("/token"))
        .count();
    assert_eq!(attempts, 3, "two refused attempts, then a token");
    assert_eq!(fixture.contact(JANE)["donotbulkemail"], json!(true));
}

#[tokio::test]
async fn who_am_i_names_the_application_user() {
    let fixture = Fixture::new(|_| {}).await;
    let config = consent_sync::Config::from_json(&fixture.sim.config().to_string()).unwrap();
    let session = fixture.function.setup.dataverse.session(
        &config,
        consent_sync::Deadline::after(Duration::from_secs(5)),
    );

    let user_id = session.who_am_i().await.unwrap();

    assert_eq!(user_id, fixture.sim.state().identity.application_user_id);
}

/// `events/didomi-event-created.json` for Jane at `created_at`, with the
/// marketing purpose `enabled`.
fn marketing_event(created_at: &str, enabled: bool) -> String {
    let mut delivery: Value = serde_json::from_str(&sample("didomi-event-created.json")).unwrap();
    delivery["parameters"]["entity"]["created_at"] = json!(created_at);
    delivery["parameters"]["entity"]["consents"]["purposes"] =
        json!([{"id": "marketing", "enabled": enabled}]);
    delivery.to_string()
}

#[tokio::test]
async fn given_the_stale_event_guard_when_events_arrive_newest_first_then_the_newest_choice_stays()
{
    let fixture = Fixture::new(|config| {
        config["sync_timestamp_column"] = json!("new_consentsyncedon");
    })
    .await;

    // Newest: marketing accepted at 10:05:40.
    let (status, body) = fixture
        .deliver(&post(&marketing_event("2026-11-26T10:05:40.120Z", true)))
        .await;
    assert_eq!(status, 200, "{body}");
    // donotbulkemail already says "allowed": only the time is written.
    assert_eq!(
        body,
        json!({"outcome": "updated", "contacts": 1, "columns": ["new_consentsyncedon"]})
    );
    // Older: marketing refused at 10:05:33, delivered late.
    let (status, body) = fixture
        .deliver(&post(&marketing_event("2026-11-26T10:05:33.540Z", false)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "skipped", "{body}");
    assert!(body["reason"].as_str().unwrap().contains("stale"), "{body}");
    // The same second as what is stored, milliseconds later: not newer either.
    let (_, body) = fixture
        .deliver(&post(&marketing_event("2026-11-26T10:05:40.999Z", false)))
        .await;
    assert_eq!(body["outcome"], "skipped", "{body}");

    let jane = fixture.contact(JANE);
    assert_eq!(
        jane["donotbulkemail"],
        json!(false),
        "the newest choice stays"
    );
    assert_eq!(jane["new_consentsyncedon"], json!("2026-11-26T10:05:40Z"));

    // A newer change applies, and moves the time on.
    let (_, body) = fixture
        .deliver(&post(&marketing_event("2026-11-26T10:06:00.000Z", false)))
        .await;
    assert_eq!(body["outcome"], "updated", "{body}");
    let jane = fixture.contact(JANE);
    assert_eq!(jane["donotbulkemail"], json!(true));
    assert_eq!(jane["new_consentsyncedon"], json!("2026-11-26T10:06:00Z"));
    let writes = fixture.sim.writes();
    assert_eq!(writes.len(), 2, "one write per applied change");
    assert_eq!(
        writes[1].body,
        Some(json!({"donotbulkemail": true, "new_consentsyncedon": "2026-11-26T10:06:00Z"}))
    );
}

#[tokio::test]
async fn given_the_stale_event_guard_when_upsert_creates_a_contact_then_it_carries_the_time() {
    let fixture = Fixture::new(|config| {
        config["sync_timestamp_column"] = json!("new_consentsyncedon");
        config["upsert_mode"] = json!(true);
    })
    .await;
    let delivery = sample_for("didomi-user-updated.json", "new.person@example.com");

    let (status, body) = fixture.deliver(&post(&delivery)).await;

    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("created")),
        "{body}"
    );
    let created = fixture
        .sim
        .contacts_where("emailaddress1", "new.person@example.com");
    assert_eq!(
        created[0]["new_consentsyncedon"],
        json!("2026-11-26T10:05:33Z")
    );
}
