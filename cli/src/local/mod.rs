//! `consent-sync local`: both functions on this machine, each behind a local
//! API Gateway, against the simulators (or a real environment with
//! `--config`). On the simulators it shows the whole loop: a Didomi delivery
//! updates a contact, the webhook that write fires is recognised as
//! consent-sync's own; a person's edit reaches Didomi as one consent event,
//! whose delivery back is recognised as an echo.

mod first_day;
mod outage;
mod watch;

use crate::error::CliError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use consent_sync::config::WebhookAuthMode;
use consent_sync::dataverse::Contact;
use consent_sync::didomi::deliveries::{parse_delivery, Delivery};
use consent_sync::function::Function;
use consent_sync::{Config, ConfigSource, Deadline, DidomiToDynamics, DynamicsToDidomi};
use consent_sync_sim::gateway::{Gateway, Handler};
use consent_sync_sim::{sample_contacts, Identity, Simulator};
use serde_json::{json, Map, Value};

/// The delivery replayed when no `--event` is given.
pub const SAMPLE_DELIVERY: &str = include_str!("../../../events/didomi-user-updated.json");

/// Lambda's default timeout for the function in `template.yaml`.
const INVOCATION_BUDGET: Duration = Duration::from_secs(30);

pub struct Options {
    pub config: Option<PathBuf>,
    pub event: Option<PathBuf>,
    pub port: u16,
    pub serve: bool,
    /// Where the functions' log lines go, to name at the start.
    pub log: Option<PathBuf>,
}

/// Lets the local gateway invoke a function, each request with Lambda's budget.
pub fn gateway_handler<F>(function: Arc<F>) -> Handler
where
    F: Function + Send + Sync + 'static,
{
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

pub async fn run(options: Options) -> Result<(), CliError> {
    let (simulator, config_text) = match &options.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))?;
            (None, text)
        }
        None => {
            let simulator = Simulator::start(Identity::default(), sample_contacts())
                .await
                .map_err(|e| CliError::Local(format!("cannot start the simulator: {e}")))?;
            let text = simulator.config().to_string();
            (Some(simulator), text)
        }
    };
    let config = Config::from_json(&config_text)
        .and_then(|config| config.check_didomi_webhook().map(|()| config))?;
    let function = Arc::new(DidomiToDynamics::new(
        ConfigSource::Inline(config_text.clone()),
        Duration::from_secs(300),
    ));
    let reverse = Arc::new(DynamicsToDidomi::new(
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
    .map_err(|e| CliError::Local(format!("cannot listen on 127.0.0.1:{}: {e}", options.port)))?;
    let reverse_port = if options.port == 0 {
        0
    } else {
        options.port + 1
    };
    let reverse_gateway = Gateway::start(
        SocketAddr::from(([127, 0, 0, 1], reverse_port)),
        gateway_handler(reverse.clone()),
        None,
    )
    .await
    .map_err(|e| CliError::Local(format!("cannot listen on 127.0.0.1:{reverse_port}: {e}")))?;

    match &simulator {
        Some(sim) => println!(
            "Dataverse, Entra ID and Didomi simulator: {} (sample contacts loaded)",
            sim.url
        ),
        None => println!(
            "Dataverse environment: {}",
            config.dataverse.server_instance
        ),
    }
    println!(
        "didomi-to-dynamics endpoint:      {}/  (POST Didomi webhook deliveries here)",
        gateway.url
    );
    println!(
        "dynamics-to-didomi endpoint:      {}/  (POST Dataverse webhook deliveries here)",
        reverse_gateway.url
    );
    if let Some(log) = &options.log {
        println!("the functions' log lines:         {}", log.display());
    }
    if let Some(sim) = &simulator {
        // As an operator would: `consent-sync webhook register`, and the
        // Didomi console's webhook pointed at didomi-to-dynamics.
        sim.deliver_didomi_webhooks_to(&format!("{}/", gateway.url));
        crate::webhook::register(
            &config,
            consent_sync::dataverse::registration::DEFAULT_NAME,
            &format!("{}/", reverse_gateway.url),
        )
        .await?;
    }

    let delivery = match &options.event {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))?,
        None => SAMPLE_DELIVERY.to_string(),
    };
    let user = match parse_delivery(delivery.as_bytes()) {
        Ok(Delivery::Change(change)) => change.organization_user_id,
        _ => None,
    };

    let before = read_contacts(&function, &config, user.as_deref()).await?;
    let (status, body) = replay(&gateway.url, &delivery).await?;
    if let Some(sim) = &simulator {
        sim.settle().await;
    }
    let after = read_contacts(&function, &config, user.as_deref()).await?;

    println!();
    println!(
        "1. Didomi -> Dynamics: replayed {} -> HTTP {status} {body}",
        options
            .event
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "events/didomi-user-updated.json".into())
    );
    print!("{}", describe_changes(user.as_deref(), &before, &after));
    if let Some(sim) = &simulator {
        let answers = answers(sim, &reverse_gateway.url, 0);
        if answers.is_empty() {
            println!("   No Dataverse webhook fired (no watched column was written).");
        }
        for answer in answers {
            println!("   The webhook this write fired -> dynamics-to-didomi: {answer}");
        }
        if let Some(contact) = after.first() {
            person_edit(sim, &config, contact, &gateway.url, &reverse_gateway.url).await?;
        }
        if options.event.is_none() {
            consent_records(sim).await?;
            outage::run(sim).await?;
            watch::run(sim, &config).await?;
            first_day::run(sim).await?;
        }
    }

    if options.serve {
        println!("\nServing until Ctrl-C. Try: curl -X POST {}/ -H 'content-type: application/json' --data @events/didomi-event-created.json", gateway.url);
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| CliError::Local(format!("cannot wait for Ctrl-C: {e}")))?;
    }
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(CliError::Local(format!(
            "the delivery was answered with HTTP {status}"
        )))
    }
}

