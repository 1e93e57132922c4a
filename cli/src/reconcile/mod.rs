//! `consent-sync reconcile [--from didomi|dynamics] [--apply] [--limit N]`:
//! the initial sync and the drift check. Compares every Didomi user with
//! the contacts of the same key (case-insensitively, as Dataverse compares)
//! over the mapped columns, reports what differs per column, and with
//! `--apply` writes the chosen side's state to the other through the
//! functions' own mapping and comparison.
//!
//! Memory grows with one side only: the side that is written to is read
//! first into a compact index (per row: key, id, mapped values), the source
//! of truth is then streamed page by page against it — so what is written
//! is as fresh as it can be. Dataverse changes go in bulk (`UpdateMultiple`,
//! `CreateMultiple`), paced by Dataverse's own signals; Didomi events go
//! several at a time. Each write stands alone, so an interrupted run can
//! simply be run again.

pub mod index;
pub mod progress;
pub mod records;
pub mod writes;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consent_sync::dataverse::bulk::Row;
use consent_sync::dataverse::{Contact, DataverseClient};
use consent_sync::didomi::{DidomiClient, DidomiUser};
use consent_sync::mapping::differences;
use consent_sync::mapping::{
    columns_differing_from_choices, columns_from_consents, consents_for_changes,
    didomi_choices_as_columns,
};
use consent_sync::{Config, Deadline, RetryPolicy};
use serde_json::{json, Map, Value};

use consent_sync::contact_point_consent::{
    didomi_values, wanted_values, ContactPoint, ContactPointConsent, Entry,
};
use consent_sync::dataverse::consent_records::{reason, Resolved};

use crate::report::Report;
use index::{Columns, Index};
use progress::{Counts, Ticker};
use records::{event_for_records, record_writes, RecordsIndex};
use writes::{BulkWriter, EventSender, Failure, CONSENT_RECORDS, CONTACTS};

/// Contacts per page: the most Dataverse gives, since reads count against
/// the same service protection limits as writes.
const PAGE_SIZE: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The side whose state is the truth.
pub enum Truth {
    Didomi,
    Dynamics,
}

pub struct Options {
    pub from: Truth,
    pub apply: bool,
    pub limit: Option<usize>,
    /// Rows per bulk request (default [`writes::DEFAULT_BATCH_SIZE`]).
    pub batch_size: Option<usize>,
}

/// Throttling must never fail a reconcile: service protection 429s cost no
/// attempt (the shared pause is the wait); other transient failures get
/// more and longer retries than a function can afford.
fn patient_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 12,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(150),
    }
}

fn read_deadline() -> Deadline {
    Deadline::after(Duration::from_secs(6 * 3600))
}

#[derive(Default)]
struct Tally {
    matched: usize,
    differing: usize,
    per_column: BTreeMap<String, usize>,
    users_without_contact: usize,
    contacts_without_user: usize,
    created: usize,
    /// Consent records to create or update (`--from didomi`), or users whose
    /// records Didomi does not hold yet (`--from dynamics`).
    records_differing: usize,
    records_written: usize,
    /// Differing contacts left alone: they hold a change newer than
    /// Didomi's state (the stale-event guard).
    newer: usize,
}

impl Tally {
    /// Counts one differing contact; false once the limit is reached.
    fn differs(&mut self, changes: &Map<String, Value>, limit: Option<usize>) -> bool {
        if limit.is_some_and(|l| self.differing >= l) {
            return false;
        }
        self.differing += 1;
        for column in changes.keys() {
            *self.per_column.entry(column.clone()).or_default() += 1;
        }
        true
    }
}

struct Run {
    config: Arc<Config>,
    options: Options,
    dataverse: Arc<DataverseClient>,
    didomi: DidomiClient,
    counts: Arc<Counts>,
    tally: Tally,
}

/// The consent records side of a reconcile, when `contact_point_consent`
/// is configured.
struct Records {
    section: ContactPointConsent,
    resolved: Resolved,
    index: RecordsIndex,
}

/// The pseudo-column under which a user's Didomi value of a consent record
/// entry is packed in the users index.
fn entry_column(entry: Entry) -> String {
    match entry {
        Entry::Purpose(i) => format!("#record purpose {i}"),
        Entry::Topic(i) => format!("#record topic {i}"),
    }
}

fn all_entries(section: &ContactPointConsent) -> impl Iterator<Item = Entry> {
    (0..section.purposes.len())
        .map(Entry::Purpose)
        .chain((0..section.topics.len()).map(Entry::Topic))
}

