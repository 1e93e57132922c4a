//! `consent-sync reconcile [--from didomi|dynamics] [--apply] [--limit N]`:
//! the initial sync and the drift check. Pages through every contact with a
//! key value (the mapped columns only) and every Didomi user, matches them
//! by key as Dataverse does (case-insensitively), and reports what differs
//! per column. With `--apply` it writes the chosen side's state to the other
//! through the functions' own mapping and comparison. Each write stands
//! alone, so an interrupted run can simply be run again.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use consent_sync::dataverse::{Contact, DataverseClient};
use consent_sync::didomi::DidomiClient;
use consent_sync::didomi_to_dynamics::differences;
use consent_sync::mapping::{
    columns_differing_from_didomi, columns_from_consents, consents_for_changes,
};
use consent_sync::{Config, Deadline, RetryPolicy};
use serde_json::{json, Map, Value};

use crate::report::Report;

/// Contacts per page: large pages, since reads count against the same
/// service protection limits as writes.
const PAGE_SIZE: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Didomi,
    Dynamics,
}

pub struct Options {
    pub from: From,
    pub apply: bool,
    pub limit: Option<usize>,
}

/// Throttling must never fail a reconcile: more and longer waits than a
/// function can afford, each honouring `Retry-After`.
fn patient_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 12,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(60),
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(600))
}

#[derive(Default)]
struct Tally {
    users: usize,
    contacts: usize,
    matched: usize,
    differing: usize,
    per_column: BTreeMap<String, usize>,
    users_without_contact: usize,
    written: usize,
    created: usize,
    failed: Vec<String>,
}

pub async fn run(config: &Config, options: Options) -> Result<Report, String> {
    let started = Instant::now();
    let http = consent_sync::http_client();
    let dataverse_client = DataverseClient::new(http.clone(), patient_policy());
    let didomi_client = DidomiClient::new(http, patient_policy());
    let progress = std::io::stderr().is_terminal();
    let pseudonyms = config.pseudonyms();

    let columns: Vec<&str> = match options.from {
        From::Didomi => config.columns_to_dynamics().collect(),
        From::Dynamics => config.columns_to_didomi().collect(),
    };
    // Contacts by key, lower-cased as Dataverse compares.
    let mut by_key: HashMap<String, Vec<Contact>> = HashMap::new();
    let mut next: Option<String> = None;
    let mut tally = Tally::default();
    loop {
        let (page, link) = dataverse_client
            .session(config, deadline())
            .contacts_page(next.as_deref(), &columns, PAGE_SIZE)
            .await
            .map_err(|e| format!("reading contacts: {e}"))?;
        for contact in page {
            let Some(key) = contact
                .columns
                .get(&config.contact_key)
                .and_then(Value::as_str)
            else {
                continue;
            };
            tally.contacts += 1;
            by_key
                .entry(key.trim().to_lowercase())
                .or_default()
                .push(contact);
        }
        if progress {
            eprint!("\rreading contacts: {}", tally.contacts);
        }
        match link {
            Some(link) => next = Some(link),
            None => break,
        }
    }
    if progress {
        eprintln!();
    }

    let mut cursor: Option<String> = None;
    'users: loop {
        let (users, next_cursor) = didomi_client
            .session(config, deadline())
            .users_page(cursor.as_deref())
            .await
            .map_err(|e| format!("reading Didomi users: {e}"))?;
        for user in users {
            tally.users += 1;
            let Some(user_id) = user
                .organization_user_id
                .clone()
                .filter(|u| !u.trim().is_empty())
            else {
                continue;
            };
            let Some(contacts) = by_key.remove(&user_id.trim().to_lowercase()) else {
                tally.users_without_contact += 1;
                if options.from == From::Didomi && config.upsert_mode {
                    let desired = columns_from_consents(&config.mappings, &user.consents);
                    if !desired.is_empty() {
                        if options.limit.is_some_and(|l| tally.differing >= l) {
                            break 'users;
                        }
                        tally.differing += 1;
                        for column in desired.keys() {
                            *tally.per_column.entry(column.clone()).or_default() += 1;
                        }
                        if options.apply {
                            create(config, &dataverse_client, &user_id, desired, &mut tally).await;
                        }
                    }
                }
                continue;
            };
            for contact in contacts {
                tally.matched += 1;
                let changes = match options.from {
                    From::Didomi => differences(
                        &columns_from_consents(&config.mappings, &user.consents),
                        &contact.columns,
                    ),
                    From::Dynamics => columns_differing_from_didomi(
                        &config.mappings,
                        &user.consents,
                        &contact.columns,
                    ),
                };
                if changes.is_empty() {
                    continue;
                }
                if options.limit.is_some_and(|l| tally.differing >= l) {
                    break 'users;
                }
                tally.differing += 1;
                for column in changes.keys() {
                    *tally.per_column.entry(column.clone()).or_default() += 1;
                }
                if !options.apply {
                    continue;
                }
                let result = match options.from {
                    From::Didomi => dataverse_client
                        .session(config, deadline())
                        .update_contact(&contact.id, &changes)
                        .await
                        .map_err(|e| e.to_string()),
                    From::Dynamics => {
                        send(config, &didomi_client, &user_id, &contact, &changes).await
                    }
                };
                match result {
                    Ok(()) => tally.written += 1,
                    Err(e) => tally.failed.push(format!(
                        "contact {}: {}",
                        contact.id,
                        pseudonyms.redact(&e, &user_id)
                    )),
                }
            }
            if progress && tally.users % 100 == 0 {
                eprint!(
                    "\rDidomi users: {}  differing contacts: {}  written: {}",
                    tally.users, tally.differing, tally.written
                );
            }
        }
        match next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if progress {
        eprintln!();
    }
    let contacts_without_user: usize = by_key.values().map(Vec::len).sum();
    Ok(report(
        config,
        &options,
        &tally,
        contacts_without_user,
        started.elapsed(),
    ))
}

