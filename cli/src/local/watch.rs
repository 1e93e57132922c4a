//! Step 5 of the local run: the daily watch on the simulated environment.
//! A Dataverse import sets a consent column on a contact without any
//! webhook firing (as when a step is disabled); the watch finds the
//! contact differing from its Didomi user, repairs it from Didomi, and a
//! second run finds nothing.

use crate::error::CliError;
use std::sync::Arc;
use std::time::Duration;

use consent_sync::watch::{self, Clients, Settings};
use consent_sync::{Config, Deadline};
use consent_sync_sim::Simulator;
use serde_json::{json, Value};

pub async fn run(sim: &Simulator, config: &Config) -> Result<(), CliError> {
    let config = Arc::new(config.clone());
    let clients = Clients::new();
    let deadline = || Deadline::after(Duration::from_secs(60));
    // A contact with a Didomi user, and a flag column Didomi's state sets.
    let users: Vec<(String, Value)> = sim
        .state()
        .didomi
        .users
        .iter()
        .map(|u| {
            (
                u.organization_user_id.clone(),
                Value::Object(u.consents.clone()),
            )
        })
        .collect();
    let planted = users.iter().find_map(|(user, consents)| {
        let contact = sim
            .contacts_where(&config.contact_key, user)
            .into_iter()
            .next()?;
        let consents = serde_json::from_value(consents.clone()).ok()?;
        let desired = consent_sync::mapping::columns_from_consents(&config.mappings, &consents);
        desired.iter().find_map(|(column, wanted)| {
            let flipped = !wanted.as_bool()?;
            Some((contact["contactid"].clone(), column.clone(), flipped))
        })
    });
    let Some((id, column, value)) = planted else {
        return Ok(());
    };
    let id = id.as_str().unwrap_or_default().to_string();
    println!();
    println!(
        "5. The daily watch: an import sets {column} = {value} on contact {id}, no webhook fires"
    );
    sim.set_contact_columns(&id, json!({ column.clone(): value }));

    let report = watch::run(&config, &clients, &Settings::default(), deadline()).await;
    println!("   consent-sync watch:");
    for line in report.to_text().lines() {
        println!("     {line}");
    }
    let repair = Settings {
        repair: true,
        ..Settings::default()
    };
    let repaired = watch::run(&config, &clients, &repair, deadline()).await;
    println!(
        "   consent-sync watch --repair: ContactsRepaired: {}; the contact's {column} is {} again",
        repaired.contacts_repaired,
        sim.contact_by_id(&id)
            .and_then(|c| c.get(&column).cloned())
            .unwrap_or(Value::Null)
    );
    let again = watch::run(&config, &clients, &Settings::default(), deadline()).await;
    println!(
        "   consent-sync watch, once more: ContactsDiffering: {}",
        again.contacts_differing
    );
    if again.contacts_differing != 0 || report.contacts_differing == 0 {
        return Err(CliError::Local(
            "the watch did not find and repair the planted drift".into(),
        ));
    }
    Ok(())
}
