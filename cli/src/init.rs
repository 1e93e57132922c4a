//! `consent-sync init`: the first day. Reads Didomi's purposes and the
//! contact table's columns, proposes a mapping for every purpose and, with
//! `--write`, creates the missing Yes/No columns (and the alternate key),
//! then writes the mappings back where the configuration came from — only
//! `mappings` changed — and runs `config check` on the result.

use std::io::{BufRead, IsTerminal, Write};

use consent_sync::dataverse::{Dataverse, DataverseClient, DataverseError};
use consent_sync::didomi::{DidomiClient, Purpose};
use consent_sync::setup::{self, Action, Found, KeyPlan, Plan, Prefix};
use consent_sync::{Config, ConfigSource, RetryPolicy};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::report::Report;

pub struct Options {
    pub prefix: Prefix,
    pub create_columns: bool,
    pub create_key: bool,
    pub write: bool,
    /// Go ahead without asking.
    pub yes: bool,
    /// The report is one JSON document: the plan is not printed before the question.
    pub json: bool,
}

/// A purpose's id or name as printed: no control characters (they are the
/// organization's metadata, shown on an operator's terminal).
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

fn describe(action: &Action, purpose: &Purpose) -> String {
    match action {
        Action::Mapped { .. } => "already in mappings: kept as it is".into(),
        Action::Exists {
            by: Found::Name, ..
        } => "Yes/No column of that name".into(),
        Action::Exists {
            by: Found::Label, ..
        } => format!("Yes/No column labelled {:?}", printable(&purpose.name)),
        Action::Create { .. } => format!("new Yes/No column {:?}", printable(&purpose.name)),
        Action::Conflict { reason, .. } => reason.clone(),
    }
}

fn column_of(action: &Action) -> String {
    match action {
        Action::Mapped { columns } => columns.join(", "),
        Action::Exists { column, .. } | Action::Create { column } => column.clone(),
        Action::Conflict { column, .. } if column.is_empty() => "-".into(),
        Action::Conflict { column, .. } => column.clone(),
    }
}

/// One line per purpose: id, column, what happens, why.
fn plan_text(plan: &Plan) -> String {
    let rows: Vec<(String, String, &str, String)> = plan
        .purposes
        .iter()
        .map(|p| {
            (
                printable(&p.purpose.id),
                column_of(&p.action),
                p.action.name(),
                describe(&p.action, &p.purpose),
            )
        })
        .collect();
    let id_width = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    let column_width = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut text = format!(
        "{:<id_width$}  {:<column_width$}  {:<8}  why\n",
        "purpose", "column", "action"
    );
    for (id, column, action, why) in rows {
        text.push_str(&format!(
            "{id:<id_width$}  {column:<column_width$}  {action:<8}  {why}\n"
        ));
    }
    text
}

fn key_text(plan: &Plan, contact_key: &str) -> Option<String> {
    match &plan.key {
        KeyPlan::NotNeeded | KeyPlan::Active { .. } => None,
        KeyPlan::Building { name, status } => Some(format!(
            "alternate key: `{name}` on {contact_key} is defined, its index is {status}: it is enforced once Active (config check shows it)"
        )),
        KeyPlan::Missing { schema_name } => Some(format!(
            "alternate key: upsert_mode is on and no Active alternate key is on {contact_key}, so two deliveries about one new person can create two contacts; --create-key defines `{schema_name}`"
        )),
    }
}

fn plan_json(plan: &Plan) -> serde_json::Value {
    let purposes: Vec<_> = plan
        .purposes
        .iter()
        .map(|p| {
            json!({
                "id": p.purpose.id,
                "name": p.purpose.name,
                "column": column_of(&p.action),
                "action": p.action.name(),
                "detail": describe(&p.action, &p.purpose),
            })
        })
        .collect();
    let key = match &plan.key {
        KeyPlan::NotNeeded => json!({"state": "not needed"}),
        KeyPlan::Active { name } => json!({"state": "active", "name": name}),
        KeyPlan::Building { name, status } => {
            json!({"state": "building", "name": name, "status": status})
        }
        KeyPlan::Missing { schema_name } => json!({"state": "missing", "name": schema_name}),
    };
    json!({"purposes": purposes, "key": key})
}