pub async fn run(config: &Config, options: Options) -> Result<Report, String> {
    let batch_size = options.batch_size.unwrap_or(writes::DEFAULT_BATCH_SIZE);
    if !(1..=writes::MAX_BATCH_SIZE).contains(&batch_size) {
        return Err(format!(
            "--batch-size must be between 1 and {} (Dataverse's most per bulk request)",
            writes::MAX_BATCH_SIZE
        ));
    }
    let started = Instant::now();
    let http = consent_sync::http_client();
    let mut run = Run {
        config: Arc::new(config.clone()),
        options,
        dataverse: Arc::new(DataverseClient::new(http.clone(), patient_policy())),
        didomi: DidomiClient::new(http, patient_policy()),
        counts: Arc::default(),
        tally: Tally::default(),
    };
    let ticker = Ticker::start(
        run.counts.clone(),
        run.dataverse.pacing.clone(),
        std::io::stderr().is_terminal(),
    );
    let failures = match run.options.from {
        Truth::Didomi => run.follow_didomi(batch_size).await?,
        Truth::Dynamics => run.follow_dynamics().await?,
    };
    drop(ticker);
    Ok(run.report(&failures, started.elapsed()))
}

impl Run {
    /// Didomi is the truth: contacts are indexed, Didomi users streamed, and
    /// differing contacts written in bulk.
    async fn follow_didomi(&mut self, batch_size: usize) -> Result<Vec<Failure>, String> {
        let config = self.config.clone();
        let records = self.read_records().await?;
        let address_column = address_column(&records);
        let mut names: Vec<String> = config.columns_to_dynamics().map(str::to_string).collect();
        names.extend(address_column.clone().filter(|c| !names.contains(c)));
        // The stale-event guard's column, as the functions read it.
        let guard_column = config.sync_timestamp_column.clone();
        names.extend(guard_column.clone().filter(|c| !names.contains(c)));
        let columns = Columns::new(names);
        let mut contacts = Index::default();
        let mut link: Option<String> = None;
        loop {
            let (page, next) = self.contacts_page(link.as_deref(), &columns).await?;
            for (contact, key) in page {
                let values = columns.pack(&contact.columns);
                let id = contact.id.into_boxed_str();
                contacts.insert(&key, index::Entry { id, values });
            }
            match next {
                Some(next) => link = Some(next),
                None => break,
            }
        }

        let apply = self.options.apply;
        let writer = |create, table| {
            BulkWriter::new(
                config.clone(),
                self.dataverse.clone(),
                self.counts.clone(),
                batch_size,
                create,
                table,
            )
        };
        let (mut updates, mut creates) = (writer(false, CONTACTS), writer(true, CONTACTS));
        let (mut record_updates, mut record_creates) = (
            writer(false, CONSENT_RECORDS),
            writer(true, CONSENT_RECORDS),
        );
        let reason = reason("reconcile");
        let mut cursor: Option<String> = None;
        'pages: loop {
            let (users, next) = self.users_page(cursor.as_deref()).await?;
            for user in users {
                let Some(user_id) = user_key(&user) else {
                    continue;
                };
                let desired = columns_from_consents(&config.mappings, &user.consents);
                // The user's change time, written with the columns as the
                // functions write an event's, so that a late older event
                // is recognised as older — and a newer change the contact
                // already holds is left alone.
                let guard = guard_column.as_deref().zip(
                    user.updated_at
                        .as_deref()
                        .and_then(consent_sync::time::parse_utc_seconds),
                );
                let matched = contacts.matched(user_id);
                if let Some(records) = &records {
                    // The records of the user's address(es), whether or not a
                    // contact matches when the address is the user id itself.
                    let addresses: Vec<String> = match &address_column {
                        None => vec![user_id.to_string()],
                        Some(column) => matched
                            .iter()
                            .flatten()
                            .filter_map(|c| {
                                columns
                                    .unpack(&c.values)
                                    .get(column)?
                                    .as_str()
                                    .map(str::to_string)
                            })
                            .collect(),
                    };
                    let wanted = wanted_values(&records.section, &user.consents);
                    let mut seen: Vec<String> = Vec::new();
                    for address in addresses.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
                        if seen.iter().any(|s| s.eq_ignore_ascii_case(address)) {
                            continue;
                        }
                        seen.push(address.to_string());
                        let (to_update, to_create) = record_writes(
                            &records.section,
                            &records.resolved,
                            address,
                            records.index.of(address),
                            &wanted,
                            &reason,
                        );
                        self.tally.records_differing += to_update.len() + to_create.len();
                        if apply {
                            let subject = format!(
                                "consent record of user {}",
                                config.pseudonyms().of(user_id)
                            );
                            for row in to_update {
                                record_updates.push(row, subject.clone()).await;
                            }
                            for row in to_create {
                                record_creates.push(row, subject.clone()).await;
                            }
                        }
                    }
                }
                let Some(matched) = matched else {
                    self.tally.users_without_contact += 1;
                    if !config.upsert_mode || desired.is_empty() {
                        continue;
                    }
                    if !self.tally.differs(&desired, self.options.limit) {
                        break 'pages;
                    }
                    Counts::add(&self.counts.differing, 1);
                    if apply {
                        let mut fields = desired;
                        fields.insert(config.contact_key.clone(), json!(user_id));
                        if let Some((column, at)) = guard {
                            fields
                                .insert(column.to_string(), json!(consent_sync::time::iso_utc(at)));
                        }
                        let subject =
                            format!("new contact of user {}", config.pseudonyms().of(user_id));
                        let row = Row {
                            id: None,
                            columns: fields,
                        };
                        creates.push(row, subject).await;
                    }
                    continue;
                };
                for contact in matched {
                    self.tally.matched += 1;
                    let current = columns.unpack(&contact.values);
                    let mut changes = differences(&desired, &current);
                    if changes.is_empty() {
                        continue;
                    }
                    if let Some((column, at)) = guard {
                        let applied = current
                            .get(column)
                            .and_then(Value::as_str)
                            .and_then(consent_sync::time::parse_utc_seconds);
                        if applied.is_some_and(|applied| applied > at) {
                            // A change newer than Didomi's state reached
                            // the contact since: not drift to undo.
                            self.tally.newer += 1;
                            continue;
                        }
                    }
                    if !self.tally.differs(&changes, self.options.limit) {
                        break 'pages;
                    }
                    Counts::add(&self.counts.differing, 1);
                    if let Some((column, at)) = guard {
                        changes.insert(column.to_string(), json!(consent_sync::time::iso_utc(at)));
                    }
                    if apply {
                        let row = Row {
                            id: Some(contact.id.to_string()),
                            columns: changes,
                        };
                        updates.push(row, format!("contact {}", contact.id)).await;
                    }
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        updates.finish().await;
        creates.finish().await;
        record_updates.finish().await;
        record_creates.finish().await;
        self.tally.contacts_without_user = contacts.unmatched();
        self.tally.created = creates.created;
        self.tally.records_written = record_updates.written + record_creates.written;
        let mut failures = updates.failures;
        failures.extend(creates.failures);
        failures.extend(record_updates.failures);
        failures.extend(record_creates.failures);
        Ok(failures)
    }

    /// Dynamics is the truth: Didomi users are indexed, contacts streamed,
    /// and each differing contact sent as one consent event.
    async fn follow_dynamics(&mut self) -> Result<Vec<Failure>, String> {
        let config = self.config.clone();
        let records = self.read_records().await?;
        let address_column = address_column(&records);
        // The users index packs, beside the contact columns, Didomi's value of
        // each consent record entry under a pseudo-column.
        let mut names: Vec<String> = config.columns_to_didomi().map(str::to_string).collect();
        let contact_columns = names.len();
        if let Some(records) = &records {
            names.extend(all_entries(&records.section).map(entry_column));
        }
        let columns = Columns::new(names.clone());
        let mut contact_names: Vec<String> = names[..contact_columns].to_vec();
        contact_names.extend(
            address_column
                .clone()
                .filter(|c| !contact_names.contains(c)),
        );
        let contact_columns = Columns::new(contact_names);
        let mut users = Index::default();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self.users_page(cursor.as_deref()).await?;
            for user in page {
                let Some(user_id) = user_key(&user) else {
                    continue;
                };
                let mut choices = didomi_choices_as_columns(&config.mappings, &user.consents);
                if let Some(records) = &records {
                    for (entry, value) in didomi_values(&records.section, &user.consents) {
                        choices.insert(entry_column(entry), json!(value));
                    }
                }
                let values = columns.pack(&choices);
                users.insert(
                    user_id,
                    index::Entry {
                        id: user_id.into(),
                        values,
                    },
                );
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }

        // Events follow the functions' own retry rules.
        let events_client = Arc::new(DidomiClient::new(
            consent_sync::http_client(),
            RetryPolicy::default(),
        ));
        let mut events = EventSender::new(config.clone(), events_client, self.counts.clone());
        let mut sent_addresses: std::collections::HashSet<String> = Default::default();
        let mut link: Option<String> = None;
        'pages: loop {
            let (page, next) = self
                .contacts_page(link.as_deref(), &contact_columns)
                .await?;
            for (contact, key) in page {
                let Some(matched) = users.matched(&key) else {
                    self.tally.contacts_without_user += 1;
                    continue;
                };
                // Didomi's user ids are unique per organisation: one user per key.
                let user = &matched[0];
                self.tally.matched += 1;
                let choices = columns.unpack(&user.values);
                if let (Some(records), Some(column)) = (&records, &address_column) {
                    let address = contact.columns.get(column).and_then(Value::as_str);
                    if let Some(address) = address.map(str::trim).filter(|a| !a.is_empty()) {
                        if sent_addresses.insert(address.to_lowercase()) {
                            let event = records_event(records, address, &choices);
                            if let Some(consents) = event {
                                self.tally.records_differing += 1;
                                if self.options.apply {
                                    events
                                        .send(user.id.to_string(), contact.id.clone(), consents)
                                        .await;
                                }
                            }
                        }
                    }
                }
                let changes =
                    columns_differing_from_choices(&config.mappings, &choices, &contact.columns);
                if changes.is_empty() {
                    continue;
                }
                if !self.tally.differs(&changes, self.options.limit) {
                    break 'pages;
                }
                Counts::add(&self.counts.differing, 1);
                if !self.options.apply {
                    continue;
                }
                let changed = changes.keys().cloned().collect();
                match consents_for_changes(&config.mappings, &changed, &contact.columns) {
                    Ok(consents) if consents.is_empty() => {}
                    Ok(consents) => events.send(user.id.to_string(), contact.id, consents).await,
                    Err(e) => events.failures.push(Failure {
                        subject: format!("contact {}", contact.id),
                        reason: e.to_string(),
                    }),
                }
            }
            match next {
                Some(next) => link = Some(next),
                None => break,
            }
        }
        // Records keyed by the user id itself: every user, contact or not.
        if let (Some(records), None) = (&records, &address_column) {
            for user in users.entries() {
                let choices = columns.unpack(&user.values);
                if let Some(consents) = records_event(records, &user.id, &choices) {
                    self.tally.records_differing += 1;
                    if self.options.apply {
                        events
                            .send(
                                user.id.to_string(),
                                format!("records of user {}", config.pseudonyms().of(&user.id)),
                                consents,
                            )
                            .await;
                    }
                }
            }
        }
        events.finish().await;
        self.tally.users_without_contact = users.unmatched();
        Ok(events.failures)
    }

