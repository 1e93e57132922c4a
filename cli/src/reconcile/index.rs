//! What a reconcile holds of the side it reads first, kept small: for each
//! key (lower-cased, as Dataverse compares), the row's id and only the mapped
//! columns, packed as a short JSON text. The other side is streamed page by
//! page against it, so memory grows with one side only.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Mapped column values packed by column position: `{"0":true,"2":"a,b"}`.
/// A column without a value stays absent (absent and `null` differ: Didomi
/// may hold no choice where a contact holds `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed(Box<str>);

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

    pub fn pack(&self, values: &Map<String, Value>) -> Packed {
        let by_position: Map<String, Value> = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(at, name)| Some((at.to_string(), values.get(name)?.clone())))
            .collect();
        Packed(Value::Object(by_position).to_string().into_boxed_str())
    }

    pub fn unpack(&self, packed: &Packed) -> Map<String, Value> {
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
pub fn lookup_key(key: &str) -> String {
    key.trim().to_lowercase()
}

/// One indexed row: its id as the other side needs it (a contact id, or a
/// Didomi `organization_user_id` as Didomi spells it) and its packed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: Box<str>,
    pub values: Packed,
}

/// Rows of one side by lookup key; a key may have several rows (duplicate
/// contacts). `seen` marks keys the streamed side matched.
#[derive(Debug, Default)]
pub struct Index {
    rows: HashMap<Box<str>, (Vec<Entry>, bool)>,
    len: usize,
}

impl Index {
    pub fn insert(&mut self, key: &str, entry: Entry) {
        let slot = self
            .rows
            .entry(lookup_key(key).into_boxed_str())
            .or_insert_with(|| (Vec::with_capacity(1), false));
        slot.0.push(entry);
        self.len += 1;
    }

    /// The rows under `key`, marked as matched.
    pub fn matched(&mut self, key: &str) -> Option<&[Entry]> {
        let slot = self.rows.get_mut(lookup_key(key).as_str())?;
        slot.1 = true;
        Some(&slot.0)
    }

    /// Every row.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.rows.values().flat_map(|(entries, _)| entries)
    }

    /// The rows whose key nothing matched.
    pub fn unmatched(&self) -> impl Iterator<Item = &Entry> {
        self.rows
            .values()
            .filter(|(_, seen)| !seen)
            .flat_map(|(entries, _)| entries)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        assert_eq!(index.len(), 3);
        let ids: Vec<&str> = index
            .matched("JANE@example.COM ")
            .unwrap()
            .iter()
            .map(|e| e.id.as_ref())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        let left: Vec<&str> = index.unmatched().map(|e| e.id.as_ref()).collect();
        assert_eq!(left, ["c"]);
        assert!(index.matched("nobody@example.com").is_none());
    }
}