/// The answers to the webhook deliveries sent to `url` so far, from the `skip`th on.
fn answers(sim: &Simulator, url: &str, skip: usize) -> Vec<String> {
    sim.deliveries_to(url)
        .into_iter()
        .skip(skip)
        .map(|d| match d.result {
            Ok((status, body)) => format!("HTTP {status} {body}"),
            Err(failure) => failure,
        })
        .collect()
}

/// Step 2 of the loop: a person flips the first mapped flag column of the
/// contact in Dynamics; the change goes to Didomi, and comes back as an echo.
async fn person_edit(
    sim: &Simulator,
    config: &Config,
    contact: &Contact,
    didomi_to_dynamics: &str,
    dynamics_to_didomi: &str,
) -> Result<(), CliError> {
    let Some((column, value)) = config
        .mappings
        .iter()
        .filter(|m| m.direction.to_didomi())
        .find_map(|m| match contact.columns.get(&m.column) {
            Some(Value::Bool(b)) => Some((m.column.clone(), json!(!b))),
            _ => None,
        })
    else {
        return Ok(());
    };
    let reverse_before = sim.deliveries_to(dynamics_to_didomi).len();
    let forward_before = sim.deliveries_to(didomi_to_dynamics).len();
    let events_before = sim.didomi_events().len();
    let writes_before = sim.writes().len();
    println!();
    println!(
        "2. Dynamics -> Didomi: a person sets {column} = {value} on contact {}",
        contact.id
    );
    sim.edit_contact_as_person(&contact.id, json!({ column: value }))
        .map_err(CliError::Local)?;
    sim.settle().await;
    for answer in answers(sim, dynamics_to_didomi, reverse_before) {
        println!("   Dataverse webhook -> dynamics-to-didomi: {answer}");
    }
    let events = sim.didomi_events();
    println!(
        "   Didomi recorded {} consent event(s):",
        events.len() - events_before
    );
    for event in &events[events_before..] {
        println!(
            "     consents {} delegate {}",
            event["consents"], event["delegate"]["id"]
        );
    }
    for answer in answers(sim, didomi_to_dynamics, forward_before) {
        println!("   Didomi webhook back -> didomi-to-dynamics: {answer}");
    }
    println!(
        "   Dataverse writes caused by the echo: {}",
        sim.writes().len() - writes_before
    );
    Ok(())
}

/// The sample `contact_point_consent` section of the local run: the
/// simulator's Journeys purposes and topics.
pub const LOCAL_CONSENT_SECTION: &str = r#"{
  "channel": "email",
  "purposes": [
    {"purpose": "newsletter", "consent_purpose": "Newsletter"},
    {"purpose": "marketing", "consent_purpose": "Commercial communications"}
  ],
  "topics": [
    {"purpose": "newsletter", "preference": "topics", "value": "sports", "consent_topic": "Sports"},
    {"purpose": "newsletter", "preference": "topics", "value": "news", "consent_topic": "News"}
  ]
}"#;

