//! The writes of a reconcile: Dataverse rows in bulk (`UpdateMultiple`,
//! `CreateMultiple`), Didomi consent events one per contact; several in
//! flight at once, each kind within its own bound.

use std::sync::Arc;
use std::time::Duration;

use crate::consents::Consents;
use crate::dataverse::bulk::{Bulk, BulkOutcome, Row, CONTACTS};
use crate::dataverse::DataverseClient;
use crate::didomi::DidomiClient;
use crate::{Config, Deadline};
use tokio::task::JoinSet;

use super::Counts;

/// Rows per bulk request. Service protection counts a bulk request as one
/// request but its execution time in full, Dataverse stops a request after
/// two minutes, and synchronous plug-ins on contact updates run for every
/// record inside it. 100 keeps a request short even with such plug-ins
/// (100 per request cuts the request count a hundredfold; more only
/// lengthens each request and its all-or-nothing scope), and a split to isolate one
/// refused record costs at most 14 more requests (one when Dataverse names
/// it).
pub(crate) const DEFAULT_BATCH_SIZE: usize = 100;
pub(crate) const MAX_BATCH_SIZE: usize = 1000;

/// Bulk requests prepared ahead of the pacing's own bound, so that a free
/// place never waits for the next batch to be built.
const PENDING_BATCHES: usize = 4;

/// Didomi does not rate-limit `/consents/*`: events go out this many at a time.
pub(crate) const DIDOMI_IN_FLIGHT: usize = 16;

/// A Dataverse write that did not happen, for the report.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Who it concerns: a contact id, or a pseudonymous user for a create.
    pub subject: String,
    pub reason: String,
}

/// Rows queued for one bulk message, sent `batch_size` at a time.
pub(crate) struct BulkWriter {
    config: Arc<Config>,
    client: Arc<DataverseClient>,
    counts: Arc<Counts>,
    batch_size: usize,
    bulk: Bulk,
    deadline: Deadline,
    batch: Vec<(Row, String)>,
    running: JoinSet<(Vec<String>, BulkOutcome)>,
    pub failures: Vec<Failure>,
    pub created: usize,
    /// Rows written (updated or created).
    pub written: usize,
}

impl BulkWriter {
    /// A writer of rows with one bulk message, each row carrying the
    /// subject its failure is reported under.
    pub fn new(
        config: Arc<Config>,
        client: Arc<DataverseClient>,
        counts: Arc<Counts>,
        batch_size: usize,
        bulk: Bulk,
        deadline: Deadline,
    ) -> Self {
        BulkWriter {
            config,
            client,
            counts,
            batch_size,
            bulk,
            deadline,
            batch: Vec::with_capacity(batch_size),
            running: JoinSet::new(),
            failures: Vec::new(),
            created: 0,
            written: 0,
        }
    }

    pub async fn push(&mut self, row: Row, subject: String) {
        self.batch.push((row, subject));
        if self.batch.len() >= self.batch_size {
            self.send_batch().await;
        }
    }

    async fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let bound = self.client.pacing.in_flight_limit() + PENDING_BATCHES;
        while self.running.len() >= bound {
            self.collect_one().await;
        }
        let (rows, subjects): (Vec<Row>, Vec<String>) =
            std::mem::take(&mut self.batch).into_iter().unzip();
        let config = self.config.clone();
        let client = self.client.clone();
        let bulk = self.bulk;
        let deadline = self.deadline;
        self.running.spawn(async move {
            let dataverse = client.session(&config, deadline);
            let mut outcome = dataverse.bulk(bulk, &rows).await;
            if bulk == Bulk::Create(CONTACTS) {
                created_meanwhile(&dataverse, &config, &rows, &mut outcome).await;
            }
            (subjects, outcome)
        });
    }

    async fn collect_one(&mut self) {
        let Some(joined) = self.running.join_next().await else {
            return;
        };
        let (subjects, outcome) = match joined {
            Ok(done) => done,
            Err(e) => {
                self.failures.push(Failure {
                    subject: "a batch".into(),
                    reason: format!("the writer stopped: {e}"),
                });
                return;
            }
        };
        Counts::add(&self.counts.dataverse_requests, outcome.requests);
        Counts::add(&self.counts.written, outcome.applied);
        self.written += outcome.applied;
        self.created += outcome.created.len();
        let failed = outcome.refused.len() + outcome.failed.len();
        Counts::add(&self.counts.failed, failed);
        for (at, error) in outcome.refused {
            self.failures.push(Failure {
                subject: subjects[at].clone(),
                reason: format!("refused by Dataverse: {error}"),
            });
        }
        for (at, reason) in outcome.failed {
            self.failures.push(Failure {
                subject: subjects[at].clone(),
                reason,
            });
        }
    }

    /// Sends what is queued and waits for every write.
    pub async fn finish(&mut self) {
        self.send_batch().await;
        while !self.running.is_empty() {
            self.collect_one().await;
        }
    }
}