    /// Every consent record of the configured purposes and topics, when
    /// `contact_point_consent` is configured: two reads to resolve them,
    /// then pages of 5,000.
    async fn read_records(&self) -> Result<Option<Records>, String> {
        let Some(section) = self.config.contact_point_consent.clone() else {
            return Ok(None);
        };
        let session = self.dataverse.session(&self.config, read_deadline());
        let resolved = session
            .resolve_consent(&section)
            .await
            .and_then(|r| r.into_resolved())
            .map_err(|e| format!("resolving the consent purposes and topics: {e}"))?;
        // Purposes, and topics when any is configured.
        let reads = 1 + usize::from(!section.topics.is_empty());
        Counts::add(&self.counts.dataverse_requests, reads);
        let mut index = RecordsIndex::default();
        let mut link: Option<String> = None;
        loop {
            let (page, next) = session
                .consent_records_page(link.as_deref(), section.channel, PAGE_SIZE)
                .await
                .map_err(|e| format!("reading consent records: {e}"))?;
            Counts::add(&self.counts.dataverse_requests, 1);
            for record in page {
                index.insert(record, &resolved);
            }
            match next {
                Some(next) => link = Some(next),
                None => break,
            }
        }
        Ok(Some(Records {
            section,
            resolved,
            index,
        }))
    }

