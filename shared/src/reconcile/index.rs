//! What a reconcile holds of the side it reads first, kept small: for each
//! row its key (lower-cased, as Dataverse compares), its id and only the
//! mapped columns, packed as a short JSON text — about 130 bytes a row. The
//! other side is streamed page by page against it, so memory grows with one
//! side only.

use serde_json::{Map, Value};

/// Mapped column values packed by column position: `{"0":true,"2":"a,b"}`.
/// A column without a value stays absent (absent and `null` differ: Didomi
/// may hold no choice where a contact holds `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packed(Box<str>);

/// Packs and unpacks the values of a fixed list of columns.
#[derive(Debug, Clone)]
pub struct Columns {
    names: Vec<String>,
}

impl Columns {
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Columns {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub(crate) fn pack(&self, values: &Map<String, Value>) -> Packed {
        let by_position: Map<String, Value> = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(at, name)| Some((at.to_string(), values.get(name)?.clone())))
            .collect();
        Packed(Value::Object(by_position).to_string().into_boxed_str())
    }

    pub(crate) fn unpack(&self, packed: &Packed) -> Map<String, Value> {
        let Ok(Value::Object(by_position)) = serde_json::from_str::<Value>(&packed.0) else {
            return Map::new();
        };
        by_position
            .into_iter()
            .filter_map(|(at, value)| {
                let name = self.names.get(at.parse::<usize>().ok()?)?;
                Some((name.clone(), value))
            })
            .collect()
    }
}

/// The lookup form of a key: trimmed and lower-cased, as Dataverse compares.
pub(crate) fn lookup_key(key: &str) -> String {
    key.trim().to_lowercase()
}

/// One indexed row as the other side needs it: its id (a contact id, or a
/// Didomi `organization_user_id` as Didomi spells it) and its packed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: Box<str>,
    pub values: Packed,
}

/// An id kept small: a GUID in 16 bytes, a text equal to the row's key not
/// at all, any other text as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    Guid([u8; 16]),
    SameAsKey,
    Text(Box<str>),
}

fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    // Only lower-case GUIDs come back identical from their bytes.
    (format_guid(&bytes) == text).then_some(bytes)
}

fn format_guid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A row as the index keeps it: 64 bytes, plus the key and the packed
/// values on the heap.
#[derive(Debug)]
struct Row {
    key: Box<str>,
    id: Id,
    values: Packed,
    seen: bool,
}

impl Row {
    fn entry(&self) -> Entry {
        let id = match &self.id {
            Id::Guid(bytes) => format_guid(bytes).into_boxed_str(),
            Id::SameAsKey => self.key.clone(),
            Id::Text(text) => text.clone(),
        };
        Entry {
            id,
            values: self.values.clone(),
        }
    }
}

/// Rows of one side by lookup key, in a vector sorted by key: no hash table
/// slack, duplicates (contacts sharing a key) side by side. `seen` marks
/// rows the streamed side matched.
#[derive(Debug, Default)]
pub(crate) struct Index {
    rows: Vec<Row>,
    sorted: bool,
}

impl Index {
    pub fn insert(&mut self, key: &str, entry: Entry) {
        let key = lookup_key(key);
        let id = if *entry.id == *key {
            Id::SameAsKey
        } else {
            match parse_guid(&entry.id) {
                Some(bytes) => Id::Guid(bytes),
                None => Id::Text(entry.id),
            }
        };
        self.rows.push(Row {
            key: key.into_boxed_str(),
            id,
            values: entry.values,
            seen: false,
        });
        self.sorted = false;
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.rows.sort_by(|a, b| a.key.cmp(&b.key));
            self.rows.shrink_to_fit();
            self.sorted = true;
        }
    }

    /// The rows under `key`, marked as matched.
    pub fn matched(&mut self, key: &str) -> Option<Vec<Entry>> {
        self.sort();
        let key = lookup_key(key);
        let start = self.rows.partition_point(|r| *r.key < *key);
        let end = start + self.rows[start..].partition_point(|r| *r.key == *key);
        if start == end {
            return None;
        }
        for row in &mut self.rows[start..end] {
            row.seen = true;
        }
        Some(self.rows[start..end].iter().map(Row::entry).collect())
    }

    /// Every row.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.rows.iter().map(Row::entry)
    }

    /// The number of rows whose key nothing matched.
    pub(crate) fn unmatched(&self) -> usize {
        self.rows.iter().filter(|r| !r.seen).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packing_keeps_values_nulls_and_absences() {
        let columns = Columns::new(["donotbulkemail", "new_topics", "new_profiling"]);
        let values = json!({"donotbulkemail": true, "new_topics": null, "other": 1});
        let packed = columns.pack(values.as_object().unwrap());
        assert_eq!(packed.0.as_ref(), r#"{"0":true,"1":null}"#);
        assert_eq!(
            Value::Object(columns.unpack(&packed)),
            json!({"donotbulkemail": true, "new_topics": null})
        );
    }

    #[test]
    fn keys_match_as_dataverse_compares_and_unmatched_rows_remain() {
        let columns = Columns::new(["donotbulkemail"]);
        let mut index = Index::default();
        let entry = |id: &str| Entry {
            id: id.into(),
            values: columns.pack(&Map::new()),
        };
        index.insert(" Jane@Example.com", entry("a"));
        index.insert("jane@example.com", entry("b"));
        index.insert("ada@example.com", entry("c"));
        assert_eq!(index.rows.len(), 3);
        let ids: Vec<String> = index
            .matched("JANE@example.COM ")
            .unwrap()
            .into_iter()
            .map(|e| e.id.into())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(index.unmatched(), 1);
        assert!(index.matched("nobody@example.com").is_none());
    }

    #[test]
    fn ids_come_back_as_they_went_in() {
        let columns = Columns::new(["donotbulkemail"]);
        let mut index = Index::default();
        let packed = columns.pack(&Map::new());
        for id in [
            "6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c",
            "6D81597F-0D1A-4B8C-9F1A-2D3E4F5A6B7C",
            "jane@example.com",
            "Jane@Example.com",
        ] {
            index.insert(
                "jane@example.com",
                Entry {
                    id: id.into(),
                    values: packed.clone(),
                },
            );
        }
        let ids: Vec<String> = index.entries().map(|e| e.id.into()).collect();
        assert_eq!(
            ids,
            [
                "6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c",
                "6D81597F-0D1A-4B8C-9F1A-2D3E4F5A6B7C",
                "jane@example.com",
                "Jane@Example.com"
            ]
        );
        assert_eq!(std::mem::size_of::<Row>(), 64);
    }
}
