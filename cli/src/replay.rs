//! `consent-sync replay [--queue URL] [--dry-run]`: drains the parked
//! deliveries. A replay never re-applies a parked payload (there is none):
//! it reads the current truth from the source — the Didomi user, or the
//! contact — and applies it through the functions' own code, so that a
//! replay after a newer change is harmless. A record is deleted only once
//! applied or found to need nothing; a failure stays queued with its reason.

use std::collections::HashSet;

use std::collections::BTreeSet;

use consent_sync::consents::{Consents, PreferenceChoice};
use consent_sync::dataverse::consent_records::{RecordWrites, Resolved};
use consent_sync::dataverse::DataverseClient;
use consent_sync::didomi::deliveries::{ConsentChange, Scope};
use consent_sync::didomi::DidomiClient;
use consent_sync::didomi_to_dynamics::{apply, differences, Outcome};
use consent_sync::dynamics_to_didomi::consent_event_for_record;
use consent_sync::mapping::{
    columns_differing_from_didomi, columns_from_consents, consents_for_changes,
};
use consent_sync::parking::{ParkedDelivery, DIDOMI_TO_DYNAMICS, DYNAMICS_TO_DIDOMI};
use consent_sync::{Config, RetryPolicy};
use serde_json::{json, Value};

use crate::report::Report;

/// How long a received record stays hidden from other readers while this
/// run works on it; a record that fails shows again after it.
const VISIBILITY_SECONDS: i32 = 300;

struct Clients {
    dataverse: DataverseClient,
    didomi: DidomiClient,
    /// The consent purposes and topics, when consent records are configured.
    resolved: Option<Resolved>,
}

fn sqs_error<E>(error: aws_sdk_sqs::error::SdkError<E>) -> String
where
    E: std::error::Error + 'static,
{
    format!(
        "the parked queue: {}",
        aws_sdk_sqs::error::DisplayErrorContext(error)
    )
}

pub async fn run(config: &Config, queue: Option<String>, dry_run: bool) -> Result<Report, String> {
    let queue = queue
        .or_else(|| std::env::var(consent_sync::parking::PARKED_QUEUE_URL).ok())
        .filter(|q| !q.trim().is_empty())
        .ok_or("no queue: pass --queue URL or set PARKED_QUEUE_URL (the stack's ParkedQueueUrl output)")?;
    let aws = consent_sync::tls::aws_sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let http = consent_sync::http_client();
    let dataverse = DataverseClient::new(http.clone(), RetryPolicy::default());
    let resolved = match &config.contact_point_consent {
        None => None,
        Some(section) => Some(
            dataverse
                .session(config, crate::deadline())
                .resolve_consent(section)
                .await
                .and_then(|r| r.into_resolved())
                .map_err(|e| e.to_string())?,
        ),
    };
    let clients = Clients {
        dataverse,
        didomi: DidomiClient::new(http, RetryPolicy::default()),
        resolved,
    };
    let pseudonyms = config.pseudonyms();

    let mut seen = HashSet::new();
    let mut results = Vec::new();
    let (mut done, mut failed) = (0usize, 0usize);
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .visibility_timeout(VISIBILITY_SECONDS)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(sqs_error)?;
        let messages = received.messages.unwrap_or_default();
        let mut new = 0;
        for message in messages {
            let id = message.message_id.clone().unwrap_or_default();
            if !seen.insert(id) {
                // Received again in a dry run: make it visible again too.
                if dry_run {
                    sqs.change_message_visibility()
                        .queue_url(&queue)
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .visibility_timeout(0)
                        .send()
                        .await
                        .map_err(sqs_error)?;
                }
                continue;
            }
            new += 1;
            let receipt = message.receipt_handle.clone().unwrap_or_default();
            let record: Result<ParkedDelivery, String> =
                serde_json::from_str(message.body().unwrap_or_default())
                    .map_err(|_| "not a parked delivery record; left in the queue".to_string());
            let who = match &record {
                Ok(r) => r
                    .organization_user_id
                    .as_deref()
                    .map(|u| format!("user {}", pseudonyms.of(u)))
                    .or_else(|| r.contact_id.as_ref().map(|c| format!("contact {c}")))
                    .unwrap_or_else(|| "?".into()),
                Err(_) => "?".into(),
            };
            let outcome = match record {
                Ok(record) => replay_one(config, &clients, &record, dry_run).await,
                Err(reason) => Err(reason),
            };
            match &outcome {
                Ok(what) => {
                    done += 1;
                    if dry_run {
                        sqs.change_message_visibility()
                            .queue_url(&queue)
                            .receipt_handle(&receipt)
                            .visibility_timeout(0)
                            .send()
                            .await
                            .map_err(sqs_error)?;
                    } else {
                        sqs.delete_message()
                            .queue_url(&queue)
                            .receipt_handle(&receipt)
                            .send()
                            .await
                            .map_err(sqs_error)?;
                    }
                    eprintln!("replay: {who}: {what}");
                }
                Err(reason) => {
                    failed += 1;
                    eprintln!("replay: {who}: FAILED, stays queued: {reason}");
                }
            }
            results.push(json!({"record": who, "ok": outcome.is_ok(),
                "result": outcome.unwrap_or_else(|e| e)}));
        }
        if new == 0 {
            break;
        }
    }
    let verb = if dry_run {
        "would be replayed"
    } else {
        "replayed"
    };
    let text = format!(
        "{done} parked deliver{} {verb}, {failed} failed{}\n",
        if done == 1 { "y" } else { "ies" },
        if failed > 0 {
            " (still queued: run replay again once the cause is fixed)"
        } else {
            ""
        }
    );
    Ok(Report {
        text,
        json: json!({"replayed": done, "failed": failed, "dry_run": dry_run, "records": results}),
        ok: failed == 0,
        reason: (failed > 0).then(|| format!("{failed} parked deliveries could not be replayed")),
    })
}

