//! End to end: the compiled function binaries, started as Lambda starts
//! them, each polling its Lambda Runtime API, reading the secret from moto's
//! Secrets Manager and talking to the Dataverse and Didomi simulators.

use std::time::Duration;

use consent_sync_sim::runtime_api::{Invocation, RuntimeApi};
use consent_sync_tests::lambda::{BothFunctions, Deployment, FunctionProcess};
use consent_sync_tests::moto::Moto;
use consent_sync_tests::{sample, JANE};
use serde_json::{json, Value};

fn http_event(method: &str, body: &str) -> Value {
    serde_json::to_value(consent_sync_tests::http_event(
        method,
        body,
        "203.0.113.10",
        None,
    ))
    .unwrap()
}

#[tokio::test]
async fn the_lambda_binary_syncs_deliveries_with_one_secret_read_and_one_token() {
    let deployment = Deployment::start(&[]).await;
    let delivery = sample("didomi-user-updated.json");

    let (_, status, body) = deployment.request("POST", &delivery).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("updated")),
        "{body}"
    );
    for _ in 0..19 {
        let (_, status, body) = deployment.request("POST", &delivery).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (200, Some("skipped")),
            "{body}"
        );
    }
    assert_eq!(deployment.request("GET", "").await.1, 405);
    assert_eq!(deployment.request("POST", "{oops").await.1, 400);

    assert_eq!(
        deployment.sim.contact_by_id(JANE).unwrap()["donotbulkemail"],
        json!(true)
    );
    assert_eq!(
        deployment.proxy.secret_reads(),
        1,
        "twenty warm invocations read the secret once"
    );
    assert_eq!(
        deployment.sim.token_requests(),
        1,
        "twenty warm invocations request one token"
    );
    let logs = deployment.stop();

    // JSON log lines, one per delivery, without secrets, tokens or the raw identifier.
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let handled: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "delivery handled")
        .collect();
    assert_eq!(handled.len(), 20, "{logs}");
    // Flat lines as Lambda, Logs Insights and Powertools read them.
    for line in &handled {
        assert!(line["requestId"].is_string(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["service"], "didomi-to-dynamics", "{line}");
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(timestamp.len() == 24 && timestamp.ends_with('Z'), "{line}");
        assert!(
            line.get("fields").is_none() && line.get("span").is_none(),
            "{line}"
        );
    }
    let cold: Vec<bool> = handled
        .iter()
        .map(|l| l["cold_start"].as_bool().unwrap())
        .collect();
    assert_eq!(
        cold.iter().filter(|c| **c).count(),
        1,
        "only the first invocation is cold"
    );
    assert!(cold[0]);
    for forbidden in [
        "jane.doe@example.com",
        "local-client-secret",
        "local-api-secret",
        "Bearer",
        "sim.",
    ] {
        assert!(
            !logs.contains(forbidden),
            "the logs contain {forbidden:?}:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_missing_or_invalid_configuration_fails_the_invocation_naming_the_field() {
    let moto = Moto::start().await;
    let mut config: Value = serde_json::from_str(consent_sync_sim::LOCAL_CONFIG).unwrap();
    config["mappings"][1]["invert"] = json!("yes");
    moto.create_secret("consent-sync/invalid", &config.to_string())
        .await;
    let delivery = http_event("POST", &sample("didomi-user-updated.json"));
    // Each start gets its own Runtime API, as each Lambda execution environment does.
    let invoke_once = |env: Vec<(&'static str, String)>| {
        let delivery = delivery.clone();
        async move {
            let runtime = RuntimeApi::start().await.unwrap();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let function = FunctionProcess::start(&runtime, &env);
            let invocation = runtime.invoke(delivery, Duration::from_secs(20)).await;
            function.stop();
            invocation
        }
    };

    let first = invoke_once(vec![("AWS_ENDPOINT_URL", moto.url.clone())]).await;
    let second = invoke_once(vec![
        ("CONFIG_SECRET_ID", "consent-sync/invalid".into()),
        ("AWS_ENDPOINT_URL", moto.url.clone()),
    ])
    .await;
    let third = invoke_once(vec![
        ("CONFIG_SECRET_ID", "consent-sync/absent".into()),
        ("AWS_ENDPOINT_URL", moto.url.clone()),
    ])
    .await;

    let message = |invocation: Option<Invocation>| match invocation {
        Some(Invocation::Error {
            error_type,
            error_message,
        }) => {
            assert_eq!(error_type, "ConfigurationError");
            error_message
        }
        other => panic!("expected a function error, got {other:?}"),
    };
    let first = message(first);
    assert!(
        first.starts_with("environment variable `CONFIG_SECRET_ID` is required"),
        "{first}"
    );
    let second = message(second);
    assert!(
        second.starts_with("configuration field `mappings[1].invert`: invalid type"),
        "{second}"
    );
    let third = message(third);
    assert!(
        third.contains("consent-sync/absent") && third.contains("ResourceNotFoundException"),
        "{third}"
    );
}

#[tokio::test]
async fn config_cache_seconds_sets_how_often_the_secret_is_read() {
    let deployment = Deployment::start(&[("CONFIG_CACHE_SECONDS", "0")]).await;
    let delivery = sample("didomi-event-created.json");

    for _ in 0..3 {
        let (_, status, body) = deployment.request("POST", &delivery).await;
        assert_eq!(status, 200, "{body}");
    }

    assert_eq!(deployment.proxy.secret_reads(), 3);
    assert_eq!(
        deployment.sim.token_requests(),
        1,
        "an unchanged secret keeps its token"
    );
    deployment.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_carry_each_change_once_and_never_echo() {
    let both = BothFunctions::start().await;

    // A person opts Jane out of marketing in Dynamics.
    both.sim
        .edit_contact_as_person(JANE, json!({"donotbulkemail": true}))
        .unwrap();
    both.sim.settle().await;

    let events = both.sim.didomi_events();
    assert_eq!(
        events.len(),
        1,
        "exactly one Didomi consent event: {events:?}"
    );
    assert_eq!(
        events[0]["user"]["organization_user_id"],
        "jane.doe@example.com"
    );
    assert_eq!(
        events[0]["consents"]["purposes"],
        json!([{"id": "marketing", "enabled": false}])
    );
    assert_eq!(events[0]["delegate"]["id"], "consent-sync");
    assert_eq!(
        both.answers(&both.reverse_url),
        vec![(
            200,
            json!({"outcome": "sent", "purposes": ["marketing"], "channels": []})
        )]
    );
    // Didomi's webhook brings the event back; it is recognised and dropped.
    assert_eq!(
        both.answers(&both.forward_url),
        vec![(
            200,
            json!({"outcome": "skipped", "reason": "written by consent-sync from Dynamics; not synced back"})
        )]
    );
    assert_eq!(both.sim.writes(), vec![], "no Dataverse write");

    // A Didomi change: the contact is updated, and the webhook that write
    // fires is recognised as consent-sync's own.
    let delivery = sample("didomi-event-created.json").replace(
        "\"id\": \"marketing\", \"enabled\": false",
        "\"id\": \"marketing\", \"enabled\": true",
    );
    assert!(delivery.contains("\"enabled\": true"));
    let response = reqwest::Client::new()
        .post(&both.forward_url)
        .header("content-type", "application/json")
        .body(delivery)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outcome"], "updated", "{body}");
    both.sim.settle().await;

    assert_eq!(
        both.sim.contact_by_id(JANE).unwrap()["donotbulkemail"],
        json!(false)
    );
    assert_eq!(both.sim.writes().len(), 1, "one PATCH");
    let reverse = both.answers(&both.reverse_url);
    assert_eq!(reverse.len(), 2);
    assert_eq!(reverse[1].1["outcome"], "skipped");
    assert_eq!(
        reverse[1].1["reason"],
        "written by consent-sync's own application user; not synced back"
    );
    assert_eq!(both.sim.didomi_events().len(), 1, "no new Didomi event");

    // The operator's recipe finds Jane's lines: `consent-sync pseudonym`.
    let config_path =
        std::env::temp_dir().join(format!("consent-sync-e2e-{}.json", std::process::id()));
    std::fs::write(&config_path, both.sim.config().to_string()).unwrap();
    let output = std::process::Command::new(consent_sync_tests::binary("consent-sync"))
        .args(["pseudonym", "Jane.Doe@example.com", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config_path);
    assert!(output.status.success());
    let pseudonym = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(pseudonym.len(), 12);

    let (forward_logs, reverse_logs) = both.stop();
    for logs in [&forward_logs, &reverse_logs] {
        let users: Vec<String> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|l| l["user"].as_str().map(str::to_string))
            .filter(|u| u != "-")
            .collect();
        assert!(!users.is_empty(), "{logs}");
        assert!(
            users.iter().all(|u| *u == pseudonym),
            "{users:?} vs {pseudonym}"
        );
    }
    // One metric record per request, in each function's own log.
    for (logs, outcomes) in [
        (&forward_logs, vec!["skipped", "updated"]),
        (&reverse_logs, vec!["sent", "skipped"]),
    ] {
        let records: Vec<Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l.get("_aws").is_some())
            .collect();
        let seen: Vec<&str> = records
            .iter()
            .filter_map(|r| r["Outcome"].as_str())
            .collect();
        assert_eq!(seen, outcomes, "{logs}");
        assert!(records
            .iter()
            .all(|r| r["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ConsentSync"));
    }
    let handled = reverse_logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "change handled")
        .count();
    assert_eq!(handled, 2, "{reverse_logs}");
    for logs in [&forward_logs, &reverse_logs] {
        for forbidden in [
            "jane.doe@example.com",
            "local-client-secret",
            "local-api-secret",
            "local-dynamics-webhook-key",
            "Bearer",
            "eyJ",
        ] {
            assert!(
                !logs.contains(forbidden),
                "the logs contain {forbidden:?}:\n{logs}"
            );
        }
    }
}
