//! `consent-sync webhook register | unregister | status`: the Dataverse
//! webhook that feeds `dynamics-to-didomi`.

use consent_sync::dataverse::registration::{Action, RowAction, Status};
use consent_sync::dataverse::DataverseClient;
use consent_sync::{Config, RetryPolicy};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::report::Report;

fn client() -> DataverseClient {
    DataverseClient::new(consent_sync::http_client(), RetryPolicy::default())
}

fn actions_text(actions: &[RowAction]) -> String {
    let mut text = String::new();
    for action in actions {
        let verb = match action.action {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
        };
        text.push_str(&format!(
            "  {:<30} {verb:<9} {} {}\n",
            action.table, action.id, action.name
        ));
    }
    text
}

pub async fn register(config: &Config, name: &str, url: &str) -> Result<Report> {
    let client = client();
    let dataverse = client.session(config, crate::deadline());
    let actions = dataverse
        .register(config, name, url)
        .await
        .map_err(CliError::registration("register"))?;
    let desired = consent_sync::dataverse::registration::Desired::new(config, name);
    let watched: String = desired
        .tables
        .iter()
        .map(|t| format!("  {}: {}\n", t.entity, t.filtering.join(", ")))
        .collect();
    let text = format!(
        "Webhook {name:?} registered on {}: changes now go to {url}\n{}Columns watched:\n{watched}Remove the System Administrator role from the application user now that registration is done.\n",
        config.dataverse.server_instance,
        actions_text(&actions),
    );
    let contact_columns = desired
        .tables
        .iter()
        .find(|t| t.entity == "contact")
        .map(|t| t.filtering.clone())
        .unwrap_or_default();
    let tables: Vec<_> = desired
        .tables
        .iter()
        .map(|t| json!({"entity": t.entity, "columns": t.filtering, "image": t.image}))
        .collect();
    Ok(Report::success(
        text,
        json!({"name": name, "url": url, "columns": contact_columns, "tables": tables, "actions": actions}),
    ))
}

pub async fn unregister(config: &Config, name: &str) -> Result<Report> {
    let client = client();
    let dataverse = client.session(config, crate::deadline());
    let actions = dataverse
        .unregister(name)
        .await
        .map_err(CliError::registration("unregister"))?;
    let text = if actions.is_empty() {
        format!(
            "No webhook {name:?} is registered on {}: nothing to remove.\n",
            config.dataverse.server_instance
        )
    } else {
        format!(
            "Webhook {name:?} removed from {}:\n{}",
            config.dataverse.server_instance,
            actions_text(&actions)
        )
    };
    Ok(Report::success(
        text,
        json!({"name": name, "actions": actions}),
    ))
}

pub async fn status(config: &Config, name: &str) -> Result<Report> {
    let client = client();
    let dataverse = client.session(config, crate::deadline());
    let status = dataverse
        .webhook_status(config, name)
        .await
        .map_err(CliError::registration("status"))?;
    let text = status_text(config, name, &status);
    let ok = status.mismatches.is_empty();
    let reason = (!ok).then(|| {
        format!(
            "the webhook does not match the configuration: {}",
            status.mismatches.join("; ")
        )
    });
    Ok(Report {
        text,
        json: json!({"name": name, "status": status}),
        ok,
        reason,
    })
}

fn status_text(config: &Config, name: &str, status: &Status) -> String {
    let mut text = String::new();
    let Some(endpoint) = &status.registration.endpoint else {
        return format!(
            "No webhook {name:?} is registered on {}.\n",
            config.dataverse.server_instance
        );
    };
    text.push_str(&format!(
        "Webhook {name:?} on {}\n  endpoint  {}  {}\n",
        config.dataverse.server_instance,
        endpoint.id,
        endpoint.url.as_deref().unwrap_or("(no url)")
    ));
    for step in &status.registration.steps {
        let state = if step.statecode == Some(1) {
            "disabled"
        } else {
            "enabled"
        };
        text.push_str(&format!(
            "  step      {}  {} ({state}), columns {}\n",
            step.id,
            step.message.as_deref().unwrap_or("?"),
            step.filteringattributes.as_deref().unwrap_or("(all)")
        ));
    }
    if status.mismatches.is_empty() {
        text.push_str("Matches the configuration.\n");
    } else {
        text.push_str("Differs from the configuration (run `consent-sync webhook register --url …` to fix):\n");
        for mismatch in &status.mismatches {
            text.push_str(&format!("  - {mismatch}\n"));
        }
    }
    if status.failed_jobs.is_empty() {
        text.push_str("No failed deliveries.\n");
    } else {
        text.push_str(&format!(
            "Recent failed deliveries ({}):\n",
            status.failed_jobs.len()
        ));
        for job in &status.failed_jobs {
            text.push_str(&format!(
                "  {}  {}: {}\n",
                job.completedon.as_deref().unwrap_or("-"),
                job.step,
                job.message
            ));
        }
    }
    text
}
