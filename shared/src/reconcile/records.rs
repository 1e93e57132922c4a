//! Contact Point Consent records in a reconcile: every record of the
//! configured channel read once (pages of 5,000) into an index by address,
//! kept small (per record its id, which configured purpose or topic it is,
//! its value and time), then compared address by address with Didomi.

use std::collections::HashMap;

use crate::consents::{Consents, PreferenceChoice, PurposeChoice};
use crate::contact_point_consent::{ContactPointConsent, Entry, OPTED_IN, OPTED_OUT};
use crate::dataverse::bulk::Row;
use crate::dataverse::consent_records::{
    effective_value, entry_of, new_record, record_update, ConsentRecord, Resolved,
};
use serde_json::{Map, Value};

use super::index::lookup_key;

/// One record of a configured purpose or topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedRecord {
    pub id: Box<str>,
    pub entry: Entry,
    pub value: Option<i64>,
    pub modified_on: Option<Box<str>>,
}

/// The records of the configured purposes and topics, by address.
#[derive(Debug, Default)]
pub(crate) struct RecordsIndex {
    by_address: HashMap<Box<str>, Vec<IndexedRecord>>,
    len: usize,
}

impl RecordsIndex {
    /// Keeps the record when it is of a configured purpose or topic.
    pub fn insert(&mut self, record: ConsentRecord, resolved: &Resolved) {
        let Some(entry) = entry_of(&record, resolved) else {
            return;
        };
        self.by_address
            .entry(lookup_key(&record.address).into_boxed_str())
            .or_default()
            .push(IndexedRecord {
                id: record.id.into_boxed_str(),
                entry,
                value: record.value,
                modified_on: record.modified_on.map(String::into_boxed_str),
            });
        self.len += 1;
    }

