//! Drift without an export: the contacts modified in the last 24 hours
//! (newest first, at most `WATCH_SAMPLE`), each against its Didomi user,
//! looked up several at a time. A contact changed in Dynamics is where a
//! disabled step or a direct import shows first.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::task::JoinSet;

use super::{Clients, Report, Settings, REPORT_RESERVE};
use crate::dataverse::bulk::Row;
use crate::dataverse::bulk::{Bulk, CONTACTS};
use crate::didomi::DidomiUser;
use crate::mapping::columns_from_consents;
use crate::reconcile::writes::{BulkWriter, DEFAULT_BATCH_SIZE, DIDOMI_IN_FLIGHT};
use crate::reconcile::{drift, guard_of, stamped, Counts, Drift};
use crate::{Config, Deadline};

/// Lookups that may fail before the run stops asking: Didomi is then down
/// or refusing, and a thousand more failures would say nothing new.
const FAILED_LOOKUPS: usize = 10;

/// What one lookup gives back: the contact, and its Didomi user if any.
type Looked = (
    String,
    Map<String, Value>,
    Result<Option<DidomiUser>, String>,
);

pub(super) async fn drift_of_recent_contacts(
    config: &Arc<Config>,
    clients: &Clients,
    settings: &Settings,
    deadline: Deadline,
    since: i64,
    report: &mut Report,
) {
    report.drift_source = "recently modified contacts".into();
    let mut columns: Vec<&str> = config.columns_to_dynamics().collect();
    if let Some(guard) = config.sync_timestamp_column.as_deref() {
        columns.push(guard);
    }
    let contacts = match clients
        .dataverse
        .session(config, deadline)
        .contacts_modified_since(since, &columns, settings.sample)
        .await
    {
        Ok(contacts) => contacts,
        Err(e) => {
            report.unchecked.push(format!(
                "the recently modified contacts could not be read: {e}"
            ));
            return;
        }
    };
    let counts = Arc::new(Counts::default());
    let mut repairs = BulkWriter::new(
        config.clone(),
        clients.dataverse.clone(),
        counts.clone(),
        DEFAULT_BATCH_SIZE,
        Bulk::Update(CONTACTS),
        deadline,
    );
    let mut lookups: JoinSet<Looked> = JoinSet::new();
    let mut contacts = contacts.into_iter();
    loop {
        // Keep a few lookups going; start no new one the deadline cannot fit.
        while lookups.len() < DIDOMI_IN_FLIGHT {
            if deadline.remaining() < REPORT_RESERVE + Duration::from_secs(1)
                || report.unchecked.len() >= FAILED_LOOKUPS
            {
                if contacts.len() > 0 {
                    report.partial = true;
                }
                break;
            }
            let Some(contact) = contacts.next() else {
                break;
            };
            let Some(key) = contact
                .columns
                .get(&config.contact_key)
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            let (config, didomi) = (config.clone(), clients.didomi.clone());
            lookups.spawn(async move {
                let user = didomi
                    .session(&config, deadline)
                    .find_user(&key)
                    .await
                    .map_err(|e| config.pseudonyms().redact(&e.to_string(), &key));
                (contact.id, contact.columns, user)
            });
        }
        let Some(looked) = lookups.join_next().await else {
            break;
        };
        let (id, current, user) = match looked {
            Ok(looked) => looked,
            Err(e) => {
                report.unchecked.push(format!("a lookup stopped: {e}"));
                continue;
            }
        };
        let user = match user {
            Ok(Some(user)) => user,
            Ok(None) => {
                report.contacts_checked += 1;
                report.contacts_without_didomi_user += 1;
                continue;
            }
            Err(e) => {
                report.unchecked.push(format!(
                    "contact {id}: its Didomi user could not be read: {e}"
                ));
                continue;
            }
        };
        report.contacts_checked += 1;
        let desired = columns_from_consents(&config.mappings, &user.consents);
        let guard = guard_of(config, &user);
        let Drift::Differs(changes) = drift(&desired, &current, guard) else {
            continue;
        };
        report.contacts_differing += 1;
        if settings.repair {
            let row = Row {
                id: Some(id.clone()),
                columns: stamped(changes, guard),
            };
            repairs.push(row, format!("contact {id}")).await;
        }
    }
    repairs.finish().await;
    report.contacts_repaired = repairs.written;
    report.problems.extend(
        repairs
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.subject, f.reason)),
    );
}
