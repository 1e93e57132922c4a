//! The operator CLI, run as a person runs it.

use std::process::Command;

use consent_sync_tests::{binary, sample};

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
