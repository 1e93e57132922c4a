//! `consent-sync init`, run as an operator runs it on the first day: the
//! compiled CLI against the simulated Didomi and Dataverse (and moto's
//! Secrets Manager for the stack's secret).

use std::path::{Path, PathBuf};
use std::process::Command;

use consent_sync_sim::{ColumnType, Fault, Identity, Simulator};
use consent_sync_tests::lambda::{Deployment, DIDOMI_TO_DYNAMICS};
use consent_sync_tests::moto::REGION;
use consent_sync_tests::{binary, sample, JANE};
use serde_json::{json, Value};

/// Runs `consent-sync` with `args`, no terminal, and `env` added.
fn consent_sync(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(binary("consent-sync"))
        .args(args)
        .env_remove("CONFIG_SECRET_ID")
        .envs(env.iter().copied())
        .output()
        .expect("consent-sync runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `init` with the configuration in `path`.
async fn init(path: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["init", "--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let all: Vec<String> = all.into_iter().map(String::from).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        consent_sync(&args, &[])
    })
    .await
    .unwrap()
}

struct ConfigFile(PathBuf);

impl ConfigFile {
    /// The simulator's configuration, changed by `adjust`, pretty-printed.
    fn new(sim: &Simulator, name: &str, adjust: impl FnOnce(&mut Value)) -> ConfigFile {
        let mut config = sim.config();
        adjust(&mut config);
        let path = std::env::temp_dir().join(format!(
            "consent-sync-init-{}-{name}.json",
            std::process::id()
        ));
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        ConfigFile(path)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn simulator() -> Simulator {
    Simulator::start(Identity::default(), consent_sync_sim::sample_contacts())
        .await
        .unwrap()
}

/// The purposes of the first-day scenario, with one case of each rule.
const PURPOSES: [(&str, &str); 7] = [
    ("marketing", "Commercial communications"),
    ("newsletter", "Newsletter"),
    ("profiling", "Profiling"),
    ("sports", "Sports"),
    ("press", "News"),
    ("partners", "Partners"),
    ("surveys", "Surveys"),
];

fn one_mapping(config: &mut Value) {
    config["mappings"] =
        json!([{"column": "donotbulkemail", "purpose": "marketing", "invert": true}]);
}

fn line_of<'a>(stdout: &'a str, purpose: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{purpose} ")))
        .unwrap_or_else(|| panic!("no line for {purpose}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_day_plan_write_and_a_second_run_that_creates_nothing() {
    let sim = simulator().await;
    // Three pages: Didomi serves at most 3 purposes a page, fewer than asked.
    sim.set_didomi_purposes(&PURPOSES, 3);
    sim.add_column("new_partnersoptin", ColumnType::Boolean, "Partners");
    sim.add_column("cr5_partners", ColumnType::Boolean, " partners ");
    let file = ConfigFile::new(&sim, "first-day", one_mapping);
    let before = file.text();

    // Given no --write: a plan, and nothing changed anywhere.
    let (code, stdout, stderr) = init(&file.0, &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for (purpose, column, action) in [
        ("marketing", "donotbulkemail", "mapped"),
        ("newsletter", "new_newsletter", "create"),
        ("profiling", "new_profiling", "conflict"),
        ("sports", "new_sports", "exists"),
        ("press", "new_news", "exists"),
        ("partners", "-", "conflict"),
        ("surveys", "new_surveys", "create"),
    ] {
        let line = line_of(&stdout, purpose);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&words[1..3], [column, action], "{line}");
    }
    assert!(
        line_of(&stdout, "press").contains("labelled \"News\""),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, "profiling").contains("exists as Picklist, not Yes/No"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, "partners").contains(
            "2 Yes/No columns are labelled \"Partners\": cr5_partners, new_partnersoptin"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("To apply it: consent-sync init --write --create-columns"),
        "{stdout}"
    );
    let pages: Vec<String> = sim
        .didomi_requests()
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1/metadata/purposes"))
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages[2].contains("$skip=6"), "{pages:?}");
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
    assert_eq!(file.text(), before);

    // Without a terminal, --write needs --yes: refused, nothing changed.
    let (code, _, stderr) = init(&file.0, &["--write", "--create-columns"]).await;
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("add --yes"), "{stderr}");
    assert!(sim.writes().is_empty());
    assert_eq!(file.text(), before);

    // --write: the columns are created and published, the mappings written.
    let (code, stdout, stderr) = init(&file.0, &["--write", "--create-columns", "--yes"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    {
        let state = sim.state();
        for column in ["new_newsletter", "new_surveys"] {
            assert_eq!(
                state.columns.get(column),
                Some(&ColumnType::Boolean),
                "{column}"
            );
        }
        assert_eq!(state.column_labels["new_surveys"], "Surveys");
        assert!(state.unpublished.is_empty(), "published after creation");
        assert_eq!(state.published, ["contact"]);
        assert!(!state.columns.contains_key("new_profiling_"));
    }
    let created: Vec<String> = sim
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    assert_eq!(
        created,
        [
            "POST /api/data/v9.2/EntityDefinitions(LogicalName='contact')/Attributes",
            "POST /api/data/v9.2/EntityDefinitions(LogicalName='contact')/Attributes",
            "POST /api/data/v9.2/PublishXml",
        ]
    );
    let after = file.text();
    let written: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        written["mappings"],
        json!([
            {"column": "donotbulkemail", "purpose": "marketing", "invert": true},
            {"column": "new_newsletter", "purpose": "newsletter"},
            {"column": "new_sports", "purpose": "sports"},
            {"column": "new_news", "purpose": "press"},
            {"column": "new_surveys", "purpose": "surveys"}
        ])
    );
    let mut unchanged: Value = serde_json::from_str(&before).unwrap();
    unchanged["mappings"] = written["mappings"].clone();
    assert_eq!(written, unchanged, "only mappings changed");
    assert!(stdout.contains("wrote    4 new mapping(s)"), "{stdout}");
    assert!(
        stdout.contains("ok   columns          all 5 mapped columns exist with a fitting type"),
        "config check runs on the result:\n{stdout}"
    );

    // A second run: everything is mapped or in conflict; nothing is created.
    sim.clear_requests();
    let (code, stdout, stderr) = init(&file.0, &["--write", "--create-columns", "--yes"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("Nothing to change."), "{stdout}");
    assert_eq!(
        line_of(&stdout, "surveys").split_whitespace().nth(2),
        Some("mapped")
    );
    assert!(sim.writes().is_empty(), "{:?}", sim.writes());
    assert_eq!(file.text(), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_privilege_creates_and_writes_nothing() {
    let sim = simulator().await;
    sim.deny_privilege("prvCreateAttribute");
    let file = ConfigFile::new(&sim, "refused", one_mapping);
    let before = file.text();
    let columns_before = sim.state().columns.clone();

    let (code, stdout, stderr) = init(&file.0, &["--write", "--create-columns", "--yes"]).await;

    assert_ne!(code, 0, "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("consent-sync: Dataverse refused to create column new_newsletter: the application user lacks prvCreateAttribute (the System Customizer and System Administrator roles have it"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the configuration was not written"),
        "{stderr}"
    );
    assert_eq!(file.text(), before);
    assert_eq!(sim.state().columns, columns_before);
    assert!(sim.state().published.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_mode_without_a_key_plans_it_and_create_key_defines_it() {
    let sim = simulator().await;
    let file = ConfigFile::new(&sim, "key", |c| c["upsert_mode"] = json!(true));

    let (code, stdout, _) = init(&file.0, &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("no Active alternate key is on emailaddress1")
            && stdout.contains("--create-key defines `new_emailaddress1_key`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("consent-sync init --write --create-columns --create-key"),
        "{stdout}"
    );
    assert!(sim.state().contact_keys.is_empty());

    let (code, stdout, stderr) = init(&file.0, &["--write", "--create-key", "--yes"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let keys = sim.state().contact_keys.clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].columns.as_slice(), keys[0].status.as_str()),
        (&["emailaddress1".to_string()][..], "Pending")
    );
    assert!(stdout.contains("becomes Active once built"), "{stdout}");
    assert!(
        stdout.contains("ok   alternate key    none active on emailaddress1 (key `new_emailaddress1_key` is there, its index status is Pending"),
        "{stdout}"
    );
    // Without --create-columns, the purpose without a column stays unmapped.
    assert!(
        stdout.contains("1 purpose(s) have no column and stay unmapped"),
        "{stdout}"
    );
    let written: Value = serde_json::from_str(&file.text()).unwrap();
    assert!(!written["mappings"].to_string().contains("new_surveys"));
}

/// A bad case: its name, how the configuration is spoiled, how the
/// simulator is, and the start of the one line the operator reads.
type BadCase = (
    &'static str,
    Box<dyn Fn(&mut Value)>,
    Box<dyn Fn(&Simulator)>,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_refusals_are_one_line_and_change_nothing() {
    let sim = simulator().await;
    let cases: Vec<BadCase> = vec![
        (
            "missing field",
            Box::new(|c| drop(c.as_object_mut().unwrap().remove("client_id"))),
            Box::new(|_| {}),
            "consent-sync: configuration field `client_id`: is required",
        ),
        (
            "Didomi unreachable",
            Box::new(|c| c["didomi_api_url"] = json!("http://127.0.0.1:9/v1")),
            Box::new(|_| {}),
            "consent-sync: reading Didomi's purposes: Didomi unavailable: could not connect",
        ),
        (
            "Didomi refusing",
            Box::new(|c| c["didomi"]["api_secret"] = json!("wrong-secret")),
            Box::new(|_| {}),
            "consent-sync: reading Didomi's purposes: Didomi refused the API key (HTTP 400)",
        ),
        (
            "metadata refused",
            Box::new(|_| {}),
            Box::new(|sim| {
                sim.fail_dataverse(
                    1,
                    Fault::Status {
                        status: 403,
                        retry_after: None,
                    },
                )
            }),
            "consent-sync: reading the contact table's columns: Dataverse answered HTTP 403",
        ),
    ];
    for (name, adjust, prepare, expected) in cases {
        let file = ConfigFile::new(&sim, "bad", |c| {
            c["mappings"] = json!([]);
            adjust(c);
        });
        let before = file.text();
        prepare(&sim);
        sim.clear_requests();
        let (code, stdout, stderr) = init(&file.0, &["--write", "--create-columns", "--yes"]).await;
        assert_ne!(code, 0, "{name}: {stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with(expected), "{name}: {stderr}");
        assert!(!stderr.contains("wrong-secret"), "{stderr}");
        assert_eq!(file.text(), before, "{name}");
        assert!(sim.writes().is_empty(), "{name}");
    }
    // Every other command still refuses a configuration without mappings.
    let file = ConfigFile::new(&sim, "empty", |c| c["mappings"] = json!([]));
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let path = file.0.clone();
        move || {
            consent_sync(
                &["config", "check", "--config", path.to_str().unwrap()],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert_eq!(
        stderr.trim(),
        "consent-sync: configuration field `mappings`: needs at least one mapping"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_secret_keeps_every_other_byte_and_a_delivery_then_sets_the_created_column() {
    let deployment =
        Deployment::start_configured(DIDOMI_TO_DYNAMICS, &[("CONFIG_CACHE_SECONDS", "0")], |_| {})
            .await;
    // The secret as an operator left it: their own layout, an escape serde
    // would not write back, the stack's generated key; mappings empty.
    let mut fields = deployment.sim.config();
    let fields = fields.as_object_mut().unwrap();
    fields.remove("mappings");
    let pretty = serde_json::to_string_pretty(fields).unwrap();
    let head = "{\n    \"mappings\" :[ ],\n";
    let tail = format!(
        "    \"log_pseudonym_key\": \"cl\\u00e9-de-pseudonymes-0123456789\",\n{}",
        pretty.trim_start_matches('{').trim_start_matches('\n')
    );
    let secret = format!("{head}{tail}");
    let secrets = deployment.moto.secrets_client().await;
    secrets
        .put_secret_value()
        .secret_id("consent-sync/config")
        .secret_string(&secret)
        .send()
        .await
        .unwrap();

    let moto_url = deployment.moto.url.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        consent_sync(
            &["init", "--write", "--create-columns", "--yes"],
            &[
                ("CONFIG_SECRET_ID", "consent-sync/config"),
                ("AWS_ENDPOINT_URL", &moto_url),
                ("AWS_REGION", REGION),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("to the secret consent-sync/config"),
        "{stdout}"
    );

    let after = secrets
        .get_secret_value()
        .secret_id("consent-sync/config")
        .send()
        .await
        .unwrap()
        .secret_string
        .unwrap();
    let (start, rest) = after.split_once("\"mappings\" :").unwrap();
    assert_eq!(start, "{\n    ", "every byte before mappings as it was");
    let array_end = rest.find("],\n").unwrap() + 3;
    assert_eq!(
        &rest[array_end..],
        tail,
        "every byte after mappings as it was"
    );
    let written: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        written["mappings"],
        json!([
            {"column": "new_marketing", "purpose": "marketing"},
            {"column": "new_newsletter", "purpose": "newsletter"},
            {"column": "new_sports", "purpose": "sports"},
            {"column": "new_surveys", "purpose": "surveys"}
        ])
    );

    // Then a Didomi delivery about the new purpose lands in the new column,
    // through the deployed function reading the secret init wrote.
    let delivery = sample("didomi-event-created.json").replace(
        "\"id\": \"marketing\", \"enabled\": false",
        "\"id\": \"surveys\", \"enabled\": true",
    );
    assert!(delivery.contains("surveys"));
    let (_, status, body) = deployment.request("POST", &delivery).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (200, json!("updated")),
        "{body}"
    );
    let jane = deployment.sim.contact_by_id(JANE).unwrap();
    assert_eq!(jane["new_surveys"], json!(true));
    deployment.stop();
}

/// `init --write` at a terminal (a pseudo-terminal from `script`, as a
/// person's shell would give), answering `answer` to its question.
async fn at_a_terminal(path: &Path, answer: &'static str) -> (i32, String) {
    let command = format!(
        "{} init --config {} --write --create-columns",
        binary("consent-sync").display(),
        path.display()
    );
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("CONFIG_SECRET_ID")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        // The question comes once the plan is read; the answer waits in the terminal.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_write_asks_first_and_a_no_changes_nothing() {
    let sim = simulator().await;
    let file = ConfigFile::new(&sim, "terminal", one_mapping);
    let before = file.text();

    let (code, screen) = at_a_terminal(&file.0, "n\n").await;
    assert_ne!(code, 0, "{screen}");
    assert!(
        screen.contains("surveys     new_surveys     create"),
        "the plan first:\n{screen}"
    );
    assert!(
        screen.contains("Go ahead: create 2 Yes/No column(s) on contact (new_newsletter, new_surveys), add 3 mapping(s) to the file"),
        "{screen}"
    );
    assert!(
        screen.contains("not confirmed: nothing was changed"),
        "{screen}"
    );
    assert_eq!(file.text(), before);
    assert!(sim.writes().is_empty());

    let (code, screen) = at_a_terminal(&file.0, "y\n").await;
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("wrote    "), "{screen}");
    assert_ne!(file.text(), before);
}
