//! Reconcile: the initial sync and the drift check, shared by
//! `consent-sync reconcile` and the watch. Compares every Didomi user with
//! the contacts of the same key (case-insensitively, as Dataverse compares)
//! over the mapped columns, tells what differs per column, and when asked
//! writes the chosen side's state to the other through the functions' own
//! mapping, comparison and stale-event guard.
//!
//! Memory grows with one side only: the side that is written to is read
//! first into a compact index (per row: key, id, mapped values), the source
//! of truth is then streamed page by page against it — so what is written
//! is as fresh as it can be. Didomi's side comes from its API or from its
//! batch export (`didomi::export`). Dataverse changes go in bulk
//! (`UpdateMultiple`, `CreateMultiple`), paced by Dataverse's own signals;
//! Didomi events go several at a time. Each write stands alone, so an
//! interrupted run can simply be run again.

pub mod index;
pub mod records;
pub mod writes;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dataverse::bulk::Row;
use crate::dataverse::pacing::Pacing;
use crate::dataverse::{Contact, DataverseClient, DataverseError};
use crate::didomi::export::{Export, ExportError, ExportUsers};
use crate::didomi::{DidomiClient, DidomiError, DidomiUser};
use crate::mapping::differences;
use crate::mapping::{
    columns_differing_from_choices, columns_from_consents, consents_for_changes,
    didomi_choices_as_columns,
};
use crate::{Config, Deadline, RetryPolicy};
use serde_json::{json, Map, Value};

use crate::contact_point_consent::{
    didomi_values, wanted_values, ContactPoint, ContactPointConsent, Entry,
};
use crate::dataverse::consent_records::{reason, Resolved};

use crate::dataverse::bulk::{Bulk, CONSENT_RECORDS, CONTACTS};
use index::{Columns, Index};
use records::{event_for_records, record_writes, RecordsIndex};
pub use writes::Failure;
use writes::{BulkWriter, EventSender};

/// Contacts per page: the most Dataverse gives, since reads count against
/// the same service protection limits as writes.
pub(crate) const PAGE_SIZE: usize = 5000;

/// Why a reconcile could not run to its end (a write that failed is not
/// one: it is reported as a [`Failure`] and the run goes on).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("--batch-size must be between 1 and {max} (Dataverse's most per bulk request)", max = writes::MAX_BATCH_SIZE)]
    BatchSize,
    #[error("reading contacts: {0}")]
    Contacts(DataverseError),
    #[error("resolving the consent purposes and topics: {0}")]
    ConsentPurposes(String),
    #[error("reading consent records: {0}")]
    ConsentRecords(DataverseError),
    #[error("reading Didomi users: {0}")]
    Users(DidomiError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{0}")]
    Config(String),
}

/// How far a run has got, readable while it runs (a progress line, the
/// watch's partial report).
#[derive(Debug, Default)]
pub struct Counts {
    pub contacts: AtomicUsize,
    pub users: AtomicUsize,
    /// Contacts compared with their Didomi user.
    pub matched: AtomicUsize,
    pub differing: AtomicUsize,
    pub written: AtomicUsize,
    pub failed: AtomicUsize,
    pub dataverse_requests: AtomicUsize,
}

impl Counts {
    pub(crate) fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

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
    /// Didomi's side from its batch export instead of its API.
    pub export: Option<Export>,
    /// When reads and writes stop waiting: hours for the CLI (throttling is
    /// waited out), the invocation's end for the watch.
    pub deadline: Deadline,
}

impl Options {
    pub fn new(from: Truth, apply: bool) -> Self {
        Options {
            from,
            apply,
            limit: None,
            batch_size: None,
            export: None,
            deadline: patient_deadline(),
        }
    }
}