async fn replay_one(
    config: &Config,
    clients: &Clients,
    record: &ParkedDelivery,
    dry_run: bool,
) -> Result<String, String> {
    let deadline = crate::deadline();
    match record.direction.as_str() {
        DIDOMI_TO_DYNAMICS => {
            let user_id = record
                .organization_user_id
                .as_deref()
                .ok_or("the record names no organization_user_id")?;
            let user = clients
                .didomi
                .session(config, deadline)
                .find_user(user_id)
                .await
                .map_err(|e| config.pseudonyms().redact(&e.to_string(), user_id))?;
            let Some(user) = user else {
                return Ok("Didomi has no such user any more: nothing to apply".into());
            };
            let change = ConsentChange {
                kind: "replay".into(),
                scope: Scope::User,
                organization_user_id: Some(user_id.to_string()),
                consents: user.consents,
                status: None,
                regulation: Some(config.didomi.regulation.clone()),
                delegate_id: None,
                changed_at: user
                    .updated_at
                    .as_deref()
                    .and_then(consent_sync::time::parse_utc_seconds),
                delivery_id: None,
                delivery_time: user.updated_at,
            };
            if dry_run {
                let desired = columns_from_consents(&config.mappings, &change.consents);
                let columns: Vec<&str> = desired.keys().map(String::as_str).collect();
                let contacts = clients
                    .dataverse
                    .session(config, deadline)
                    .find_contacts(user_id, &columns)
                    .await
                    .map_err(|e| config.pseudonyms().redact(&e.to_string(), user_id))?;
                let differing = contacts
                    .iter()
                    .filter(|c| !differences(&desired, &c.columns).is_empty())
                    .count();
                return Ok(format!(
                    "would bring {differing} of {} contact(s) to Didomi's current state",
                    contacts.len()
                ));
            }
            let outcome = apply(
                config,
                &clients.dataverse,
                clients.resolved.as_ref(),
                &change,
                deadline,
            )
            .await
            .map_err(|e| config.pseudonyms().redact(&e.to_string(), user_id))?;
            let records = |r: RecordWrites| {
                if r.any() {
                    format!(
                        "; consent records: {} created, {} updated",
                        r.created, r.updated
                    )
                } else {
                    String::new()
                }
            };
            Ok(match outcome {
                Outcome::Updated {
                    contacts,
                    columns,
                    records: written,
                } => format!(
                    "updated {contacts} contact(s): {}{}",
                    columns.into_iter().collect::<Vec<_>>().join(", "),
                    records(written)
                ),
                Outcome::Created {
                    contact_id,
                    records: written,
                } => format!("created contact {contact_id}{}", records(written)),
                Outcome::Skipped { reason } => format!("nothing to apply: {reason}"),
            })
        }
        DYNAMICS_TO_DIDOMI if record.consent_record_id.is_some() => {
            let id = record.consent_record_id.as_deref().unwrap_or_default();
            replay_consent_record(config, clients, id, dry_run, deadline).await
        }
        DYNAMICS_TO_DIDOMI => {
            let contact_id = record
                .contact_id
                .as_deref()
                .ok_or("the record names no contact_id")?;
            let mut select: Vec<&str> = config.columns_to_didomi().collect();
            select.push(&config.contact_key);
            let contact = clients
                .dataverse
                .session(config, deadline)
                .get_contact(contact_id, &select)
                .await
                .map_err(|e| e.to_string())?;
            let Some(contact) = contact else {
                return Ok("the contact no longer exists: nothing to send".into());
            };
            let user_id = match contact.columns.get(&config.contact_key) {
                Some(Value::String(u)) if !u.trim().is_empty() => u.trim().to_string(),
                _ => return Ok("the contact has no key value: nothing to send".into()),
            };
            // Compared with Didomi's current choices, as reconcile compares:
            // the contact may hold defaults nobody chose.
            let didomi = clients.didomi.session(config, deadline);
            let user = didomi
                .find_user(&user_id)
                .await
                .map_err(|e| config.pseudonyms().redact(&e.to_string(), &user_id))?;
            let Some(user) = user else {
                return Ok("Didomi has no such user: nothing to compare, nothing sent".into());
            };
            let differing =
                columns_differing_from_didomi(&config.mappings, &user.consents, &contact.columns);
            if differing.is_empty() {
                return Ok("Didomi already holds the contact's choices".into());
            }
            let changed = differing.keys().cloned().collect();
            let consents = consents_for_changes(&config.mappings, &changed, &contact.columns)
                .map_err(|e| format!("cannot be expressed in Didomi: {e}"))?;
            let what: Vec<String> = consents
                .purposes
                .iter()
                .map(|p| p.id.clone())
                .chain(consents.channels.iter().map(|c| c.id.clone()))
                .collect();
            if dry_run {
                return Ok(format!(
                    "would send the contact's current {}",
                    what.join(", ")
                ));
            }
            // The user id as Didomi spells it.
            let spelled = user.organization_user_id.unwrap_or(user_id);
            didomi
                .create_consent_event(&spelled, &consents)
                .await
                .map_err(|e| config.pseudonyms().redact(&e.to_string(), &spelled))?;
            Ok(format!("sent the contact's current {}", what.join(", ")))
        }
        other => Err(format!("unknown direction {other:?}")),
    }
}