/// Contacts refused as duplicates of their alternate key were created
/// meanwhile (a live delivery about a new person): each is applied as the
/// function applies a delivery that lost that race — an update of the
/// contact that exists, through the same code.
async fn created_meanwhile(
    dataverse: &crate::dataverse::Dataverse<'_>,
    config: &Config,
    rows: &[Row],
    outcome: &mut BulkOutcome,
) {
    use crate::dataverse::DataverseError;
    let (duplicates, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut outcome.refused)
        .into_iter()
        .partition(|(_, e)| matches!(e, DataverseError::Api { status: 412, .. }));
    outcome.refused = refused;
    for (at, error) in duplicates {
        let mut desired = rows[at].columns.clone();
        let Some(key) = desired
            .remove(&config.contact_key)
            .and_then(|k| k.as_str().map(str::to_string))
        else {
            outcome.refused.push((at, error));
            continue;
        };
        // The change's time, when the row carries the guard's column.
        let changed_at = config
            .sync_timestamp_column
            .as_deref()
            .and_then(|column| desired.remove(column))
            .and_then(|at| at.as_str().and_then(crate::time::parse_utc_seconds));
        let written = crate::didomi_to_dynamics::apply_to_contacts(
            config, dataverse, changed_at, &key, desired, None,
        )
        .await;
        outcome.requests += 2;
        match written {
            Ok(_) => outcome.applied += 1,
            Err(e) => outcome.failed.push((at, e.to_string())),
        }
    }
}

/// Consent events for Didomi, `DIDOMI_IN_FLIGHT` at a time.
pub(crate) struct EventSender {
    config: Arc<Config>,
    client: Arc<DidomiClient>,
    counts: Arc<Counts>,
    running: JoinSet<Option<Failure>>,
    pub failures: Vec<Failure>,
}

impl EventSender {
    pub fn new(config: Arc<Config>, client: Arc<DidomiClient>, counts: Arc<Counts>) -> Self {
        EventSender {
            config,
            client,
            counts,
            running: JoinSet::new(),
            failures: Vec::new(),
        }
    }

    /// Sends one event for `user_id` (as Didomi spells it) about `contact_id`.
    pub async fn send(&mut self, user_id: String, contact_id: String, consents: Consents) {
        while self.running.len() >= DIDOMI_IN_FLIGHT {
            self.collect_one().await;
        }
        let config = self.config.clone();
        let client = self.client.clone();
        self.running.spawn(async move {
            // The functions' own budget and retry rules for each event.
            let deadline = Deadline::after(Duration::from_secs(30));
            match client
                .session(&config, deadline)
                .create_consent_event(&user_id, &consents)
                .await
            {
                Ok(()) => None,
                Err(e) => Some(Failure {
                    subject: format!("contact {contact_id}"),
                    reason: config.pseudonyms().redact(&e.to_string(), &user_id),
                }),
            }
        });
    }

    async fn collect_one(&mut self) {
        match self.running.join_next().await {
            Some(Ok(None)) => Counts::add(&self.counts.written, 1),
            Some(Ok(Some(failure))) => {
                Counts::add(&self.counts.failed, 1);
                self.failures.push(failure);
            }
            Some(Err(e)) => {
                Counts::add(&self.counts.failed, 1);
                self.failures.push(Failure {
                    subject: "an event".into(),
                    reason: format!("the sender stopped: {e}"),
                });
            }
            None => {}
        }
    }

    pub async fn finish(&mut self) {
        while !self.running.is_empty() {
            self.collect_one().await;
        }
    }
}
