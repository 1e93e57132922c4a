//! The contact table's column metadata, and whether the mapped columns have
//! the types their mappings need.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::Config;
use crate::dataverse::{Dataverse, DataverseError};
use crate::mapping::{Encoding, Mapping};

/// Logical name -> `AttributeType` (`Boolean`, `String`, `Picklist`, …).
pub type Attributes = BTreeMap<String, String>;

/// A mapped column the environment lacks, or whose type cannot hold the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnProblem {
    pub column: String,
    pub problem: String,
}

/// One alternate key of the contact table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternateKey {
    pub name: String,
    pub columns: Vec<String>,
    /// `Active` once Dataverse has built its index; only then is it enforced.
    pub status: String,
}

impl AlternateKey {
    /// An active key on exactly `column`: one row per value of it.
    pub fn makes_unique(&self, column: &str) -> bool {
        self.status == "Active" && self.columns.len() == 1 && self.columns[0] == column
    }
}

impl Dataverse<'_> {
    /// `EntityDefinitions(LogicalName='contact')/Keys`.
    pub async fn contact_keys(&self) -> Result<Vec<AlternateKey>, DataverseError> {
        let rows = self
            .get_rows(
                "EntityDefinitions(LogicalName='contact')/Keys?$select=LogicalName,KeyAttributes,EntityKeyIndexStatus",
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let text = |name: &str| row.get(name).and_then(Value::as_str).map(str::to_string);
                Some(AlternateKey {
                    name: text("LogicalName")?,
                    columns: row
                        .get("KeyAttributes")?
                        .as_array()?
                        .iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect(),
                    status: text("EntityKeyIndexStatus").unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Whether the contact table has an active alternate key on exactly the
    /// `contact_key` column; asked once per client and environment.
    pub(crate) async fn contact_key_is_unique(&self) -> Result<bool, DataverseError> {
        let slot_key = format!(
            "{}|{}",
            self.config.dataverse.server_instance, self.config.contact_key
        );
        if let Some((key, unique)) = &*self.client.unique_key.lock().await {
            if *key == slot_key {
                return Ok(*unique);
            }
        }
        let unique = self
            .contact_keys()
            .await?
            .iter()
            .any(|k| k.makes_unique(&self.config.contact_key));
        *self.client.unique_key.lock().await = Some((slot_key, unique));
        Ok(unique)
    }

    /// `EntityDefinitions(LogicalName='contact')/Attributes`.
    pub async fn contact_attributes(&self) -> Result<Attributes, DataverseError> {
        let rows = self
            .get_rows(
                "EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName,AttributeType",
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let name = row.get("LogicalName")?.as_str()?.to_string();
                let kind = row
                    .get("AttributeType")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Some((name, kind))
            })
            .collect())
    }
}

/// The column types a mapping can write and read (DESIGN §4): a boolean for a
/// purpose, a channel or a preference value; a choice with `choice`; text
/// for a preference's selected values.
fn accepted_types(mapping: &Mapping) -> &'static [&'static str] {
    match &mapping.encoding {
        Encoding::Text => &["String", "Memo"],
        Encoding::Flag {
            choice: Some(_), ..
        } => &["Picklist"],
        Encoding::Flag { choice: None, .. } => &["Boolean"],
    }
}

/// Every mapped column (and the key column) checked against the metadata.
pub fn check_columns(config: &Config, attributes: &Attributes) -> Vec<ColumnProblem> {
    let mut problems = Vec::new();
    let mut check = |column: &str, accepted: &[&str], what: &str| match attributes.get(column) {
        None => problems.push(ColumnProblem {
            column: column.to_string(),
            problem: "does not exist on the contact table".into(),
        }),
        Some(kind) if !accepted.contains(&kind.as_str()) => problems.push(ColumnProblem {
            column: column.to_string(),
            problem: format!(
                "is of type {kind}, but {what} needs {}",
                accepted.join(" or ")
            ),
        }),
        Some(_) => {}
    };
    check(&config.contact_key, &["String"], "the contact_key");
    if let Some(column) = &config.sync_timestamp_column {
        check(column, &["DateTime"], "the sync_timestamp_column");
    }
    if let Some(crate::contact_point_consent::ContactPoint::Column(column)) = config
        .contact_point_consent
        .as_ref()
        .map(|section| &section.contact_point)
    {
        check(column, &["String"], "contact_point_consent.contact_point");
    }
    for mapping in &config.mappings {
        let what = match mapping.encoding {
            Encoding::Text => "a preference's selected values",
            Encoding::Flag {
                choice: Some(_), ..
            } => "a mapping with `choice`",
            Encoding::Flag { choice: None, .. } => "a yes/no mapping",
        };
        check(&mapping.column, accepted_types(mapping), what);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_columns_and_wrong_types_are_named() {
        let config = Config::from_json(
            &json!({
                "client_id": "c", "client_secret": "s", "tenant_id": "t",
                "server_instance": "https://x.crm.dynamics.com",
                "mappings": [
                    {"column": "donotbulkemail", "purpose": "marketing", "invert": true},
                    {"column": "new_topics", "purpose": "newsletter", "preference": "topics"},
                    {"column": "new_profiling", "purpose": "profiling", "choice": {"true": 1, "false": 2}},
                    {"column": "new_missing", "channel": "sms"}
                ],
                "didomi": {"organization_id": "o", "api_key": "k", "api_secret": "s"}
            })
            .to_string(),
        )
        .unwrap();
        let attributes: Attributes = [
            ("emailaddress1", "String"),
            ("donotbulkemail", "Boolean"),
            ("new_topics", "Boolean"),
            ("new_profiling", "Picklist"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let problems = check_columns(&config, &attributes);
        assert_eq!(
            problems,
            vec![
                ColumnProblem {
                    column: "new_topics".into(),
                    problem: "is of type Boolean, but a preference's selected values needs String or Memo".into()
                },
                ColumnProblem {
                    column: "new_missing".into(),
                    problem: "does not exist on the contact table".into()
                },
            ]
        );
    }
}