    pub fn of(&self, address: &str) -> &[IndexedRecord] {
        self.by_address
            .get(lookup_key(address).as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The value of an entry among an address's records, read as the functions
/// read it (the most recently modified record's).
fn effective(records: &[IndexedRecord], entry: Entry) -> Option<i64> {
    effective_value(
        records
            .iter()
            .filter(|r| r.entry == entry)
            .map(|r| (r.modified_on.as_deref(), r.value)),
    )
}

/// The writes that bring an address's records to `wanted`: updates of every
/// record (duplicates included) whose value differs, and a new record for
/// an entry that has none.
pub(crate) fn record_writes(
    section: &ContactPointConsent,
    resolved: &Resolved,
    address: &str,
    records: &[IndexedRecord],
    wanted: &[(Entry, i64)],
    reason: &str,
) -> (Vec<Row>, Vec<Row>) {
    let (mut updates, mut creates) = (Vec::new(), Vec::new());
    for &(entry, value) in wanted {
        let mine: Vec<&IndexedRecord> = records.iter().filter(|r| r.entry == entry).collect();
        if mine.is_empty() {
            let columns = new_record(section, resolved, address, entry, value, reason);
            creates.push(Row {
                id: None,
                columns: object(columns),
            });
        }
        for record in mine.into_iter().filter(|r| r.value != Some(value)) {
            updates.push(Row {
                id: Some(record.id.to_string()),
                columns: object(record_update(value, reason)),
            });
        }
    }
    (updates, creates)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The consent event that carries an address's records to Didomi, when any
/// differs from what Didomi holds (`didomi`, from `didomi_values`): a
/// purpose's `enabled`; for a topic, its preference's values whose records
/// are Opted In, whole. `None` when Didomi already agrees.
pub(crate) fn event_for_records(
    section: &ContactPointConsent,
    records: &[IndexedRecord],
    didomi: &[(Entry, i64)],
) -> Option<Consents> {
    let held = |entry: Entry| didomi.iter().find(|(e, _)| *e == entry).map(|(_, v)| *v);
    let mut purposes: Vec<PurposeChoice> = Vec::new();
    for (i, purpose) in section.purposes.iter().enumerate() {
        if !purpose.direction.to_didomi() {
            continue;
        }
        let value = match effective(records, Entry::Purpose(i)) {
            Some(v @ (OPTED_IN | OPTED_OUT)) => v,
            _ => continue,
        };
        if held(Entry::Purpose(i)) != Some(value) {
            purposes.push(PurposeChoice {
                id: purpose.purpose.clone(),
                enabled: Some(value == OPTED_IN),
                values: Default::default(),
            });
        }
    }
    // Topics by (purpose, preference): sent whole when any of them differs.
    let mut done: Vec<(&str, &str)> = Vec::new();
    for topic in &section.topics {
        let group = (topic.purpose.as_str(), topic.preference.as_str());
        if !topic.direction.to_didomi() || done.contains(&group) {
            continue;
        }
        done.push(group);
        let members: Vec<usize> = section
            .topics
            .iter()
            .enumerate()
            .filter(|(_, t)| (t.purpose.as_str(), t.preference.as_str()) == group)
            .map(|(j, _)| j)
            .collect();
        let differs = members
            .iter()
            .any(|&j| match effective(records, Entry::Topic(j)) {
                Some(v @ (OPTED_IN | OPTED_OUT)) => held(Entry::Topic(j)) != Some(v),
                _ => false,
            });
        if !differs {
            continue;
        }
        let selected: Vec<&str> = members
            .iter()
            .filter(|&&j| effective(records, Entry::Topic(j)) == Some(OPTED_IN))
            .map(|&j| section.topics[j].value.as_str())
            .collect();
        let value = Some(selected.join(","));
        match purposes.iter_mut().find(|p| p.id == topic.purpose) {
            Some(purpose) => {
                purpose
                    .values
                    .insert(topic.preference.clone(), PreferenceChoice { value });
            }
            None => {
                let mut values = std::collections::BTreeMap::new();
                values.insert(topic.preference.clone(), PreferenceChoice { value });
                purposes.push(PurposeChoice {
                    id: topic.purpose.clone(),
                    enabled: None,
                    values,
                });
            }
        }
    }
    (!purposes.is_empty()).then_some(Consents {
        purposes,
        channels: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section() -> ContactPointConsent {
        ContactPointConsent::from_value(json!({
            "purposes": [{"purpose": "newsletter", "consent_purpose": "Newsletter"}],
            "topics": [
                {"purpose": "newsletter", "preference": "topics", "value": "sports", "consent_topic": "Sports"},
                {"purpose": "newsletter", "preference": "topics", "value": "news", "consent_topic": "News"}
            ]
        }))
        .unwrap()
    }

    fn record(id: &str, entry: Entry, value: i64, at: &str) -> IndexedRecord {
        IndexedRecord {
            id: id.into(),
            entry,
            value: Some(value),
            modified_on: Some(at.into()),
        }
    }

    #[test]
    fn the_most_recent_duplicate_counts_and_topics_go_whole() {
        let records = [
            record("a", Entry::Purpose(0), OPTED_IN, "2026-11-01T00:00:00Z"),
            record("b", Entry::Purpose(0), OPTED_OUT, "2026-11-02T00:00:00Z"),
            record("c", Entry::Topic(0), OPTED_IN, "2026-11-01T00:00:00Z"),
        ];
        // Didomi: newsletter on, sports and news both selected.
        let didomi = [
            (Entry::Purpose(0), OPTED_IN),
            (Entry::Topic(0), OPTED_IN),
            (Entry::Topic(1), OPTED_IN),
        ];
        let event = event_for_records(&section(), &records, &didomi).unwrap();
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"purposes": [{"id": "newsletter", "enabled": false}], "channels": []}),
            "sports agrees, news has no record: the topics are not sent"
        );
        let agreeing = [(Entry::Purpose(0), OPTED_OUT), (Entry::Topic(0), OPTED_IN)];
        assert_eq!(event_for_records(&section(), &records, &agreeing), None);
    }
}