    /// One page of contacts with a key value, each with its key.
    async fn contacts_page(
        &self,
        link: Option<&str>,
        columns: &Columns,
    ) -> Result<(Vec<(Contact, String)>, Option<String>), String> {
        let names: Vec<&str> = columns.names().collect();
        let (page, next) = self
            .dataverse
            .session(&self.config, read_deadline())
            .contacts_page(link, &names, PAGE_SIZE)
            .await
            .map_err(|e| format!("reading contacts: {e}"))?;
        Counts::add(&self.counts.dataverse_requests, 1);
        let key_column = &self.config.contact_key;
        let page: Vec<(Contact, String)> = page
            .into_iter()
            .filter_map(|contact| {
                let key = contact.columns.get(key_column)?.as_str()?.to_string();
                Some((contact, key))
            })
            .collect();
        Counts::add(&self.counts.contacts, page.len());
        Ok((page, next))
    }

    async fn users_page(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<DidomiUser>, Option<String>), String> {
        let (users, next) = self
            .didomi
            .session(&self.config, read_deadline())
            .users_page(cursor)
            .await
            .map_err(|e| format!("reading Didomi users: {e}"))?;
        Counts::add(&self.counts.users, users.len());
        Ok((users, next))
    }

    fn report(&self, failures: &[Failure], elapsed: Duration) -> Report {
        let (config, options, tally) = (&self.config, &self.options, &self.tally);
        let from = match options.from {
            Truth::Didomi => "didomi",
            Truth::Dynamics => "dynamics",
        };
        let users = Counts::get(&self.counts.users);
        let contacts = Counts::get(&self.counts.contacts);
        // Creates and consent records are counted apart from the updates
        // and events.
        let written = Counts::get(&self.counts.written) - tally.created - tally.records_written;
        let requests = Counts::get(&self.counts.dataverse_requests);
        let throttled = self.dataverse.pacing.throttled();
        let mut text = format!(
            "Reconcile from {from} ({}) in {:.1} s\n  Didomi users            {users}\n  contacts with a key     {contacts}\n  matched contacts        {}\n  differing contacts      {}\n",
            if options.apply { "applied" } else { "report only; --apply to write" },
            elapsed.as_secs_f64(),
            tally.matched,
            tally.differing
        );
        if tally.newer > 0 {
            text.push_str(&format!(
                "  left alone: {} contact(s) hold a change newer than Didomi's state (sync_timestamp_column)\n",
                tally.newer
            ));
        }
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
            tally.contacts_without_user,
            if options.from == Truth::Dynamics {
                " (not sent: a CRM default is not a consent)"
            } else {
                ""
            }
        ));
        if config.contact_point_consent.is_some() {
            let what = match options.from {
                Truth::Didomi => "consent records to write",
                Truth::Dynamics => "addresses whose consent records Didomi lacks",
            };
            text.push_str(&format!("  {what:<24}{}\n", tally.records_differing));
            if options.apply && options.from == Truth::Didomi {
                text.push_str(&format!(
                    "  consent records written {}\n",
                    tally.records_written
                ));
            }
        }
        if let Some(limit) = options.limit {
            text.push_str(&format!("  limited to {limit} differing contact(s)\n"));
        }
        text.push_str(&format!(
            "  Dataverse requests      {requests} ({throttled} answered 429 and waited out)\n"
        ));
        if options.apply {
            text.push_str(&format!(
                "  written                 {written}\n  created                 {}\n  failed                  {}\n",
                tally.created,
                failures.len()
            ));
            for failure in failures {
                text.push_str(&format!("    {}: {}\n", failure.subject, failure.reason));
            }
        }
        let ok = failures.is_empty();
        Report {
            text,
            json: json!({
                "from": from,
                "applied": options.apply,
                "didomi_users": users,
                "contacts": contacts,
                "matched": tally.matched,
                "differing": tally.differing,
                "per_column": tally.per_column,
                "newer_than_didomi": tally.newer,
                "users_without_contact": tally.users_without_contact,
                "contacts_without_user": tally.contacts_without_user,
                "written": written,
                "created": tally.created,
                "failed": failures
                    .iter()
                    .map(|f| format!("{}: {}", f.subject, f.reason))
                    .collect::<Vec<_>>(),
                "consent_records_differing": tally.records_differing,
                "consent_records_written": tally.records_written,
                "dataverse_requests": requests,
                "throttled": throttled,
            }),
            ok,
            reason: (!ok).then(|| {
                format!(
                    "{} write(s) failed; run reconcile again once the cause is fixed",
                    failures.len()
                )
            }),
        }
    }
}

/// The contact column that holds the records' address, when it is not the
/// user id itself.
fn address_column(records: &Option<Records>) -> Option<String> {
    match records.as_ref().map(|r| &r.section.contact_point) {
        Some(ContactPoint::Column(column)) => Some(column.clone()),
        _ => None,
    }
}

/// The event that carries an address's records to Didomi, given the user's
/// Didomi values unpacked from the index.
fn records_event(
    records: &Records,
    address: &str,
    choices: &Map<String, Value>,
) -> Option<consent_sync::consents::Consents> {
    let didomi: Vec<(Entry, i64)> = all_entries(&records.section)
        .filter_map(|entry| Some((entry, choices.get(&entry_column(entry))?.as_i64()?)))
        .collect();
    event_for_records(&records.section, records.index.of(address), &didomi)
}

/// A user's `organization_user_id`, when it has one.
fn user_key(user: &DidomiUser) -> Option<&str> {
    user.organization_user_id
        .as_deref()
        .filter(|u| !u.trim().is_empty())
}