async fn send(
    config: &Config,
    didomi: &DidomiClient,
    user_id: &str,
    contact: &Contact,
    changes: &Map<String, Value>,
) -> Result<(), String> {
    let changed = changes.keys().cloned().collect();
    let consents = consents_for_changes(&config.mappings, &changed, &contact.columns)
        .map_err(|e| e.to_string())?;
    if consents.is_empty() {
        return Ok(());
    }
    // The user id as Didomi spells it, whatever the contact's case.
    didomi
        .session(config, deadline())
        .create_consent_event(user_id, &consents)
        .await
        .map_err(|e| e.to_string())
}

async fn create(
    config: &Config,
    dataverse: &DataverseClient,
    user_id: &str,
    mut fields: Map<String, Value>,
    tally: &mut Tally,
) {
    fields.insert(
        config.contact_key.clone(),
        Value::String(user_id.to_string()),
    );
    match dataverse
        .session(config, deadline())
        .create_contact(&fields)
        .await
    {
        Ok(_) => tally.created += 1,
        Err(e) => tally.failed.push(format!(
            "creating a contact: {}",
            config.pseudonyms().redact(&e.to_string(), user_id)
        )),
    }
}

fn report(
    config: &Config,
    options: &Options,
    tally: &Tally,
    contacts_without_user: usize,
    elapsed: Duration,
) -> Report {
    let from = match options.from {
        From::Didomi => "didomi",
        From::Dynamics => "dynamics",
    };
    let mut text = format!(
        "Reconcile from {from} ({}) in {:.1} s\n  Didomi users            {}\n  contacts with a key     {}\n  matched contacts        {}\n  differing contacts      {}\n",
        if options.apply { "applied" } else { "report only; --apply to write" },
        elapsed.as_secs_f64(),
        tally.users,
        tally.contacts,
        tally.matched,
        tally.differing
    );
    for (column, count) in &tally.per_column {
        text.push_str(&format!("    {column:<22}{count}\n"));
    }
    text.push_str(&format!(
        "  users without a contact {}{}\n  contacts without a user {}{}\n",
        tally.users_without_contact,
        if config.upsert_mode {
            ""
        } else {
            " (upsert_mode off: not created)"
        },
        contacts_without_user,
        if options.from == From::Dynamics {
            " (not sent: a CRM default is not a consent)"
        } else {
            ""
        }
    ));
    if let Some(limit) = options.limit {
        text.push_str(&format!("  limited to {limit} differing contact(s)\n"));
    }
    if options.apply {
        text.push_str(&format!(
            "  written                 {}\n  created                 {}\n  failed                  {}\n",
            tally.written,
            tally.created,
            tally.failed.len()
        ));
        for failure in &tally.failed {
            text.push_str(&format!("    {failure}\n"));
        }
    }
    let ok = tally.failed.is_empty();
    Report {
        text,
        json: json!({
            "from": from,
            "applied": options.apply,
            "didomi_users": tally.users,
            "contacts": tally.contacts,
            "matched": tally.matched,
            "differing": tally.differing,
            "per_column": tally.per_column,
            "users_without_contact": tally.users_without_contact,
            "contacts_without_user": contacts_without_user,
            "written": tally.written,
            "created": tally.created,
            "failed": tally.failed,
        }),
        ok,
        reason: (!ok).then(|| {
            format!(
                "{} write(s) failed; run reconcile again once the cause is fixed",
                tally.failed.len()
            )
        }),
    }
}
