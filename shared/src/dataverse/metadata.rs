//! The contact table's metadata: its columns (and whether the mapped ones
//! have the types their mappings need), its alternate keys, and the few
//! customizations `consent-sync init` makes — a Yes/No column, a key.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};

use crate::retry::Replay;

use crate::config::Config;
use crate::dataverse::{Dataverse, DataverseError};
use crate::mapping::{Encoding, Mapping};

/// Logical name -> `AttributeType` (`Boolean`, `String`, `Picklist`, …).
pub type Attributes = BTreeMap<String, String>;

/// A contact column as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub logical_name: String,
    /// `Boolean` (Yes/No), `String`, `Picklist` (Choice), …
    pub attribute_type: String,
    /// The display name in the application user's language, if it has one.
    pub label: Option<String>,
}

/// The contact table's metadata as `EntityDefinitions` addresses it.
const CONTACT_METADATA: &str = "EntityDefinitions(LogicalName='contact')";

/// A label in the organization's base language, as metadata writes take it.
fn label(text: &str, language: u32) -> Value {
    json!({
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [{
            "@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel",
            "Label": text,
            "LanguageCode": language
        }]
    })
}

/// The label a metadata row carries: the user's language, else the first.
fn display_name(row: &serde_json::Map<String, Value>) -> Option<String> {
    let name = row.get("DisplayName")?;
    name.pointer("/UserLocalizedLabel/Label")
        .and_then(Value::as_str)
        .or_else(|| {
            name.pointer("/LocalizedLabels/0/Label")
                .and_then(Value::as_str)
        })
        .map(str::to_string)
}

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
    /// Rows of a metadata query, read past Dataverse's metadata cache
    /// (`Consistency: Strong`), so that what `init` just created is seen.
    async fn metadata_rows(
        &self,
        path_and_query: &str,
    ) -> Result<Vec<serde_json::Map<String, Value>>, DataverseError> {
        let response = self
            .send_with(
                Method::GET,
                &self.url(path_and_query),
                None,
                Replay::Safe,
                &[("Consistency", "Strong")],
            )
            .await?;
        super::collection(response, path_and_query).await
    }

    /// `EntityDefinitions(LogicalName='contact')/Keys`.
    pub async fn contact_keys(&self) -> Result<Vec<AlternateKey>, DataverseError> {
        let rows = self
            .metadata_rows(&format!(
                "{CONTACT_METADATA}/Keys?$select=LogicalName,KeyAttributes,EntityKeyIndexStatus"
            ))
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

    /// Every contact column with its type and label.
    pub async fn contact_columns(&self) -> Result<Vec<Column>, DataverseError> {
        let rows = self
            .metadata_rows(&format!(
                "{CONTACT_METADATA}/Attributes?$select=LogicalName,AttributeType,DisplayName"
            ))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(Column {
                    logical_name: row.get("LogicalName")?.as_str()?.to_string(),
                    attribute_type: row
                        .get("AttributeType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    label: display_name(&row),
                })
            })
            .collect())
    }

    /// The organization's base language (e.g. 1033): metadata labels need one in it.
    pub async fn base_language(&self) -> Result<u32, DataverseError> {
        let rows = self.get_rows("organizations?$select=languagecode").await?;
        rows.first()
            .and_then(|row| row.get("languagecode"))
            .and_then(Value::as_u64)
            .map(|code| code as u32)
            .ok_or_else(|| {
                DataverseError::BadAnswer("organizations returned no languagecode".into())
            })
    }

    /// Creates a Yes/No column on the contact table (not yet published).
    /// Not repeated after an unclear outcome: the caller reads the columns
    /// again instead, and a column that exists is reused.
    pub async fn create_yes_no_column(
        &self,
        schema_name: &str,
        name: &str,
        language: u32,
    ) -> Result<(), DataverseError> {
        let option =
            |value: u8, text: &str| json!({"Value": value, "Label": label(text, language)});
        let body = json!({
            "@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
            "SchemaName": schema_name,
            "DisplayName": label(name, language),
            "Description": label("Didomi purpose, kept in step by consent-sync", language),
            "RequiredLevel": {
                "Value": "None",
                "CanBeChanged": true,
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"
            },
            "OptionSet": {
                "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
                "TrueOption": option(1, "Yes"),
                "FalseOption": option(0, "No"),
                "OptionSetType": "Boolean"
            }
        });
        let url = self.url(&format!("{CONTACT_METADATA}/Attributes"));
        self.send(Method::POST, &url, Some(&body), Replay::OnlyIfNotProcessed)
            .await?;
        Ok(())
    }

    /// Publishes the contact table's customizations, so that the new columns
    /// appear in forms, views and the maker portal.
    pub async fn publish_contact(&self) -> Result<(), DataverseError> {
        let body = json!({
            "ParameterXml": "<importexportxml><entities><entity>contact</entity></entities></importexportxml>"
        });
        self.send(
            Method::POST,
            &self.url("PublishXml"),
            Some(&body),
            Replay::Safe,
        )
        .await?;
        Ok(())
    }

    /// Defines an alternate key on exactly `column`. Dataverse then builds its
    /// index in the background; the key is enforced once `Active`.
    pub async fn create_contact_key(
        &self,
        schema_name: &str,
        column: &str,
        language: u32,
    ) -> Result<(), DataverseError> {
        let body = json!({
            "SchemaName": schema_name,
            "DisplayName": label(&format!("One contact per {column}"), language),
            "KeyAttributes": [column]
        });
        let url = self.url(&format!("{CONTACT_METADATA}/Keys"));
        self.send(Method::POST, &url, Some(&body), Replay::OnlyIfNotProcessed)
            .await?;
        Ok(())
    }

    /// `EntityDefinitions(LogicalName='contact')/Attributes`.
    pub async fn contact_attributes(&self) -> Result<Attributes, DataverseError> {
        let rows = self
            .metadata_rows(&format!(
                "{CONTACT_METADATA}/Attributes?$select=LogicalName,AttributeType"
            ))
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
