//! The `didomi-to-dynamics` function: a Didomi webhook delivery becomes
//! updates of the matching Dataverse contacts.

use std::collections::BTreeSet;
use std::time::Instant;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::{json, Map, Value};

use crate::config::{Config, ConfigError};
use crate::contact_point_consent::{wanted_values, ContactPoint};
use crate::dataverse::consent_records::{reason, RecordWrites, Resolved};
use crate::dataverse::{DataverseClient, DataverseError};
use crate::didomi::deliveries::{parse_delivery, ConsentChange, Delivery};
use crate::flows::Outcome;
use crate::function::Setup;
use crate::gateway::{authenticate_didomi, body_bytes, json_response, rejected, Rejection};
use crate::mapping::{columns_from_consents, differences};
use crate::parking::{failure_response, now_utc, park_failure, ParkedDelivery, DIDOMI_TO_DYNAMICS};
use crate::retry::Deadline;
use crate::time::{iso_utc, parse_utc_seconds};

/// What the function keeps between invocations: the configuration and the
/// Dataverse client with its token and connections.
#[derive(Debug)]
pub struct DidomiToDynamics {
    pub setup: Setup,
}

impl DidomiToDynamics {
    /// From the Lambda environment; the secret is read on the first
    /// invocation.
    pub async fn from_env() -> Result<Self, ConfigError> {
        Ok(DidomiToDynamics {
            setup: Setup::from_env().await?,
        })
    }

    pub fn new(source: crate::config_source::ConfigSource, ttl: std::time::Duration) -> Self {
        DidomiToDynamics {
            setup: Setup::new(source, ttl),
        }
    }
}