/// What `--write` will do, for the question and the report.
struct Changes<'a> {
    columns: Vec<(&'a str, &'a Purpose)>,
    key: Option<&'a str>,
    mappings: Vec<setup::NewMapping>,
}

impl Changes<'_> {
    fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.key.is_none() && self.mappings.is_empty()
    }

    fn summary(&self, source: &ConfigSource) -> String {
        let mut parts = Vec::new();
        if !self.columns.is_empty() {
            parts.push(format!(
                "create {} Yes/No column(s) on contact ({})",
                self.columns.len(),
                self.columns
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(key) = self.key {
            parts.push(format!("define the alternate key {key}"));
        }
        if !self.mappings.is_empty() {
            parts.push(format!(
                "add {} mapping(s) to {}",
                self.mappings.len(),
                source.describe()
            ));
        }
        parts.join(", ")
    }
}

/// `--write` at a terminal asks; elsewhere it needs `--yes`.
fn confirmed(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "init --write changes the environment and the configuration: without a terminal to ask at, add --yes to go ahead (nothing was changed)".into(),
        ));
    }
    eprint!("{question}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(())
    } else {
        Err(CliError::Usage("not confirmed: nothing was changed".into()))
    }
}

/// A refused customization, with the privilege Dataverse named and who has it.
fn refused(what: String, error: DataverseError, created: &[&str]) -> CliError {
    let why = match error.missing_privilege() {
        Some(privilege) => format!(
            "the application user lacks {privilege} (the System Customizer and System Administrator roles have it: assign one for the time of init, or create the column in Power Apps)"
        ),
        None => error.to_string(),
    };
    let done = if created.is_empty() {
        String::new()
    } else {
        format!(
            "; created before the refusal: {} (a second run reuses them)",
            created.join(", ")
        )
    };
    CliError::Customization(format!(
        "{what}: {why}; the configuration was not written{done}"
    ))
}

async fn apply(
    dataverse: &Dataverse<'_>,
    contact_key: &str,
    changes: &Changes<'_>,
) -> Result<Vec<String>> {
    let mut report = Vec::new();
    if changes.columns.is_empty() && changes.key.is_none() {
        return Ok(report);
    }
    let language = dataverse
        .base_language()
        .await
        .map_err(CliError::dataverse(
            "reading the organization's base language",
        ))?;
    let mut created: Vec<&str> = Vec::new();
    for (column, purpose) in &changes.columns {
        dataverse
            .create_yes_no_column(column, &purpose.name, language)
            .await
            .map_err(|e| {
                refused(
                    format!("Dataverse refused to create column {column}"),
                    e,
                    &created,
                )
            })?;
        created.push(column);
        report.push(format!("created  column {column}"));
    }
    if !created.is_empty() {
        dataverse.publish_contact().await.map_err(|e| {
            refused(
                "Dataverse refused to publish the contact table".into(),
                e,
                &created,
            )
        })?;
        report.push("published the contact table".into());
    }
    if let Some(key) = changes.key {
        let column = contact_key;
        dataverse
            .create_contact_key(key, column, language)
            .await
            .map_err(|e| {
                refused(
                    format!("Dataverse refused to define the alternate key {key}"),
                    e,
                    &created,
                )
            })?;
        report.push(format!(
            "defined  alternate key {key} on {column}: Dataverse builds its index now, and the key becomes Active once built (minutes on a small table, longer on a large one); until then `config check` shows it as pending"
        ));
    }
    Ok(report)
}

