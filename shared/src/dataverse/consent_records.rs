//! Contact Point Consent records in Dataverse: resolving the configured
//! purposes and topics to their ids, reading an address's records, and
//! bringing them in line with Didomi's choices.

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{encode_query_value, guid, odata_string, Dataverse, DataverseError};
use crate::contact_point_consent::{
    Channel, ContactPointConsent, Entry, ENTITY_SET, NO_REASONS, PRIMARY_KEY, SOURCE_INTERNAL,
    TYPE_PURPOSE, TYPE_TOPIC,
};
use crate::retry::Replay;

/// The columns of a consent record that consent-sync reads.
const RECORD_COLUMNS: &str = "msdynmkt_contactpointconsent4id,msdynmkt_contactpointvalue,msdynmkt_value,msdynmkt_contactpointconsenttype,_msdynmkt_purposeid_value,_msdynmkt_topicid_value,modifiedon";

/// A consent record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub id: String,
    pub address: String,
    pub value: Option<i64>,
    pub kind: Option<i64>,
    pub purpose_id: Option<String>,
    pub topic_id: Option<String>,
    /// `modifiedon`: among duplicates, the most recently modified wins.
    pub modified_on: Option<String>,
}

/// The configured purposes and topics as the environment knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The `msdynmkt_purposeid` of each entry of `purposes`.
    pub purposes: Vec<String>,
    /// The `msdynmkt_topicid` of each entry of `topics`, and the purpose its
    /// records carry.
    pub topics: Vec<(String, String)>,
}

/// What resolving found: the ids, or what the environment lacks; and each
/// configured purpose's enforcement model for the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub resolved: Option<Resolved>,
    pub missing: Vec<String>,
    /// (purpose name, enforcement model value) per configured purpose.
    pub enforcement: Vec<(String, Option<i64>)>,
}

impl Resolution {
    pub fn into_resolved(self) -> Result<Resolved, DataverseError> {
        match self.resolved {
            Some(resolved) => Ok(resolved),
            None => Err(DataverseError::Unresolved(self.missing.join("; "))),
        }
    }
}

/// Writes made to an address's records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordWrites {
    pub created: usize,
    pub updated: usize,
}

impl RecordWrites {
    pub fn any(&self) -> bool {
        self.created + self.updated > 0
    }

    pub(crate) fn add(&mut self, other: RecordWrites) {
        self.created += other.created;
        self.updated += other.updated;
    }
}

fn text(row: &Map<String, Value>, column: &str) -> Option<String> {
    row.get(column).and_then(Value::as_str).map(str::to_string)
}

fn same_id(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Finds a row by id or, failing that, by `msdynmkt_name` (case-insensitive,
/// as Dataverse compares).
fn find<'a>(
    rows: &'a [Map<String, Value>],
    id_column: &str,
    wanted: &str,
) -> Option<&'a Map<String, Value>> {
    rows.iter()
        .find(|r| text(r, id_column).is_some_and(|id| same_id(&id, wanted)))
        .or_else(|| {
            rows.iter().find(|r| {
                text(r, "msdynmkt_name").is_some_and(|name| name.eq_ignore_ascii_case(wanted))
            })
        })
}

/// The `msdynmkt_reason` of a record written for a Didomi change: names
/// consent-sync and the Didomi event, nothing personal.
pub fn reason(delivery: &str) -> String {
    let mut reason = format!("consent-sync: Didomi {delivery}");
    reason.truncate(500);
    reason
}