impl crate::function::Function for DidomiToDynamics {
    /// Handles one HTTP request. A configuration that cannot be loaded fails
    /// the invocation itself (`Err`), so that it shows as a function error
    /// naming the field; every other failure is an HTTP answer.
    async fn handle(
        &self,
        request: &ApiGatewayV2httpRequest,
        deadline: Deadline,
    ) -> Result<ApiGatewayV2httpResponse, ConfigError> {
        let started = Instant::now();
        let config = match self.setup.accept(request, started).await? {
            Ok(config) => config,
            Err(answer) => return Ok(answer),
        };
        config
            .check_didomi_webhook()
            .inspect_err(|e| tracing::error!(error = %e, "configuration"))?;
        let change = match authenticate_didomi(request, &config.didomi_webhook)
            .and_then(|()| body_bytes(request))
            .and_then(|body| parse_delivery(&body).map_err(|e| Rejection::new(400, e.0)))
        {
            Ok(Delivery::Change(change)) => change,
            Ok(Delivery::Deleted { kind }) => {
                let outcome = Outcome::skipped(format!("{kind}: deletions are not synced"));
                return Ok(answered(&kind, None, &outcome, started));
            }
            Err(rejection) => return Ok(rejected(rejection, started)),
        };
        let pseudonyms = config.pseudonyms();
        let user = change
            .organization_user_id
            .as_deref()
            .map(|id| pseudonyms.of(id));
        let result = match self
            .setup
            .resolved
            .get(&config, &self.setup.dataverse, deadline)
            .await
        {
            Ok(resolved) => {
                apply(
                    &config,
                    &self.setup.dataverse,
                    resolved.as_deref(),
                    &change,
                    deadline,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(outcome) => Ok(answered(&change.kind, user.as_deref(), &outcome, started)),
            Err(error) => {
                let message = pseudonyms.redact(
                    &error.to_string(),
                    change.organization_user_id.as_deref().unwrap_or_default(),
                );
                let status = crate::gateway::status_for(error.failure());

                let record = ParkedDelivery {
                    direction: DIDOMI_TO_DYNAMICS.into(),
                    organization_user_id: change.organization_user_id.clone(),
                    contact_id: None,
                    consent_record_id: None,
                    columns: None,
                    delivery_id: change.delivery_id.clone(),
                    delivery_time: change.delivery_time.clone(),
                    error_class: error.error_class().into(),
                    parked_at: now_utc(),
                };
                let parked = park_failure(&self.setup.parking, error.is_transient(), record).await;
                // Parked is handled, only later: a warning. Not parked is
                // a delivery resting on the sender's retries: an error.
                if parked.is_parked() {
                    tracing::warn!(
                        kind = %change.kind,
                        user = user.as_deref().unwrap_or("-"),
                        status = 202,
                        error = %message,
                        error_class = error.error_class(),
                        parked = %parked.describe(),
                        duration_ms = started.elapsed().as_millis() as u64,
                        "delivery failed; parked for the drain"
                    );
                } else {
                    tracing::error!(
                        kind = %change.kind,
                        user = user.as_deref().unwrap_or("-"),
                        status,
                        error = %message,
                        error_class = error.error_class(),
                        parked = %parked.describe(),
                        duration_ms = started.elapsed().as_millis() as u64,
                        "delivery failed; not acknowledged"
                    );
                }
                Ok(failure_response(
                    status,
                    &message,
                    error.error_class(),
                    &parked,
                ))
            }
        }
    }

    fn setup(&self) -> &Setup {
        &self.setup
    }
}

fn answered(
    kind: &str,
    user: Option<&str>,
    outcome: &Outcome,
    started: Instant,
) -> ApiGatewayV2httpResponse {
    let columns = match outcome {
        Outcome::Updated { columns, .. } => Some(json!(columns).to_string()),
        _ => None,
    };
    crate::metrics::count(outcome.name());
    tracing::info!(
        kind,
        user = user.unwrap_or("-"),
        outcome = outcome.name(),
        reason = outcome.reason(),
        columns,
        duration_ms = started.elapsed().as_millis() as u64,
        "delivery handled"
    );
    json_response(200, &outcome.to_json())
}

/// Brings the matching contacts, and the consent records of the address
/// when `contact_point_consent` is configured (`resolved` then holds its
/// purposes and topics), in line with the delivery.
pub async fn apply(
    config: &Config,
    dataverse: &DataverseClient,
    resolved: Option<&Resolved>,
    change: &ConsentChange,
    deadline: Deadline,
) -> Result<Outcome, DataverseError> {
    if !change.is_confirmed() {
        let status = change.status.as_deref().unwrap_or_default();
        return Ok(Outcome::skipped(format!(
            "the event is not confirmed (status {})",
            crate::input::shown(status, crate::input::EVENT_STATUSES, "status")
        )));
    }
    let regulation = change
        .regulation
        .as_deref()
        .unwrap_or(crate::config::DEFAULT_REGULATION);
    if !regulation.eq_ignore_ascii_case(&config.didomi.regulation) {
        return Ok(Outcome::skipped(format!(
            "regulation {} is not the configured {:?}",
            crate::input::shown(regulation, crate::input::REGULATIONS, "regulation"),
            config.didomi.regulation
        )));
    }
    if change.is_own_echo() {
        return Ok(Outcome::skipped(
            "written by consent-sync from Dynamics; not synced back",
        ));
    }
    let Some(user_id) = change.organization_user_id.as_deref() else {
        return Ok(Outcome::skipped("the delivery has no organization_user_id"));
    };
    let desired = columns_from_consents(&config.mappings, &change.consents);
    let records = config.contact_point_consent.as_ref().zip(resolved);
    let wanted = records
        .map(|(section, _)| wanted_values(section, &change.consents))
        .unwrap_or_default();
    if desired.is_empty() && wanted.is_empty() {
        return Ok(Outcome::skipped(
            "no mapped purpose or channel has a choice in this delivery",
        ));
    }
    let session = dataverse.session(config, deadline);
    // The contact column that holds the address, when records take it from there.
    let address_column = records.and_then(|(section, _)| match &section.contact_point {
        ContactPoint::Column(column) if !wanted.is_empty() => Some(column.as_str()),
        _ => None,
    });

    let (contacts_outcome, contacts) = if desired.is_empty() {
        let contacts = match address_column {
            Some(column) => session.find_contacts(user_id, &[column]).await?,
            None => Vec::new(),
        };
        (None, contacts)
    } else {
        let (outcome, contacts) = apply_to_contacts(
            config,
            &session,
            change.changed_at,
            user_id,
            desired,
            address_column,
        )
        .await?;
        (Some(outcome), contacts)
    };
    let stale = matches!(&contacts_outcome, Some(ContactsOutcome::Stale));

    let mut writes = RecordWrites::default();
    let mut no_address = false;
    if let (Some((section, resolved)), false, false) = (records, wanted.is_empty(), stale) {
        let addresses: Vec<String> = match address_column {
            None => vec![user_id.to_string()],
            Some(column) => {
                let mut found: Vec<String> = contacts
                    .iter()
                    .filter_map(|c| c.columns.get(column)?.as_str())
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect();
                found.sort_by_key(|a| a.to_lowercase());
                found.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
                found
            }
        };
        no_address = addresses.is_empty();
        let reason = reason(&change.describe());
        for address in &addresses {
            // One read per address, whatever the number of records.
            let existing = session.consent_records(address, section.channel).await?;
            writes.add(
                session
                    .write_consent_records(section, resolved, address, &existing, &wanted, &reason)
                    .await?,
            );
        }
    }

    Ok(match contacts_outcome {
        Some(ContactsOutcome::Updated { contacts, columns }) => Outcome::Updated {
            contacts,
            columns,
            records: writes,
        },
        Some(ContactsOutcome::Created { contact_id }) => Outcome::Created {
            contact_id,
            records: writes,
        },
        _ if writes.any() => Outcome::Updated {
            contacts: 0,
            columns: BTreeSet::new(),
            records: writes,
        },
        Some(ContactsOutcome::Skipped(reason)) if wanted.is_empty() => Outcome::skipped(reason),
        Some(ContactsOutcome::Skipped(reason)) => {
            Outcome::skipped(format!("{reason}; the consent records are up to date"))
        }
        Some(ContactsOutcome::Stale) => Outcome::skipped(
            "not newer than the change already applied to the contact (stale or redelivered)",
        ),
        None if no_address => {
            Outcome::skipped("no matching contact has an address for the consent records")
        }
        None => Outcome::skipped("the consent records are already up to date"),
    })
}

/// What became of the contacts of a delivery.
pub(crate) enum ContactsOutcome {
    Updated {
        contacts: usize,
        columns: BTreeSet<String>,
    },
    Created {
        contact_id: String,
    },
    /// Every contact already holds a change at least as new.
    Stale,
    Skipped(String),
}

/// Brings the contacts whose key is `user_id` in line with `desired`;
/// returns them too (with `address_column` read), for the consent records.
pub(crate) async fn apply_to_contacts(
    config: &Config,
    session: &crate::dataverse::Dataverse<'_>,
    changed_at: Option<i64>,
    user_id: &str,
    desired: Map<String, Value>,
    address_column: Option<&str>,
) -> Result<(ContactsOutcome, Vec<crate::dataverse::Contact>), DataverseError> {
    // The stale-event guard: the change's own time, against the time of the
    // last change applied to each contact.
    let guard = config.sync_timestamp_column.as_deref().zip(changed_at);
    let mut columns: Vec<&str> = desired.keys().map(String::as_str).collect();
    columns.extend(guard.map(|(column, _)| column));
    columns.extend(address_column);
    let mut contacts = session.find_contacts(user_id, &columns).await?;

    if contacts.is_empty() {
        if !config.upsert_mode {
            let reason = "no contact matches and upsert_mode is off";
            return Ok((ContactsOutcome::Skipped(reason.into()), contacts));
        }
        let mut fields = desired.clone();
        fields.insert(
            config.contact_key.clone(),
            Value::String(user_id.to_string()),
        );
        if let Some((column, at)) = guard {
            fields.insert(column.to_string(), Value::String(iso_utc(at)));
        }
        match session.create_contact_once(user_id, &fields).await? {
            Some(contact_id) => {
                let created = crate::dataverse::Contact {
                    id: contact_id.clone(),
                    columns: fields,
                };
                return Ok((ContactsOutcome::Created { contact_id }, vec![created]));
            }
            // Another delivery created the person meanwhile: this one is an
            // update of that contact, with the same comparison and guard.
            None => {
                contacts = session.find_contacts(user_id, &columns).await?;
                if contacts.is_empty() {
                    return Err(DataverseError::BadAnswer(
                        "a contact refused as a duplicate could not be found by its key".into(),
                    ));
                }
            }
        }
    }

    let mut updated = 0;
    let mut stale = 0;
    let mut changed_columns = BTreeSet::new();
    for contact in &contacts {
        let mut changes = differences(&desired, &contact.columns);
        if let Some((column, at)) = guard {
            let applied = contact
                .columns
                .get(column)
                .and_then(Value::as_str)
                .and_then(parse_utc_seconds);
            // Dataverse keeps whole seconds: an equal time is not newer.
            if applied.is_some_and(|applied| applied >= at) {
                stale += 1;
                continue;
            }
            // Written even when nothing else differs, so that an older
            // event arriving later is recognised as older.
            changes.insert(column.to_string(), Value::String(iso_utc(at)));
        }
        if changes.is_empty() {
            continue;
        }
        session.update_contact(&contact.id, &changes).await?;
        updated += 1;
        changed_columns.extend(changes.keys().cloned());
    }
    let outcome = if updated > 0 {
        ContactsOutcome::Updated {
            contacts: updated,
            columns: changed_columns,
        }
    } else if stale == contacts.len() {
        ContactsOutcome::Stale
    } else {
        ContactsOutcome::Skipped("the contact is already up to date".into())
    };
    Ok((outcome, contacts))
}