pub async fn run(source: ConfigSource, options: Options) -> Result<Report> {
    let text = source.read().await?;
    let config = Config::from_json_for_setup(&text)?;
    let http = consent_sync::http_client();
    let dataverse_client = DataverseClient::new(http.clone(), RetryPolicy::default());
    let dataverse = dataverse_client.session(&config, crate::deadline());
    let didomi_client = DidomiClient::new(http, RetryPolicy::default());
    let didomi = didomi_client.session(&config, crate::deadline());

    let purposes = didomi.purposes().await.map_err(|source| CliError::Didomi {
        what: "reading Didomi's purposes",
        source,
    })?;
    let columns = dataverse
        .contact_columns()
        .await
        .map_err(CliError::dataverse("reading the contact table's columns"))?;
    let keys = if config.upsert_mode {
        dataverse
            .contact_keys()
            .await
            .map_err(CliError::dataverse("reading the contact table's keys"))?
    } else {
        Vec::new()
    };
    let plan = setup::plan(&config, &purposes, &columns, &keys, &options.prefix);

    let mut out = format!(
        "{} Didomi purpose(s) of organization {}; {} contact column(s) in {}\n\n{}",
        purposes.len(),
        config.didomi.organization_id,
        columns.len(),
        config.dataverse.server_instance,
        plan_text(&plan)
    );
    let key_line = key_text(&plan, &config.contact_key);
    if let Some(line) = &key_line {
        out.push_str(&format!("\n{line}\n"));
    }
    let mut document = plan_json(&plan);

    let changes = Changes {
        columns: if options.create_columns {
            plan.to_create().collect()
        } else {
            Vec::new()
        },
        key: match &plan.key {
            KeyPlan::Missing { schema_name } if options.create_key => Some(schema_name.as_str()),
            _ => None,
        },
        mappings: plan.new_mappings(options.create_columns),
    };
    let to_create = plan.to_create().count();
    if !options.write {
        out.push_str("\nNothing was changed (a plan).");
        let mut flags = vec!["--write"];
        if to_create > 0 {
            flags.push("--create-columns");
        }
        if matches!(plan.key, KeyPlan::Missing { .. }) {
            flags.push("--create-key");
        }
        if plan.new_mappings(true).is_empty() && !matches!(plan.key, KeyPlan::Missing { .. }) {
            out.push_str(" Every purpose is mapped or in conflict: nothing to add.\n");
        } else {
            out.push_str(&format!(
                " To apply it: consent-sync init {}",
                flags.join(" ")
            ));
            if to_create > 0 {
                out.push_str(&format!(
                    " (--create-columns creates the {to_create} missing column(s); without it, only purposes with a column are mapped)"
                ));
            }
            out.push('\n');
        }
        document["written"] = json!(false);
        return Ok(Report::success(out, document));
    }

    if to_create > 0 && !options.create_columns {
        out.push_str(&format!(
            "\n{to_create} purpose(s) have no column and stay unmapped: add --create-columns to create them.\n"
        ));
    }
    if changes.is_empty() {
        out.push_str("\nNothing to change.\n");
        document["written"] = json!(false);
        return Ok(Report::success(out, document));
    }
    // Checked before anything is created: the result must load as the
    // functions load it.
    let new_text = setup::add_mappings(&text, &changes.mappings)
        .map_err(|e| CliError::Usage(format!("{e}: nothing was changed")))?;
    let new_config = if changes.mappings.is_empty() {
        Config::from_json_for_setup(&new_text)?
    } else {
        Config::from_json(&new_text)?
    };

    if !options.yes && !options.json && std::io::stdin().is_terminal() {
        // The plan stands above the question it asks about.
        print!("{out}");
        out.clear();
        let _ = std::io::stdout().flush();
    }
    confirmed(
        &format!("\nGo ahead: {}", changes.summary(&source)),
        options.yes,
    )?;
    let done = apply(&dataverse, &config.contact_key, &changes).await?;
    out.push('\n');
    for line in &done {
        out.push_str(line);
        out.push('\n');
    }
    if changes.mappings.is_empty() {
        out.push_str("the configuration is unchanged: no mapping to add\n");
    } else {
        source.write(&new_text).await?;
        out.push_str(&format!(
            "wrote    {} new mapping(s) to {}; every other field as it was\n",
            changes.mappings.len(),
            source.describe()
        ));
        if matches!(source, ConfigSource::SecretsManager { .. }) {
            out.push_str("         (running functions read it when their configuration cache expires: CONFIG_CACHE_SECONDS, 5 minutes by default)\n");
        }
    }
    document["written"] = json!(!changes.mappings.is_empty());
    document["done"] = json!(done);

    if new_config.mappings.is_empty() && new_config.contact_point_consent.is_none() {
        out.push_str("\nNo mapping yet: config check runs once one is there.\n");
        return Ok(Report::success(out, document));
    }
    out.push_str("\nconfig check on the result:\n");
    let check = crate::check::run(&new_config).await?;
    out.push_str(&check.text);
    document["checks"] = check.json;
    Ok(Report {
        text: out,
        json: document,
        ok: check.ok,
        reason: check
            .reason
            .map(|r| format!("init wrote its changes, but {r}")),
    })
}
