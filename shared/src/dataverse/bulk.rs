//! Bulk operation messages: `UpdateMultiple` and `CreateMultiple`, one
//! request for many rows, which service protection counts as one request.
//!
//! On a standard table a bulk request succeeds or fails as a whole. When it
//! fails for a reason tied to one record (a contact deleted meanwhile, a
//! value refused), the batch is split to isolate that record and the rest
//! is applied: the record Dataverse names in its message is taken out at
//! once, otherwise the batch is halved until the culprit stands alone.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Dataverse, DataverseError};
use crate::retry::Replay;

/// A row of a bulk request: its id (required to update, optional to create)
/// and its columns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub id: Option<String>,
    pub columns: Map<String, Value>,
}

/// What became of a bulk write, by position in the rows given.
#[derive(Debug, Default)]
pub(crate) struct BulkOutcome {
    /// Rows written.
    pub applied: usize,
    /// Ids of the rows created, for `CreateMultiple`.
    pub created: Vec<String>,
    /// Rows Dataverse refused on their own account, with its reason.
    pub refused: Vec<(usize, DataverseError)>,
    /// Rows not written because the whole request failed (outage,
    /// credentials), with the reason.
    pub failed: Vec<(usize, String)>,
    /// Bulk requests sent, splits included.
    pub requests: usize,
}

/// A table bulk messages write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Table {
    pub entity_set: &'static str,
    pub entity: &'static str,
    pub key: &'static str,
}

pub(crate) const CONTACTS: Table = Table {
    entity_set: "contacts",
    entity: "contact",
    key: "contactid",
};

pub(crate) const CONSENT_RECORDS: Table = Table {
    entity_set: crate::contact_point_consent::ENTITY_SET,
    entity: crate::contact_point_consent::ENTITY,
    key: crate::contact_point_consent::PRIMARY_KEY,
};

/// One bulk message on one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bulk {
    /// `UpdateMultiple`: every row carries its id.
    Update(Table),
    /// `CreateMultiple`: the ids created come back in order.
    Create(Table),
}

impl Bulk {
    pub(crate) fn table(self) -> Table {
        match self {
            Bulk::Update(table) | Bulk::Create(table) => table,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    ids: Vec<String>,
}

/// A failure that one record can cause, where splitting the batch helps.
fn tied_to_a_record(error: &DataverseError) -> bool {
    matches!(
        error,
        DataverseError::Api {
            status: 400 | 404 | 409 | 412 | 413,
            ..
        }
    )
}

impl Dataverse<'_> {
    /// Writes `rows` with one bulk message, isolating refused records.
    pub(crate) async fn bulk(&self, bulk: Bulk, rows: &[Row]) -> BulkOutcome {
        let mut outcome = BulkOutcome::default();
        let mut created: Vec<Option<String>> = vec![None; rows.len()];
        let mut groups: Vec<Vec<usize>> = vec![(0..rows.len()).collect()];
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            outcome.requests += 1;
            let result = self.send_bulk(bulk, rows, &group).await;
            match result {
                Ok(ids) => {
                    outcome.applied += group.len();
                    for (at, id) in group.iter().zip(ids) {
                        created[*at] = Some(id);
                    }
                }
                Err(error) if tied_to_a_record(&error) => {
                    if group.len() == 1 {
                        outcome.refused.push((group[0], error));
                        continue;
                    }
                    let named = group.iter().position(|&at| {
                        rows[at]
                            .id
                            .as_deref()
                            .is_some_and(|id| error.to_string().contains(id))
                    });
                    match named {
                        Some(position) => {
                            let mut rest = group;
                            let culprit = rest.remove(position);
                            outcome.refused.push((culprit, error));
                            groups.push(rest);
                        }
                        None => {
                            let mut first = group;
                            let second = first.split_off(first.len() / 2);
                            groups.push(second);
                            groups.push(first);
                        }
                    }
                }
                Err(error) => {
                    let reason = error.to_string();
                    outcome
                        .failed
                        .extend(group.into_iter().map(|at| (at, reason.clone())));
                }
            }
        }
        outcome.created = created.into_iter().flatten().collect();
        outcome.refused.sort_by_key(|(at, _)| *at);
        outcome.failed.sort_by_key(|(at, _)| *at);
        outcome
    }

    /// One bulk request for the rows at `group`; the created ids in order
    /// for `CreateMultiple`.
    async fn send_bulk(
        &self,
        bulk: Bulk,
        rows: &[Row],
        group: &[usize],
    ) -> Result<Vec<String>, DataverseError> {
        let Table {
            entity_set,
            entity,
            key,
        } = bulk.table();
        let odata_type = format!("Microsoft.Dynamics.CRM.{entity}");
        let targets: Vec<Value> = group
            .iter()
            .map(|&at| {
                let row = &rows[at];
                let mut target = Map::with_capacity(row.columns.len() + 2);
                target.insert("@odata.type".into(), json!(odata_type));
                if let Some(id) = &row.id {
                    target.insert(key.into(), json!(id));
                }
                target.extend(row.columns.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(target)
            })
            .collect();
        let body = json!({ "Targets": targets });
        let (name, replay) = match bulk {
            Bulk::Update(_) => ("UpdateMultiple", Replay::Safe),
            // Repeated after an unclear outcome, a create could happen twice.
            Bulk::Create(_) => ("CreateMultiple", Replay::OnlyIfNotProcessed),
        };
        let url = self.url(&format!("{entity_set}/Microsoft.Dynamics.CRM.{name}"));
        let response = self.send(Method::POST, &url, Some(&body), replay).await?;
        if let Bulk::Update(_) = bulk {
            return Ok(Vec::new());
        }
        let created: Created = response.json().await.map_err(|_| {
            DataverseError::BadAnswer("the CreateMultiple answer lists no Ids".into())
        })?;
        if created.ids.len() != group.len() {
            return Err(DataverseError::BadAnswer(format!(
                "CreateMultiple created {} row(s) for {} target(s)",
                created.ids.len(),
                group.len()
            )));
        }
        Ok(created.ids)
    }
}