impl Dataverse<'_> {
    /// Resolves the section's purposes and topics by id or name: two reads.
    pub async fn resolve_consent(
        &self,
        section: &ContactPointConsent,
    ) -> Result<Resolution, DataverseError> {
        let enforcement_column = section.channel.enforcement_column();
        let purposes = self
            .get_rows(&format!(
                "msdynmkt_purposes?$select={}",
                encode_query_value(&format!(
                    "msdynmkt_purposeid,msdynmkt_name,{enforcement_column}"
                ))
            ))
            .await?;
        let topics = if section.topics.is_empty() {
            Vec::new()
        } else {
            self.get_rows(&format!(
                "msdynmkt_topics?$select={}",
                encode_query_value("msdynmkt_topicid,msdynmkt_name,_msdynmkt_purposeid_value")
            ))
            .await?
        };
        let mut missing = Vec::new();
        let mut resolved = Resolved {
            purposes: Vec::new(),
            topics: Vec::new(),
        };
        let mut enforcement = Vec::new();
        for (i, entry) in section.purposes.iter().enumerate() {
            match find(&purposes, "msdynmkt_purposeid", &entry.consent_purpose) {
                Some(row) => {
                    resolved
                        .purposes
                        .push(text(row, "msdynmkt_purposeid").unwrap_or_default());
                    enforcement.push((
                        text(row, "msdynmkt_name").unwrap_or_else(|| entry.consent_purpose.clone()),
                        row.get(enforcement_column).and_then(Value::as_i64),
                    ));
                }
                None => missing.push(format!(
                    "contact_point_consent.purposes[{i}].consent_purpose: no purpose {:?} in msdynmkt_purposes",
                    entry.consent_purpose
                )),
            }
        }
        for (i, entry) in section.topics.iter().enumerate() {
            let Some(row) = find(&topics, "msdynmkt_topicid", &entry.consent_topic) else {
                missing.push(format!(
                    "contact_point_consent.topics[{i}].consent_topic: no topic {:?} in msdynmkt_topics",
                    entry.consent_topic
                ));
                continue;
            };
            let topic_id = text(row, "msdynmkt_topicid").unwrap_or_default();
            // The topic's own purpose; else the purpose configured for the
            // same Didomi purpose.
            let purpose_id = text(row, "_msdynmkt_purposeid_value").or_else(|| {
                let at = section
                    .purposes
                    .iter()
                    .position(|p| p.purpose == entry.purpose)?;
                resolved.purposes.get(at).cloned()
            });
            match purpose_id {
                Some(purpose_id) => resolved.topics.push((topic_id, purpose_id)),
                None => missing.push(format!(
                    "contact_point_consent.topics[{i}]: topic {:?} has no purpose, and none is configured for Didomi purpose {:?}",
                    entry.consent_topic, entry.purpose
                )),
            }
        }
        Ok(Resolution {
            resolved: missing.is_empty().then_some(resolved),
            missing,
            enforcement,
        })
    }

    /// Every consent record of an address on a channel, inactive ones too.
    pub async fn consent_records(
        &self,
        address: &str,
        channel: Channel,
    ) -> Result<Vec<ConsentRecord>, DataverseError> {
        let filter = format!(
            "msdynmkt_contactpointvalue eq {} and msdynmkt_contactpointtype eq {}",
            odata_string(address),
            channel.code()
        );
        let rows = self
            .get_rows(&format!(
                "{ENTITY_SET}?$select={}&$filter={}",
                encode_query_value(RECORD_COLUMNS),
                encode_query_value(&filter)
            ))
            .await?;
        Ok(rows.iter().map(record_of).collect())
    }

    /// One page of every consent record of a channel (inactive ones too):
    /// the first when `next` is `None`, else the `@odata.nextLink` of the
    /// previous page, followed only within the environment.
    #[cfg(feature = "jobs")]
    pub(crate) async fn consent_records_page(
        &self,
        next: Option<&str>,
        channel: Channel,
        page_size: usize,
    ) -> Result<(Vec<ConsentRecord>, Option<String>), DataverseError> {
        let first = || {
            let filter = format!("msdynmkt_contactpointtype eq {}", channel.code());
            format!(
                "{ENTITY_SET}?$select={}&$filter={}",
                encode_query_value(RECORD_COLUMNS),
                encode_query_value(&filter)
            )
        };
        let (rows, next) = self
            .rows_page(next, first, page_size, "consent records")
            .await?;
        Ok((rows.iter().map(record_of).collect(), next))
    }

    /// One consent record by id; `None` when it is gone.
    pub(crate) async fn consent_record(
        &self,
        id: &str,
    ) -> Result<Option<ConsentRecord>, DataverseError> {
        match self
            .get_json(&format!(
                "{ENTITY_SET}({})?$select={}",
                guid(id)?,
                encode_query_value(RECORD_COLUMNS)
            ))
            .await
        {
            Ok(Value::Object(row)) => Ok(Some(record_of(&row))),
            Ok(_) => Err(DataverseError::BadAnswer(
                "a consent record was not returned as a JSON object".into(),
            )),
            Err(DataverseError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Brings the address's records in line with `wanted` (from
    /// [`crate::contact_point_consent::wanted_values`]): every existing
    /// record of an entry whose value differs is updated (duplicates
    /// included), an entry without a record gets one. `records` are the
    /// address's records as read before.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_consent_records(
        &self,
        section: &ContactPointConsent,
        resolved: &Resolved,
        address: &str,
        records: &[ConsentRecord],
        wanted: &[(Entry, i64)],
        reason: &str,
    ) -> Result<RecordWrites, DataverseError> {
        let mut writes = RecordWrites::default();
        for &(entry, value) in wanted {
            let matching: Vec<&ConsentRecord> = records
                .iter()
                .filter(|r| is_record_of(r, resolved, entry))
                .collect();
            if matching.is_empty() {
                let body = new_record(section, resolved, address, entry, value, reason);
                self.create(ENTITY_SET, &body).await?;
                writes.created += 1;
                continue;
            }
            for record in matching {
                if record.value == Some(value) {
                    continue;
                }
                let body = record_update(value, reason);
                let url = self.url(&format!("{ENTITY_SET}({})", guid(&record.id)?));
                self.send(Method::PATCH, &url, Some(&body), Replay::Safe)
                    .await?;
                writes.updated += 1;
            }
        }
        Ok(writes)
    }
}

/// The columns written to an existing record whose value changes.
pub(crate) fn record_update(value: i64, reason: &str) -> Value {
    json!({
        "msdynmkt_value": value,
        "msdynmkt_source": SOURCE_INTERNAL,
        "msdynmkt_logicalreason": NO_REASONS,
        "msdynmkt_reason": reason,
        "msdynmkt_modifiedonbehalf": "consent-sync",
    })
}

/// The value of an entry among its records, given as (`modifiedon`,
/// `msdynmkt_value`): the most recently modified record's, as Journeys reads
/// duplicates.
pub(crate) fn effective_value<'a>(
    records: impl IntoIterator<Item = (Option<&'a str>, Option<i64>)>,
) -> Option<i64> {
    records
        .into_iter()
        .max_by(|a, b| a.0.cmp(&b.0))
        .and_then(|(_, value)| value)
}

/// Whether a record stands for the configured entry: a purpose record of
/// that purpose, or a topic record of that topic.
pub(crate) fn is_record_of(record: &ConsentRecord, resolved: &Resolved, entry: Entry) -> bool {
    let matches = |found: &Option<String>, wanted: &str| {
        found.as_deref().is_some_and(|id| same_id(id, wanted))
    };
    match entry {
        Entry::Purpose(i) => {
            record.kind == Some(TYPE_PURPOSE)
                && record.topic_id.is_none()
                && matches(&record.purpose_id, &resolved.purposes[i])
        }
        Entry::Topic(i) => {
            record.kind == Some(TYPE_TOPIC) && matches(&record.topic_id, &resolved.topics[i].0)
        }
    }
}

/// The entry a record stands for, if any.
pub(crate) fn entry_of(record: &ConsentRecord, resolved: &Resolved) -> Option<Entry> {
    (0..resolved.purposes.len())
        .map(Entry::Purpose)
        .chain((0..resolved.topics.len()).map(Entry::Topic))
        .find(|&entry| is_record_of(record, resolved, entry))
}

/// The columns of a new record for `entry` at `address`: every column
/// Journeys reads, the lookups bound by their case-sensitive navigation
/// properties.
pub(crate) fn new_record(
    section: &ContactPointConsent,
    resolved: &Resolved,
    address: &str,
    entry: Entry,
    value: i64,
    reason: &str,
) -> Value {
    let mut body = json!({
        "msdynmkt_contactpointvalue": address,
        "msdynmkt_contactpointtype": section.channel.code(),
        "msdynmkt_value": value,
        "msdynmkt_source": SOURCE_INTERNAL,
        "msdynmkt_logicalreason": NO_REASONS,
        "msdynmkt_reason": reason,
        "msdynmkt_modifiedonbehalf": "consent-sync",
    });
    match entry {
        Entry::Purpose(i) => {
            body["msdynmkt_contactpointconsenttype"] = json!(TYPE_PURPOSE);
            body["msdynmkt_purposeId@odata.bind"] =
                json!(format!("/msdynmkt_purposes({})", resolved.purposes[i]));
        }
        Entry::Topic(i) => {
            let (topic, purpose) = &resolved.topics[i];
            body["msdynmkt_contactpointconsenttype"] = json!(TYPE_TOPIC);
            body["msdynmkt_purposeId@odata.bind"] = json!(format!("/msdynmkt_purposes({purpose})"));
            body["msdynmkt_topicId@odata.bind"] = json!(format!("/msdynmkt_topics({topic})"));
        }
    }
    body
}

fn record_of(row: &Map<String, Value>) -> ConsentRecord {
    ConsentRecord {
        id: text(row, PRIMARY_KEY).unwrap_or_default(),
        address: text(row, "msdynmkt_contactpointvalue").unwrap_or_default(),
        value: row.get("msdynmkt_value").and_then(Value::as_i64),
        kind: row
            .get("msdynmkt_contactpointconsenttype")
            .and_then(Value::as_i64),
        purpose_id: text(row, "_msdynmkt_purposeid_value"),
        topic_id: text(row, "_msdynmkt_topicid_value"),
        modified_on: text(row, "modifiedon"),
    }
}

/// The consent purposes and topics of the configuration in force, resolved
/// once per configuration load (two Dataverse reads) and kept with it.
#[derive(Debug, Default)]
pub struct ResolvedCache {
    slot: std::sync::Mutex<
        Option<(
            std::sync::Arc<crate::config::Config>,
            std::sync::Arc<Resolved>,
        )>,
    >,
}

impl ResolvedCache {
    /// `None` when the configuration has no `contact_point_consent`.
    pub async fn get(
        &self,
        config: &std::sync::Arc<crate::config::Config>,
        dataverse: &super::DataverseClient,
        deadline: crate::retry::Deadline,
    ) -> Result<Option<std::sync::Arc<Resolved>>, DataverseError> {
        let Some(section) = &config.contact_point_consent else {
            return Ok(None);
        };
        if let Some((loaded, resolved)) = &*self.slot.lock().unwrap_or_else(|e| e.into_inner()) {
            if std::sync::Arc::ptr_eq(loaded, config) {
                return Ok(Some(resolved.clone()));
            }
        }
        let resolved = std::sync::Arc::new(
            dataverse
                .session(config, deadline)
                .resolve_consent(section)
                .await?
                .into_resolved()?,
        );
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((config.clone(), resolved.clone()));
        Ok(Some(resolved))
    }
}
