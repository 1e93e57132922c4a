//! `consent-sync config check`: the configuration, then what it points at —
//! the Entra ID token, `WhoAmI`, every mapped column in the environment's
//! metadata, a Didomi session.

use consent_sync::contact_point_consent::{
    ContactPointConsent, DISABLED, NON_RESTRICTIVE, RESTRICTIVE,
};
use consent_sync::dataverse::metadata::check_columns;
use consent_sync::dataverse::DataverseClient;
use consent_sync::didomi::DidomiClient;
use consent_sync::{Config, RetryPolicy};
use serde::Serialize;
use serde_json::json;

use crate::report::Report;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// Resolves every configured purpose and topic, names those the environment
/// lacks, and says what each purpose's enforcement model means for sending.
async fn consent_records(
    dataverse: &consent_sync::dataverse::Dataverse<'_>,
    section: &ContactPointConsent,
    checks: &mut Vec<Check>,
) {
    let resolution = match dataverse.resolve_consent(section).await {
        Ok(resolution) => resolution,
        Err(e) => {
            checks.push(check(
                "consent records",
                false,
                format!("cannot read msdynmkt_purposes / msdynmkt_topics (is Customer Insights – Journeys installed?): {e}"),
            ));
            return;
        }
    };
    for missing in &resolution.missing {
        checks.push(check("consent records", false, missing.clone()));
    }
    if resolution.missing.is_empty() {
        checks.push(check(
            "consent records",
            true,
            format!(
                "{} purpose(s) and {} topic(s) found; records for the {} channel",
                section.purposes.len(),
                section.topics.len(),
                section.channel.name()
            ),
        ));
    }
    let channel = section.channel.name();
    for (name, model) in &resolution.enforcement {
        let meaning = match *model {
            Some(RESTRICTIVE) => "Restrictive: Journeys sends only to an address with an Opted In record; a missing record blocks sending".to_string(),
            Some(NON_RESTRICTIVE) => "Non-restrictive: Journeys sends unless the address has an Opted Out record".to_string(),
            Some(DISABLED) => "Disabled: Journeys does not check consent for this purpose on this channel".to_string(),
            other => format!("unknown enforcement model {other:?}"),
        };
        checks.push(check(
            "enforcement",
            true,
            format!("purpose {name:?}, {channel}: {meaning}"),
        ));
    }
}

/// Whether the contact table has an active alternate key on the key column,
/// which makes creating a contact in upsert mode happen once per person.
async fn alternate_key(
    dataverse: &consent_sync::dataverse::Dataverse<'_>,
    config: &Config,
    checks: &mut Vec<Check>,
    warnings: &mut Vec<String>,
) {
    let column = &config.contact_key;
    let keys = match dataverse.contact_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            checks.push(check(
                "alternate key",
                false,
                format!("cannot read the contact table's keys: {e}"),
            ));
            return;
        }
    };
    if let Some(key) = keys.iter().find(|k| k.makes_unique(column)) {
        checks.push(check(
            "alternate key",
            true,
            format!(
                "`{}` on {column} is active: a new person's contact is created once, even when deliveries race",
                key.name
            ),
        ));
        return;
    }
    let pending = keys
        .iter()
        .find(|k| k.columns == [column.as_str()])
        .map(|k| {
            format!(
                " (key `{}` is there, its index status is {}, not Active yet)",
                k.name, k.status
            )
        })
        .unwrap_or_default();
    checks.push(check(
        "alternate key",
        true,
        format!("none active on {column}{pending}"),
    ));
    if config.upsert_mode {
        warnings.push(format!(
            "upsert_mode is on and no active alternate key is defined on contact {column}: two deliveries about the same new person at the same moment (Didomi sends user.created and event.created together) can create two contacts. Add one once, in Power Apps → Tables → Contact → Keys → New key, with the {column} column alone; consent-sync uses it as soon as its status is Active."
        ));
    }
}

/// Runs every check, even after one failed, so that one run names every problem.
pub async fn run(config: &Config) -> Result<Report, crate::error::CliError> {
    let mut checks = vec![check(
        "configuration",
        true,
        format!(
            "{} mapping(s){}, contact_key {}, Didomi organization {}",
            config.mappings.len(),
            if config.contact_point_consent.is_some() {
                ", contact_point_consent"
            } else {
                ""
            },
            config.contact_key,
            config.didomi.organization_id
        ),
    )];
    let http = consent_sync::http_client();
    let dataverse_client = DataverseClient::new(http.clone(), RetryPolicy::default());
    let dataverse = dataverse_client.session(config, crate::deadline());
    let mut warnings = Vec::new();
    match dataverse.who_am_i().await {
        Ok(user) => {
            checks.push(check(
                "dataverse",
                true,
                format!(
                    "signed in to {} as application user {user}",
                    config.dataverse.server_instance
                ),
            ));
            match dataverse.contact_attributes().await {
                Ok(attributes) => {
                    let problems = check_columns(config, &attributes);
                    if problems.is_empty() {
                        checks.push(check(
                            "columns",
                            true,
                            format!(
                                "all {} mapped columns exist with a fitting type",
                                config.mappings.len()
                            ),
                        ));
                    }
                    for problem in problems {
                        checks.push(check(
                            "columns",
                            false,
                            format!("column `{}` {}", problem.column, problem.problem),
                        ));
                    }
                }
                Err(e) => checks.push(check(
                    "columns",
                    false,
                    format!("cannot read the contact metadata: {e}"),
                )),
            }
            alternate_key(&dataverse, config, &mut checks, &mut warnings).await;
            if let Some(section) = &config.contact_point_consent {
                consent_records(&dataverse, section, &mut checks).await;
            }
        }
        Err(e) => checks.push(check("dataverse", false, e.to_string())),
    }
    let didomi_client = DidomiClient::new(http, RetryPolicy::default());
    match didomi_client
        .session(config, crate::deadline())
        .check_session()
        .await
    {
        Ok(()) => checks.push(check(
            "didomi",
            true,
            format!("session opened at {}", config.didomi.api_url),
        )),
        Err(e) => checks.push(check("didomi", false, e.to_string())),
    }
    // Each direction needs its own field; a deployment may use one only.
    let notes: Vec<String> = [
        config
            .check_didomi_webhook()
            .err()
            .map(|e| format!("Didomi → Dynamics cannot run yet: {e}")),
        config
            .dynamics_webhook_key()
            .err()
            .map(|e| format!("Dynamics → Didomi cannot run yet: {e}")),
    ]
    .into_iter()
    .flatten()
    .chain(warnings)
    .collect();

    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    let mut text = String::new();
    for c in &checks {
        text.push_str(&format!(
            "{} {:<16} {}\n",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    for note in &notes {
        text.push_str(&format!("note {note}\n"));
    }
    let reason = (!failed.is_empty()).then(|| {
        format!(
            "config check found {} problem(s): {}",
            failed.len(),
            failed
                .iter()
                .map(|c| c.detail.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )
    });
    Ok(Report {
        text,
        json: json!({"checks": checks, "notes": notes}),
        ok: failed.is_empty(),
        reason,
    })
}