/// A deadline long enough that only a dead service stops a reconcile: it
/// waits out throttling, however long Dataverse asks.
pub(crate) fn patient_deadline() -> Deadline {
    Deadline::after(Duration::from_secs(6 * 3600))
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

/// What a run found and did.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub matched: usize,
    pub differing: usize,
    pub per_column: BTreeMap<String, usize>,
    pub users_without_contact: usize,
    pub contacts_without_user: usize,
    pub created: usize,
    /// Consent records to create or update (`--from didomi`), or users whose
    /// records Didomi does not hold yet (`--from dynamics`).
    pub records_differing: usize,
    pub records_written: usize,
    /// Differing contacts left alone: they hold a change newer than
    /// Didomi's state (the stale-event guard).
    pub newer: usize,
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

/// A finished run.
#[derive(Debug)]
pub struct Summary {
    pub from: Truth,
    pub applied: bool,
    pub limit: Option<usize>,
    pub tally: Tally,
    pub users: usize,
    pub contacts: usize,
    /// Updates and events written (creates and consent records apart).
    pub written: usize,
    pub failures: Vec<Failure>,
    pub dataverse_requests: usize,
    /// Dataverse requests answered 429 and waited out.
    pub throttled: u64,
    pub elapsed: Duration,
}

/// One reconcile, built before it runs so that its progress can be watched.
pub struct Reconcile {
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

impl Reconcile {
    /// A run with clients of its own (the CLI).
    pub fn new(config: &Config, options: Options) -> Result<Self, ReconcileError> {
        let http = crate::http_client();
        let dataverse = DataverseClient::new(http.clone(), RetryPolicy::default());
        let didomi = DidomiClient::new(http, RetryPolicy::default());
        Self::with_clients(config, options, &dataverse, &didomi)
    }

    /// A run on the connections, token and Didomi session of clients the
    /// caller already holds (the watch), retried more patiently.
    pub fn with_clients(
        config: &Config,
        options: Options,
        dataverse: &DataverseClient,
        didomi: &DidomiClient,
    ) -> Result<Self, ReconcileError> {
        let batch_size = options.batch_size.unwrap_or(writes::DEFAULT_BATCH_SIZE);
        if !(1..=writes::MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(ReconcileError::BatchSize);
        }
        Ok(Reconcile {
            config: Arc::new(config.clone()),
            options,
            dataverse: Arc::new(dataverse.with_policy(patient_policy())),
            didomi: didomi.with_policy(patient_policy()),
            counts: Arc::default(),
            tally: Tally::default(),
        })
    }

    /// The counts so far, updated while the run goes.
    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    /// Dataverse's pacing: the pause it asked for, while one lasts.
    pub fn pacing(&self) -> Arc<Pacing> {
        self.dataverse.pacing.clone()
    }

    pub async fn run(mut self) -> Result<Summary, ReconcileError> {
        let started = Instant::now();
        let batch_size = self
            .options
            .batch_size
            .unwrap_or(writes::DEFAULT_BATCH_SIZE);
        let mut users = match self.options.export.clone() {
            Some(export) => Users::Export(export.users().await?),
            None => Users::Api {
                cursor: None,
                done: false,
            },
        };
        let failures = match self.options.from {
            Truth::Didomi => self.follow_didomi(batch_size, &mut users).await?,
            Truth::Dynamics => self.follow_dynamics(&mut users).await?,
        };
        if let Users::Export(export) = users {
            export.finish().await?;
        }
        Ok(self.summary(failures, started.elapsed()))
    }
}

/// Didomi's users, page by page, from either side.
enum Users {
    Api { cursor: Option<String>, done: bool },
    Export(ExportUsers),
}

impl Reconcile {
    /// Didomi is the truth: contacts are indexed, Didomi users streamed, and
    /// differing contacts written in bulk.
    async fn follow_didomi(
        &mut self,
        batch_size: usize,
        users: &mut Users,
    ) -> Result<Vec<Failure>, ReconcileError> {
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
        let writer = |bulk| {
            BulkWriter::new(
                config.clone(),
                self.dataverse.clone(),
                self.counts.clone(),
                batch_size,
                bulk,
                self.options.deadline,
            )
        };
        let (mut updates, mut creates) = (
            writer(Bulk::Update(CONTACTS)),
            writer(Bulk::Create(CONTACTS)),
        );
        let (mut record_updates, mut record_creates) = (
            writer(Bulk::Update(CONSENT_RECORDS)),
            writer(Bulk::Create(CONSENT_RECORDS)),
        );
        let reason = reason("reconcile");
        'pages: while let Some(page) = self.next_users(users).await? {
            for user in page {
                let Some(user_id) = user_key(&user) else {
                    continue;
                };
                let desired = columns_from_consents(&config.mappings, &user.consents);
                let guard = guard_of(&config, &user);
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
                            fields.insert(column.to_string(), json!(crate::time::iso_utc(at)));
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
                    Counts::add(&self.counts.matched, 1);
                    let current = columns.unpack(&contact.values);
                    let changes = match drift(&desired, &current, guard) {
                        Drift::Same => continue,
                        Drift::Newer => {
                            self.tally.newer += 1;
                            continue;
                        }
                        Drift::Differs(changes) => changes,
                    };
                    if !self.tally.differs(&changes, self.options.limit) {
                        break 'pages;
                    }
                    Counts::add(&self.counts.differing, 1);
                    if apply {
                        let row = Row {
                            id: Some(contact.id.to_string()),
                            columns: stamped(changes, guard),
                        };
                        updates.push(row, format!("contact {}", contact.id)).await;
                    }
                }
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
    async fn follow_dynamics(
        &mut self,
        source: &mut Users,
    ) -> Result<Vec<Failure>, ReconcileError> {
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
        while let Some(page) = self.next_users(source).await? {
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
        }

        // Events follow the functions' own retry rules.
        let events_client = Arc::new(self.didomi.with_policy(RetryPolicy::default()));
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
                Counts::add(&self.counts.matched, 1);
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
    async fn read_records(&self) -> Result<Option<Records>, ReconcileError> {
        let Some(section) = self.config.contact_point_consent.clone() else {
            return Ok(None);
        };
        let session = self.dataverse.session(&self.config, self.options.deadline);
        let resolved = session
            .resolve_consent(&section)
            .await
            .and_then(|r| r.into_resolved())
            .map_err(|e| ReconcileError::ConsentPurposes(e.to_string()))?;
        // Purposes, and topics when any is configured.
        let reads = 1 + usize::from(!section.topics.is_empty());
        Counts::add(&self.counts.dataverse_requests, reads);
        let mut index = RecordsIndex::default();
        let mut link: Option<String> = None;
        loop {
            let (page, next) = session
                .consent_records_page(link.as_deref(), section.channel, PAGE_SIZE)
                .await
                .map_err(ReconcileError::ConsentRecords)?;
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
    ) -> Result<(Vec<(Contact, String)>, Option<String>), ReconcileError> {
        let names: Vec<&str> = columns.names().collect();
        let (page, next) = self
            .dataverse
            .session(&self.config, self.options.deadline)
            .contacts_page(link, &names, PAGE_SIZE)
            .await
            .map_err(ReconcileError::Contacts)?;
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

    /// The next page of Didomi users; `None` after the last.
    async fn next_users(
        &self,
        users: &mut Users,
    ) -> Result<Option<Vec<DidomiUser>>, ReconcileError> {
        let page = match users {
            Users::Api { done: true, .. } => return Ok(None),
            Users::Api { cursor, done } => {
                let (page, next) = self
                    .didomi
                    .session(&self.config, self.options.deadline)
                    .users_page(cursor.as_deref())
                    .await
                    .map_err(ReconcileError::Users)?;
                *done = next.is_none();
                *cursor = next;
                page
            }
            Users::Export(export) => match export.next().await? {
                Some(page) => page,
                None => return Ok(None),
            },
        };
        Counts::add(&self.counts.users, page.len());
        Ok(Some(page))
    }

    fn summary(self, failures: Vec<Failure>, elapsed: Duration) -> Summary {
        let tally = self.tally;
        // Creates and consent records are counted apart from the updates
        // and events.
        let written = Counts::get(&self.counts.written) - tally.created - tally.records_written;
        Summary {
            from: self.options.from,
            applied: self.options.apply,
            limit: self.options.limit,
            users: Counts::get(&self.counts.users),
            contacts: Counts::get(&self.counts.contacts),
            written,
            dataverse_requests: Counts::get(&self.counts.dataverse_requests),
            throttled: self.dataverse.pacing.throttled(),
            failures,
            tally,
            elapsed,
        }
    }
}

/// The stale-event guard of a user's state: the guard's column and the
/// user's change time. Written with the columns as the functions write an
/// event's, so that a late older event is recognised as older — and a
/// newer change a contact already holds is left alone.
pub(crate) fn guard_of<'a>(config: &'a Config, user: &DidomiUser) -> Option<(&'a str, i64)> {
    config.sync_timestamp_column.as_deref().zip(
        user.updated_at
            .as_deref()
            .and_then(crate::time::parse_utc_seconds),
    )
}

/// What Didomi's state makes of one contact's current columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Drift {
    Same,
    /// The contact holds a change newer than Didomi's state (the guard):
    /// not drift to undo.
    Newer,
    /// The columns that differ (write them [`stamped`]).
    Differs(Map<String, Value>),
}

/// The one rule reconcile and the watch judge a contact by.
pub fn drift(
    desired: &Map<String, Value>,
    current: &Map<String, Value>,
    guard: Option<(&str, i64)>,
) -> Drift {
    let changes = differences(desired, current);
    if changes.is_empty() {
        return Drift::Same;
    }
    if let Some((column, at)) = guard {
        let applied = current
            .get(column)
            .and_then(Value::as_str)
            .and_then(crate::time::parse_utc_seconds);
        if applied.is_some_and(|applied| applied > at) {
            return Drift::Newer;
        }
    }
    Drift::Differs(changes)
}

/// The columns to write: the changes, and the guard's time when it is
/// configured.
pub(crate) fn stamped(
    mut changes: Map<String, Value>,
    guard: Option<(&str, i64)>,
) -> Map<String, Value> {
    if let Some((column, at)) = guard {
        changes.insert(column.to_string(), json!(crate::time::iso_utc(at)));
    }
    changes
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
) -> Option<crate::consents::Consents> {
    let didomi: Vec<(Entry, i64)> = all_entries(&records.section)
        .filter_map(|entry| Some((entry, choices.get(&entry_column(entry))?.as_i64()?)))
        .collect();
    event_for_records(&records.section, records.index.of(address), &didomi)
}

/// A user's `organization_user_id`, when it has one.
pub(crate) fn user_key(user: &DidomiUser) -> Option<&str> {
    user.organization_user_id
        .as_deref()
        .filter(|u| !u.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_contact_differs_by_its_mapped_columns_unless_it_holds_a_newer_change() {
        let desired = columns(json!({"donotbulkemail": false}));
        let same = columns(json!({"donotbulkemail": false, "firstname": "Jane"}));
        assert_eq!(drift(&desired, &same, None), Drift::Same);

        let current = columns(json!({"donotbulkemail": true, "synced": "2026-11-30T09:00:00Z"}));
        let expected = Drift::Differs(columns(json!({"donotbulkemail": false})));
        assert_eq!(drift(&desired, &current, None), expected);
        let didomi_at = crate::time::parse_utc_seconds("2026-11-30T08:00:00Z").unwrap();
        assert_eq!(
            drift(&desired, &current, Some(("synced", didomi_at))),
            Drift::Newer
        );
        let later = didomi_at + 7200;
        assert_eq!(drift(&desired, &current, Some(("synced", later))), expected);
        assert_eq!(
            stamped(
                columns(json!({"donotbulkemail": false})),
                Some(("synced", later))
            ),
            columns(json!({"donotbulkemail": false, "synced": "2026-11-30T10:00:00Z"}))
        );
    }
}
