//! `consent-sync config check`: the configuration, then what it points at —
//! the Entra ID token, `WhoAmI`, every mapped column in the environment's
//! metadata, a Didomi session.

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

/// Runs every check, even after one failed, so that one run names every problem.
pub async fn run(config: &Config) -> Result<Report, String> {
    let mut checks = vec![check(
        "configuration",
        true,
        format!(
            "{} mapping(s), contact_key {}, Didomi organization {}",
            config.mappings.len(),
            config.contact_key,
            config.didomi.organization_id
        ),
    )];
    let http = consent_sync::http_client();
    let dataverse_client = DataverseClient::new(http.clone(), RetryPolicy::default());
    let dataverse = dataverse_client.session(config, crate::deadline());
    match dataverse.who_am_i().await {
        Ok(user) => {
            checks.push(check(
                "dataverse",
                true,
                format!(
                    "signed in to {} as application user {user}",
                    config.server_instance
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
            format!("session opened at {}", config.didomi_api_url),
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
    .collect();

    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    let mut text = String::new();
    for c in &checks {
        text.push_str(&format!(
            "{} {:<14} {}\n",
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
