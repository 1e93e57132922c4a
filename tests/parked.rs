//! Nothing lost with no one at the keyboard: the compiled functions under the
//! Lambda Runtime API park what a downstream outage stops (answered 202),
//! drain their own queue through Lambda's SQS event source once it passes,
//! and `consent-sync replay` empties a queue completely for a person.

use std::time::{Duration, Instant};

use consent_sync_tests::lambda::{
    drain_once, invoke_concurrently, Deployment, FunctionProcess, DYNAMICS_TO_DIDOMI,
};
use consent_sync_tests::moto::consent_sync_with_aws;
use consent_sync_tests::{dataverse_post, sample, sample_for, JANE, OBRIEN, WEBHOOK_KEY};
use serde_json::{json, Value};

fn down(status: u16) -> consent_sync_sim::Fault {
    consent_sync_sim::Fault::Status {
        status,
        retry_after: Some(0),
    }
}

fn consents(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// What the function logged, one JSON document a line.
fn log_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_dataverse_outage_deliveries_are_parked_with_202_and_the_drain_applies_didomis_state_once_it_is_back(
) {
    let deployment = Deployment::start(&[]).await;
    deployment.sim.fail_dataverse(100_000, down(503));
    let users = [
        "jane.doe@example.com",
        "o'brien+news&co@example.com",
        "ada@example.com",
    ];
    for user in users {
        deployment.sim.state().didomi.user_mut(user).consents = consents(json!({
            "purposes": [{"id": "marketing", "enabled": false}]
        }));
    }

    // Given Dataverse down, each delivery is parked and answered 202.
    for user in users {
        let delivery = sample_for("didomi-user-updated.json", user);
        let (_, status, body) = deployment.request("POST", &delivery).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            body,
            json!({"outcome": "parked", "error_class": "dataverse_unavailable"})
        );
    }
    let parked = deployment.moto.peek(&deployment.queue_url).await;
    assert_eq!(parked.len(), 3, "{parked:?}");
    for (record, user) in parked.iter().zip(users) {
        assert_eq!(record["direction"], "didomi-to-dynamics");
        assert_eq!(record["organization_user_id"], user);
        assert_eq!(record["error_class"], "dataverse_unavailable");
        assert_eq!(record["delivery_time"], "2026-11-26T10:05:33.540Z");
        assert!(
            record.get("consents").is_none(),
            "no consent values: {record}"
        );
    }

    // When the queue is drained while Dataverse is still down, every record
    // is handed back, hidden for its delay, and none is lost. Only the first
    // meets the outage: the others are not tried against it.
    deployment.sim.clear_requests();
    let (batch, answer, failed) = deployment.drain_once().await.expect("a batch");
    assert_eq!(batch.records.len(), 3);
    assert_eq!(failed.len(), 3, "{answer}");
    let source = deployment.event_source();
    assert_eq!(source.counts().await.unwrap(), (0, 3), "hidden, not lost");
    let user_reads = deployment
        .sim
        .didomi_requests()
        .iter()
        .filter(|r| r.path_and_query.contains("/consents/users"))
        .count();
    assert_eq!(user_reads, 1, "the batch stops at the first outage");
    assert_eq!(deployment.sim.writes(), vec![]);

    // Then Dataverse recovers; meanwhile Jane accepted marketing again in
    // Didomi, and Ada's user is gone. The next drain (their delay passed)
    // applies Didomi's current state and hands nothing back.
    deployment.sim.state().dataverse_faults.clear();
    {
        let mut state = deployment.sim.state();
        state.didomi.user_mut("jane.doe@example.com").consents = consents(json!({
            "purposes": [{"id": "marketing", "enabled": true}],
            "channels": [{"id": "email", "enabled": true}]
        }));
        state
            .didomi
            .user_mut("o'brien+news&co@example.com")
            .consents = consents(json!({
            "purposes": [{"id": "marketing", "enabled": false}]
        }));
        state
            .didomi
            .users
            .retain(|u| u.organization_user_id != "ada@example.com");
    }
    source.show_again(&batch).await.unwrap();
    let (_, answer, failed) = deployment.drain_once().await.expect("a batch");
    assert_eq!(failed, Vec::<String>::new(), "{answer}");
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(source.counts().await.unwrap(), (0, 0), "drained");
    let contact = |id| deployment.sim.contact_by_id(id).unwrap();
    assert_eq!(contact(JANE)["donotbulkemail"], json!(false));
    assert_eq!(contact(JANE)["donotemail"], json!(false));
    assert_eq!(contact(OBRIEN)["donotbulkemail"], json!(true));

    let logs = deployment.stop();
    let lines = log_lines(&logs);
    let applied = lines
        .iter()
        .filter(|l| l["message"] == "parked record applied")
        .count();
    assert_eq!(applied, 3, "{logs}");
    for user in users {
        assert!(!logs.contains(user), "{user} in the log:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_didomi_down_a_persons_change_for_a_user_didomi_does_not_know_reaches_didomi_once_it_is_back(
) {
    let deployment = Deployment::start_function(DYNAMICS_TO_DIDOMI, &[]).await;
    // A CRM-first contact: Didomi has no user with this address yet.
    let address = "new.person@example.com";
    deployment.sim.set_contact_columns(
        JANE,
        json!({"emailaddress1": address, "donotbulkemail": true, "new_profiling": 100000001}),
    );
    deployment.sim.fail_didomi(100_000, down(503));
    let change = sample("dynamics-contact-updated.json").replace("jane.doe@example.com", address);
    let request = dataverse_post(&change, Some(WEBHOOK_KEY), &[]);
    let (_, status, body) = deployment.invoke(request).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["outcome"], "parked");
    assert_eq!(body["error_class"], "didomi_unavailable");
    let parked = deployment.moto.peek(&deployment.queue_url).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0]["direction"], "dynamics-to-didomi");
    assert_eq!(parked[0]["contact_id"], JANE);
    // The changed columns by name, never their values.
    assert_eq!(
        parked[0]["columns"],
        json!(["donotbulkemail", "new_profiling"])
    );
    assert!(!parked[0].to_string().contains(address));

    // Still down: the record is handed back.
    let source = deployment.event_source();
    let (batch, _, failed) = deployment.drain_once().await.expect("a batch");
    assert_eq!(failed.len(), 1);
    assert_eq!(source.counts().await.unwrap(), (0, 1));

    // Didomi back: one event, with the person's current choice.
    deployment.sim.state().didomi.faults.clear();
    source.show_again(&batch).await.unwrap();
    let (_, answer, failed) = deployment.drain_once().await.expect("a batch");
    assert_eq!(failed, Vec::<String>::new(), "{answer}");
    let events = deployment.sim.didomi_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"]["organization_user_id"], address);
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "marketing", "enabled": false}, {"id": "profiling", "enabled": false}])
    );
    assert_eq!(events[0]["delegate"]["id"], "consent-sync");
    assert_eq!(source.counts().await.unwrap(), (0, 0));

    // Drained again (a redelivery): Didomi now holds the choice; nothing sent.
    deployment
        .moto
        .sqs_client()
        .send_message()
        .queue_url(&deployment.queue_url)
        .message_body(parked[0].to_string())
        .send()
        .await
        .unwrap();
    let (_, _, failed) = deployment.drain_once().await.expect("a batch");
    assert!(failed.is_empty());
    assert_eq!(deployment.sim.didomi_events().len(), 1, "not sent twice");
    deployment.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_read_is_handed_back_for_the_dead_letter_queue_never_deleted() {
    let deployment = Deployment::start(&[]).await;
    let sqs = deployment.moto.sqs_client();
    let sideways = json!({"direction": "sideways", "error_class": "dataverse_unavailable",
                          "parked_at": "2026-11-30T08:00:00Z"})
    .to_string();
    for body in ["not json at all", sideways.as_str()] {
        sqs.send_message()
            .queue_url(&deployment.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let (batch, answer, failed) = deployment.drain_once().await.expect("a batch");
    assert_eq!(batch.records.len(), 2);
    assert_eq!(failed.len(), 2, "{answer}");
    // The unreadable one is shown again at once, so that the redrive moves
    // it on soon; the one of an unknown direction waits its delay.
    assert_eq!(deployment.event_source().counts().await.unwrap(), (1, 1));
    let logs = deployment.stop();
    assert!(
        logs.contains("a parked record that is not a parked delivery"),
        "{logs}"
    );
    assert!(logs.contains("unknown direction"), "{logs}");
    assert!(!logs.contains("not json at all"), "the body is not logged");
}

#[tokio::test]
async fn without_a_queue_or_with_one_that_refuses_the_answer_stays_503_and_the_log_says_parking_failed(
) {
    for (queue, expected) in [
        ("", "not parked (PARKED_QUEUE_URL unset)"),
        (
            "http://127.0.0.1:1/123456789012/no-such-queue",
            "parking failed too",
        ),
    ] {
        let deployment = Deployment::start(&[("PARKED_QUEUE_URL", queue)]).await;
        deployment.sim.fail_dataverse(100_000, down(503));
        let (_, status, body) = deployment
            .request("POST", &sample("didomi-user-updated.json"))
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["parked"], false, "{body}");

        let (_, status, body) = deployment.request("POST", "{oops").await;
        assert_eq!(status, 400, "{body}");
        let logs = deployment.stop();
        let failed: Vec<Value> = log_lines(&logs)
            .into_iter()
            .filter(|l| l["message"] == "delivery failed; not acknowledged")
            .collect();
        assert_eq!(failed.len(), 1, "{logs}");
        assert!(
            failed[0]["error"].as_str().unwrap().contains("Dataverse"),
            "{logs}"
        );
        assert!(
            failed[0]["parked"].as_str().unwrap().starts_with(expected),
            "{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_drains_150_records_completely_and_a_dry_run_leaves_all_150_in_place() {
    let deployment = Deployment::start(&[]).await;
    let sqs = deployment.moto.sqs_client();
    // 100 deliveries whose user Didomi no longer has, 49 changes of contacts
    // deleted since, and one change of O'Brien's contact that did not reach
    // Didomi (a person set "do not phone", which flows to Didomi only).
    let mut bodies: Vec<Value> = (0..100)
        .map(|i| {
            json!({"direction": "didomi-to-dynamics", "organization_user_id": format!("gone{i}@example.com"),
                   "error_class": "dataverse_unavailable", "parked_at": "2026-11-30T08:00:00Z"})
        })
        .collect();
    bodies.extend((0..49).map(|i| {
        json!({"direction": "dynamics-to-didomi", "contact_id": format!("00000000-0000-4000-8000-{i:012}"),
               "columns": ["donotbulkemail"], "error_class": "didomi_unavailable", "parked_at": "2026-11-30T08:00:00Z"})
    }));
    deployment
        .sim
        .set_contact_columns(OBRIEN, json!({"donotphone": true}));
    bodies.push(
        json!({"direction": "dynamics-to-didomi", "contact_id": OBRIEN, "columns": ["donotphone"],
                       "error_class": "didomi_unavailable", "parked_at": "2026-11-30T08:00:00Z"}),
    );
    for body in &bodies {
        sqs.send_message()
            .queue_url(&deployment.queue_url)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
    }
    let config = deployment.sim.config();
    let replay = |args: Vec<String>| {
        let moto = deployment.moto.url.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            consent_sync_with_aws(&moto, &config, &args)
        })
    };
    let queue = deployment.queue_url.clone();
    let source = deployment.event_source();

    let (code, stdout, stderr) = replay(vec![
        "replay".into(),
        "--queue".into(),
        queue.clone(),
        "--dry-run".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("150 parked deliveries would be replayed, 0 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("would send the contact's current sms"),
        "{stderr}"
    );
    assert!(stderr.contains("done, about"), "progress: {stderr}");
    assert_eq!(
        source.counts().await.unwrap(),
        (150, 0),
        "all left in place, visible"
    );
    assert_eq!(deployment.sim.didomi_events(), Vec::<Value>::new());

    let (code, stdout, stderr) = replay(vec!["replay".into(), "--queue".into(), queue.clone()])
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("150 parked deliveries replayed, 0 failed"),
        "{stdout}"
    );
    assert_eq!(source.counts().await.unwrap(), (0, 0), "drained completely");
    let events = deployment.sim.didomi_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["consents"]["channels"],
        json!([{"id": "sms", "enabled": false}])
    );
    assert!(!stderr.contains("gone1@example.com"), "{stderr}");
    deployment.stop();
}

/// Figures for docs/performance.md: a burst of deliveries against a Dataverse that
/// throttles (a service protection limit far below the burst), answered by
/// two function instances as Lambda would run them; then the drain once
/// Dataverse recovers. Prints what it measured; asserts that nothing is
/// lost or answered 5xx, and that every contact ends as Didomi holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_against_a_throttling_dataverse_is_answered_without_5xx_and_drained_once_it_recovers(
) {
    const PEOPLE: usize = 100;
    let deployment = Deployment::start(&[]).await;
    let env = [
        ("CONFIG_SECRET_ID", "consent-sync/config"),
        ("AWS_ENDPOINT_URL", deployment.proxy.url.as_str()),
        ("PARKED_QUEUE_URL", deployment.queue_url.as_str()),
    ];
    let second = FunctionProcess::start(&deployment.runtime, &env);
    let people: Vec<String> = (0..PEOPLE)
        .map(|i| format!("person{i}@example.com"))
        .collect();
    {
        let mut state = deployment.sim.state();
        for (i, email) in people.iter().enumerate() {
            let mut row = serde_json::Map::new();
            row.insert(
                "contactid".into(),
                json!(format!("10000000-0000-4000-8000-{i:012}")),
            );
            row.insert("emailaddress1".into(), json!(email));
            row.insert("donotbulkemail".into(), json!(false));
            state.push_contact(row);
            state.didomi.user_mut(email).consents = consents(json!({
                "purposes": [{"id": "marketing", "enabled": false}]
            }));
        }
    }
    // 20 requests per 5 s: the burst needs about 200. Each invocation has
    // 4 s, so that Dataverse's Retry-After outlasts the time left, as a
    // longer one does a 29 s Lambda invocation.
    let window = Duration::from_secs(5);
    deployment.sim.limit_dataverse(20, window);
    deployment.sim.clear_requests();

    let started = Instant::now();
    let deliveries = people
        .iter()
        .map(|email| sample_for("didomi-user-updated.json", email))
        .collect();
    let answers: Vec<i64> =
        invoke_concurrently(&deployment.runtime, deliveries, Duration::from_secs(4))
            .await
            .into_iter()
            .map(|(status, _)| status)
            .collect();
    let burst = started.elapsed();
    let applied = answers.iter().filter(|s| **s == 200).count();
    let parked = answers.iter().filter(|s| **s == 202).count();
    assert_eq!(
        applied + parked,
        PEOPLE,
        "every answer 200 or 202: {answers:?}"
    );
    assert!(parked > 0, "the limit was reached");
    let requests_while_throttling = deployment.sim.dataverse_requests().len();
    let throttled = deployment.sim.throttled();
    let source = deployment.event_source();
    assert_eq!(source.counts().await.unwrap(), (parked as u64, 0));

    // Dataverse recovers (and its last Retry-After has passed): the drain,
    // batch after batch, as the event source hands them over.
    deployment.sim.state().service_protection = None;
    tokio::time::sleep(window).await;
    let started = Instant::now();
    let mut batches = 0;
    while let Some((_, answer, failed)) = drain_once(&source, &deployment.runtime).await {
        assert_eq!(failed, Vec::<String>::new(), "{answer}");
        batches += 1;
    }
    let drain = started.elapsed();
    assert_eq!(source.counts().await.unwrap(), (0, 0));
    for i in 0..PEOPLE {
        let contact = deployment
            .sim
            .contact_by_id(&format!("10000000-0000-4000-8000-{i:012}"))
            .unwrap();
        assert_eq!(contact["donotbulkemail"], json!(true), "person {i}");
    }
    println!(
        "burst of {PEOPLE} deliveries, Dataverse limited to 20 requests/5 s: {applied} answered 200, \
         {parked} answered 202 parked, 0 answered 5xx, in {:.2} s; Dataverse received {requests_while_throttling} \
         requests while throttling ({throttled} answered 429); once it recovered, the drain applied {parked} \
         records in {batches} batches in {:.2} s",
        burst.as_secs_f64(),
        drain.as_secs_f64()
    );
    second.stop();
    deployment.stop();
}