/// A parked change of a Contact Point Consent record: the record as it is
/// now, turned into the event the function would send, sent unless Didomi
/// already holds that choice.
async fn replay_consent_record(
    config: &Config,
    clients: &Clients,
    id: &str,
    dry_run: bool,
    deadline: consent_sync::Deadline,
) -> Result<String, String> {
    let (Some(section), Some(resolved)) = (&config.contact_point_consent, &clients.resolved) else {
        return Err(
            "a consent record was parked, but contact_point_consent is not configured".into(),
        );
    };
    let session = clients.dataverse.session(config, deadline);
    let Some(current) = session
        .consent_record(id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok("the consent record no longer exists: nothing to send".into());
    };
    let (user_id, consents) =
        match consent_event_for_record(&session, config, section, resolved, &current)
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(event) => event,
            Err(reason) => return Ok(format!("nothing to send: {reason}")),
        };
    let didomi = clients.didomi.session(config, deadline);
    let user = didomi
        .find_user(&user_id)
        .await
        .map_err(|e| config.pseudonyms().redact(&e.to_string(), &user_id))?;
    if let Some(user) = &user {
        if holds(&user.consents, &consents) {
            return Ok("Didomi already holds the record's choice".into());
        }
    }
    let what: Vec<&str> = consents.purposes.iter().map(|p| p.id.as_str()).collect();
    if dry_run {
        return Ok(format!(
            "would send the record's current {}",
            what.join(", ")
        ));
    }
    let spelled = user.and_then(|u| u.organization_user_id).unwrap_or(user_id);
    didomi
        .create_consent_event(&spelled, &consents)
        .await
        .map_err(|e| config.pseudonyms().redact(&e.to_string(), &spelled))?;
    Ok(format!("sent the record's current {}", what.join(", ")))
}

/// Whether Didomi's choices already hold every choice of `event`.
fn holds(current: &Consents, event: &Consents) -> bool {
    event.purposes.iter().all(|wanted| {
        let Some(held) = current.purpose(&wanted.id) else {
            return false;
        };
        let enabled = wanted.enabled.is_none() || wanted.enabled == held.enabled;
        let values = wanted.values.iter().all(|(preference, choice)| {
            let set = |c: Option<&PreferenceChoice>| {
                c.map(|c| c.selected().map(str::to_string).collect::<BTreeSet<_>>())
                    .unwrap_or_default()
            };
            set(Some(choice)) == set(held.values.get(preference))
        });
        enabled && values
    })
}