/// Step 3: the same deliveries with `contact_point_consent` configured land
/// in Customer Insights – Journeys' consent records, then a Didomi opt-out
/// updates the newsletter record in place.
async fn consent_records(sim: &Simulator) -> Result<(), CliError> {
    let mut config = sim.config();
    config["contact_point_consent"] =
        serde_json::from_str(LOCAL_CONSENT_SECTION).expect("valid JSON");
    let function = Arc::new(DidomiToDynamics::new(
        ConfigSource::Inline(config.to_string()),
        Duration::from_secs(300),
    ));
    let gateway = Gateway::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        gateway_handler(function),
        None,
    )
    .await
    .map_err(|e| CliError::Local(format!("cannot listen on 127.0.0.1: {e}")))?;
    let opt_out = {
        let mut event: Value =
            serde_json::from_str(include_str!("../../../events/didomi-event-created.json"))
                .expect("valid JSON");
        event["parameters"]["entity"]["consents"] =
            json!({"purposes": [{"id": "newsletter", "enabled": false}], "channels": []});
        event.to_string()
    };
    println!();
    println!("3. Customer Insights – Journeys: with contact_point_consent configured");
    for (what, delivery) in [
        (
            "events/didomi-user-updated.json",
            SAMPLE_DELIVERY.to_string(),
        ),
        ("a Didomi opt-out of the newsletter", opt_out),
    ] {
        let (status, body) = replay(&gateway.url, &delivery).await?;
        println!("   {what} -> HTTP {status} {body}");
        print!("{}", describe_records(sim));
    }
    Ok(())
}

/// The consent records of the simulator, one line each.
fn describe_records(sim: &Simulator) -> String {
    use consent_sync_sim::registration::{
        CONSENT_SET, PURPOSE_NEWSLETTER, TOPIC_NEWS, TOPIC_SPORTS,
    };
    let name = |id: &str| match id {
        PURPOSE_NEWSLETTER => "Newsletter",
        TOPIC_SPORTS => "Sports",
        TOPIC_NEWS => "News",
        _ => "Commercial communications",
    };
    let mut lines = String::new();
    for record in sim.rows(CONSENT_SET) {
        let text = |c: &str| {
            record
                .get(c)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (kind, subject) = match record
            .get("_msdynmkt_topicid_value")
            .and_then(Value::as_str)
        {
            Some(topic) => ("topic", name(topic)),
            None => ("purpose", name(&text("_msdynmkt_purposeid_value"))),
        };
        let value = match record.get("msdynmkt_value").and_then(Value::as_i64) {
            Some(534_120_001) => "Opted In",
            Some(534_120_002) => "Opted Out",
            _ => "Not Set",
        };
        lines.push_str(&format!(
            "     {:<24} {:<36} {value}\n",
            text("msdynmkt_contactpointvalue"),
            format!("{subject} ({kind})")
        ));
    }
    lines
}

async fn replay(url: &str, delivery: &str) -> Result<(u16, String), CliError> {
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("content-type", "application/json")
        .header("user-agent", "consent-sync-local")
        .body(delivery.to_string())
        .send()
        .await
        .map_err(|e| CliError::Local(format!("the local endpoint did not answer: {e}")))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}

async fn read_contacts(
    function: &DidomiToDynamics,
    config: &Config,
    user: Option<&str>,
) -> Result<Vec<Contact>, CliError> {
    let Some(user) = user else {
        return Ok(Vec::new());
    };
    let columns: Vec<&str> = config.columns_to_dynamics().collect();
    function
        .setup
        .dataverse
        .session(config, Deadline::after(INVOCATION_BUDGET))
        .find_contacts(user, &columns)
        .await
        .map_err(|e| CliError::Local(format!("cannot read the contact: {e}")))
}

/// What changed on the contacts of `user`, column by column.
pub fn describe_changes(user: Option<&str>, before: &[Contact], after: &[Contact]) -> String {
    let Some(user) = user else {
        return "   The delivery names no organization_user_id: no contact to show.\n".into();
    };
    if after.is_empty() {
        return format!("   No contact has the key {user:?}: nothing changed.\n");
    }
    let mut text = String::new();
    for contact in after {
        let previous = before.iter().find(|c| c.id == contact.id);
        match previous {
            None => text.push_str(&format!(
                "   Contact {} ({user}) was created:\n",
                contact.id
            )),
            Some(_) => text.push_str(&format!("   Contact {} ({user}):\n", contact.id)),
        }
        let mut changed = 0;
        for (column, value) in &contact.columns {
            let old = previous
                .and_then(|p| p.columns.get(column))
                .unwrap_or(&Value::Null);
            if previous.is_none() || old != value {
                changed += 1;
                match previous {
                    Some(_) => text.push_str(&format!("     {column:<16} {old} -> {value}\n")),
                    None => text.push_str(&format!("     {column:<16} {value}\n")),
                }
            }
        }
        if changed == 0 {
            text.push_str("     no mapped column changed\n");
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
            "   Contact 6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c (jane@example.com):\n     donotbulkemail   false -> true\n"
        );
        assert!(describe_changes(Some("jane@example.com"), &after, &after)
            .contains("no mapped column changed"));
        assert!(describe_changes(Some("x@example.com"), &[], &[]).contains("nothing changed"));
        assert!(describe_changes(Some("x@example.com"), &[], &after).contains("was created"));
    }
}
