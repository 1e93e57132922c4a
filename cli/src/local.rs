//! `consent-sync local`: the function on this machine, behind a local API
//! Gateway, against the simulators (or a real environment with `--config`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use consent_sync::config::WebhookAuthMode;
use consent_sync::dataverse::Contact;
use consent_sync::didomi::deliveries::{parse_delivery, Delivery};
use consent_sync::{Config, ConfigSource, Deadline, DidomiToDynamics};
use consent_sync_sim::gateway::{Gateway, Handler};
use consent_sync_sim::{sample_contacts, Identity, Simulator};
use serde_json::{Map, Value};

/// The delivery replayed when no `--event` is given.
pub const SAMPLE_DELIVERY: &str = include_str!("../../events/didomi-user-updated.json");

/// Lambda's default timeout for the function in `template.yaml`.
const INVOCATION_BUDGET: Duration = Duration::from_secs(30);

pub struct Options {
    pub config: Option<PathBuf>,
    pub event: Option<PathBuf>,
    pub port: u16,
    pub serve: bool,
}

/// Lets the local gateway invoke the function, each request with Lambda's budget.
pub fn gateway_handler(function: Arc<DidomiToDynamics>) -> Handler {
    Arc::new(move |request: ApiGatewayV2httpRequest| {
        let function = function.clone();
        Box::pin(async move {
            function
                .handle(&request, Deadline::after(INVOCATION_BUDGET))
                .await
                .map_err(|e| e.to_string())
        })
    })
}

pub async fn run(options: Options) -> Result<(), String> {
    let (simulator, config_text) = match &options.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (None, text)
        }
        None => {
            let simulator = Simulator::start(Identity::default(), sample_contacts())
                .await
                .map_err(|e| format!("cannot start the simulator: {e}"))?;
            let text = simulator.config().to_string();
            (Some(simulator), text)
        }
    };
    let config = Config::from_json(&config_text)
        .and_then(|config| config.check_didomi_webhook().map(|()| config))
        .map_err(|e| e.to_string())?;
    let function = Arc::new(DidomiToDynamics::new(
        ConfigSource::Inline(config_text),
        Duration::from_secs(300),
    ));

    // With JWT auth, act as API Gateway's authorizer would after validating
    // a token issued to the first allowed client.
    let claims = (config.didomi_webhook.mode == WebhookAuthMode::Jwt).then(|| {
        let mut claims = Map::new();
        claims.insert(
            "client_id".into(),
            Value::String(config.didomi_webhook.client_ids[0].clone()),
        );
        claims
    });
    let gateway = Gateway::start(
        SocketAddr::from(([127, 0, 0, 1], options.port)),
        gateway_handler(function.clone()),
        claims,
    )
    .await
    .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", options.port))?;

    match &simulator {
        Some(sim) => println!(
            "Dataverse and Entra ID simulator: {} (sample contacts loaded)",
            sim.url
        ),
        None => println!("Dataverse environment: {}", config.server_instance),
    }
    println!(
        "didomi-to-dynamics endpoint:      {}/  (POST Didomi webhook deliveries here)",
        gateway.url
    );

    let delivery = match &options.event {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => SAMPLE_DELIVERY.to_string(),
    };
    let user = match parse_delivery(delivery.as_bytes()) {
        Ok(Delivery::Change(change)) => change.organization_user_id,
        _ => None,
    };

    let before = read_contacts(&function, &config, user.as_deref()).await?;
    let (status, body) = replay(&gateway.url, &delivery).await?;
    let after = read_contacts(&function, &config, user.as_deref()).await?;

    println!();
    println!(
        "Replayed {} -> HTTP {status} {body}",
        options
            .event
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "events/didomi-user-updated.json".into())
    );
    print!("{}", describe_changes(user.as_deref(), &before, &after));

    if options.serve {
        println!("\nServing until Ctrl-C. Try: curl -X POST {}/ -H 'content-type: application/json' --data @events/didomi-event-created.json", gateway.url);
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    }
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the delivery was answered with HTTP {status}"))
    }
}

async fn replay(url: &str, delivery: &str) -> Result<(u16, String), String> {
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("content-type", "application/json")
        .header("user-agent", "consent-sync-local")
        .body(delivery.to_string())
        .send()
        .await
        .map_err(|e| format!("the local endpoint did not answer: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}

async fn read_contacts(
    function: &DidomiToDynamics,
    config: &Config,
    user: Option<&str>,
) -> Result<Vec<Contact>, String> {
    let Some(user) = user else {
        return Ok(Vec::new());
    };
    let columns: Vec<&str> = config.columns_to_dynamics().collect();
    function
        .dataverse
        .session(config, Deadline::after(INVOCATION_BUDGET))
        .find_contacts(user, &columns)
        .await
        .map_err(|e| format!("cannot read the contact: {e}"))
}

/// What changed on the contacts of `user`, column by column.
pub fn describe_changes(user: Option<&str>, before: &[Contact], after: &[Contact]) -> String {
    let Some(user) = user else {
        return "The delivery names no organization_user_id: no contact to show.\n".into();
    };
    if after.is_empty() {
        return format!("No contact has the key {user:?}: nothing changed.\n");
    }
    let mut text = String::new();
    for contact in after {
        let previous = before.iter().find(|c| c.id == contact.id);
        match previous {
            None => text.push_str(&format!("Contact {} ({user}) was created:\n", contact.id)),
            Some(_) => text.push_str(&format!("Contact {} ({user}):\n", contact.id)),
        }
        let mut changed = 0;
        for (column, value) in &contact.columns {
            let old = previous
                .and_then(|p| p.columns.get(column))
                .unwrap_or(&Value::Null);
            if previous.is_none() || old != value {
                changed += 1;
                match previous {
                    Some(_) => text.push_str(&format!("  {column:<16} {old} -> {value}\n")),
                    None => text.push_str(&format!("  {column:<16} {value}\n")),
                }
            }
        }
        if changed == 0 {
            text.push_str("  no mapped column changed\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contact(columns: Value) -> Contact {
        Contact {
            id: "6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c".into(),
            columns: columns.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn changes_are_listed_column_by_column() {
        let before = [contact(
            json!({"donotbulkemail": false, "donotemail": false}),
        )];
        let after = [contact(
            json!({"donotbulkemail": true, "donotemail": false}),
        )];
        assert_eq!(
            describe_changes(Some("jane@example.com"), &before, &after),
            "Contact 6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c (jane@example.com):\n  donotbulkemail   false -> true\n"
        );
        assert!(describe_changes(Some("jane@example.com"), &after, &after)
            .contains("no mapped column changed"));
        assert!(describe_changes(Some("x@example.com"), &[], &[]).contains("nothing changed"));
        assert!(describe_changes(Some("x@example.com"), &[], &after).contains("was created"));
    }
}
