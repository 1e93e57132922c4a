//! The guided setup (`consent-sync init`): which contact column each Didomi
//! purpose goes to, decided from both sides' metadata, and what has to be
//! created for it. Plain functions over data; the CLI reads the metadata,
//! asks, creates and writes.

pub mod document;

use std::collections::BTreeMap;

use crate::config::Config;
use crate::dataverse::metadata::{AlternateKey, Column};
use crate::didomi::client::Purpose;
use crate::mapping::{is_logical_name, Source};

pub use document::{add_mappings, NewMapping};

/// The solution publisher's customization prefix the new columns get
/// (`new` for an environment's default publisher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

pub const DEFAULT_PREFIX: &str = "new";

impl Prefix {
    /// 2 to 8 letters or digits starting with a letter, not `mscrm`: the
    /// rule Dataverse sets for publisher prefixes.
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let prefix = text.trim().to_ascii_lowercase();
        let valid = (2..=8).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && !prefix.starts_with("mscrm");
        if valid {
            Ok(Prefix(prefix))
        } else {
            Err(format!(
                "--prefix {}: a publisher prefix is 2 to 8 letters or digits starting with a letter (not mscrm); `new` is the default publisher's",
                crate::input::quoted(text)
            ))
        }
    }

    /// `{prefix}_{id}`: the id lower-cased, every character outside
    /// `a-z0-9` turned into `_`.
    pub fn column_for(&self, purpose_id: &str) -> String {
        let id: String = purpose_id
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}_{id}", self.0)
    }

    /// The schema name of the alternate key `init --create-key` defines.
    pub fn key_for(&self, column: &str) -> String {
        format!("{}_{column}_key", self.0)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happens to one purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Already in `mappings`: kept exactly as it is.
    Mapped { columns: Vec<String> },
    /// An existing Yes/No column, found by its name or its label.
    Exists { column: String, by: Found },
    /// No column fits: `{prefix}_{id}` is to be created.
    Create { column: String },
    /// Neither mapped nor created, for the reason given.
    Conflict { column: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Name,
    Label,
}

impl Action {
    /// The plan's word for it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Mapped { .. } => "mapped",
            Action::Exists { .. } => "exists",
            Action::Create { .. } => "create",
            Action::Conflict { .. } => "conflict",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPurpose {
    pub purpose: Purpose,
    pub action: Action,
}

/// The alternate key that makes upsert mode create one contact per person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlan {
    /// `upsert_mode` is off: contacts are never created, no key needed.
    NotNeeded,
    Active {
        name: String,
    },
    /// Defined, its index not built yet.
    Building {
        name: String,
        status: String,
    },
    /// None on the key column: `--create-key` defines `schema_name`.
    Missing {
        schema_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub purposes: Vec<PlannedPurpose>,
    pub key: KeyPlan,
}

impl Plan {
    /// The columns to create, with the purpose each is for.
    pub fn to_create(&self) -> impl Iterator<Item = (&str, &Purpose)> {
        self.purposes.iter().filter_map(|p| match &p.action {
            Action::Create { column } => Some((column.as_str(), &p.purpose)),
            _ => None,
        })
    }

    /// The mappings to add: to existing columns, and to created ones when
    /// `created` (they exist by the time the mappings are written).
    pub fn new_mappings(&self, created: bool) -> Vec<NewMapping> {
        self.purposes
            .iter()
            .filter_map(|p| match &p.action {
                Action::Exists { column, .. } => Some((column, p)),
                Action::Create { column } if created => Some((column, p)),
                _ => None,
            })
            .map(|(column, p)| NewMapping {
                column: column.clone(),
                purpose: p.purpose.id.clone(),
            })
            .collect()
    }

    pub fn count(&self, action: &str) -> usize {
        self.purposes
            .iter()
            .filter(|p| p.action.name() == action)
            .count()
    }
}

fn same_label(label: &str, name: &str) -> bool {
    label.trim().to_lowercase() == name.trim().to_lowercase()
}

/// Decides, for every purpose, the column it maps to. The rules, in order:
/// a purpose already in `mappings` keeps its mapping; the Yes/No column
/// `{prefix}_{id}`; else the one Yes/No column labelled with the purpose's
/// name; else `{prefix}_{id}` is to be created. A `{prefix}_{id}` of another
/// type, two label matches, or a column that something else already uses is
/// a conflict: named, never mapped, never created over.
pub fn plan(
    config: &Config,
    purposes: &[Purpose],
    columns: &[Column],
    keys: &[AlternateKey],
    prefix: &Prefix,
) -> Plan {
    let by_name: BTreeMap<&str, &Column> = columns
        .iter()
        .map(|c| (c.logical_name.as_str(), c))
        .collect();
    // Columns already spoken for, and by what.
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    taken.insert(config.contact_key.clone(), "the contact_key".into());
    if let Some(column) = &config.sync_timestamp_column {
        taken.insert(column.clone(), "the sync_timestamp_column".into());
    }
    for (index, mapping) in config.mappings.iter().enumerate() {
        taken.insert(mapping.column.clone(), format!("mappings[{index}]"));
    }
    let mut planned = Vec::with_capacity(purposes.len());
    for purpose in purposes {
        let mapped: Vec<String> = config
            .mappings
            .iter()
            .filter(|m| match &m.source {
                Source::Purpose { purpose: id }
                | Source::Preference { purpose: id, .. }
                | Source::PreferenceValue { purpose: id, .. } => *id == purpose.id,
                Source::Channel { .. } => false,
            })
            .map(|m| m.column.clone())
            .collect();
        let action = if !mapped.is_empty() {
            Action::Mapped { columns: mapped }
        } else {
            let name = prefix.column_for(&purpose.id);
            let labelled: Vec<&Column> = columns
                .iter()
                .filter(|c| c.attribute_type == "Boolean")
                .filter(|c| {
                    c.label
                        .as_deref()
                        .is_some_and(|l| same_label(l, &purpose.name))
                })
                .collect();
            let candidate = match by_name.get(name.as_str()) {
                Some(column) if column.attribute_type == "Boolean" => Action::Exists {
                    column: name,
                    by: Found::Name,
                },
                Some(column) => Action::Conflict {
                    reason: format!(
                        "column {name} exists as {}, not Yes/No: map it by hand, or choose another --prefix",
                        column.attribute_type
                    ),
                    column: name,
                },
                None => match labelled.as_slice() {
                    [one] => Action::Exists {
                        column: one.logical_name.clone(),
                        by: Found::Label,
                    },
                    [] if !is_logical_name(&name) => Action::Conflict {
                        reason: format!("{name} cannot be a column name (over 100 characters): map it by hand"),
                        column: name,
                    },
                    [] => Action::Create { column: name },
                    several => Action::Conflict {
                        reason: format!(
                            "{} Yes/No columns are labelled {:?}: {}; map one by hand",
                            several.len(),
                            purpose.name,
                            several
                                .iter()
                                .map(|c| c.logical_name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        column: String::new(),
                    },
                },
            };
            match candidate {
                Action::Exists { column, .. } | Action::Create { column }
                    if taken.contains_key(&column) =>
                {
                    Action::Conflict {
                        reason: format!("column {column} is already used by {}", taken[&column]),
                        column,
                    }
                }
                other => other,
            }
        };
        if let Action::Exists { column, .. } | Action::Create { column } = &action {
            taken.insert(column.clone(), format!("purpose {:?}", purpose.id));
        }
        planned.push(PlannedPurpose {
            purpose: purpose.clone(),
            action,
        });
    }
    Plan {
        purposes: planned,
        key: key_plan(config, keys, prefix),
    }
}

fn key_plan(config: &Config, keys: &[AlternateKey], prefix: &Prefix) -> KeyPlan {
    if !config.upsert_mode {
        return KeyPlan::NotNeeded;
    }
    let column = config.contact_key.as_str();
    if let Some(key) = keys.iter().find(|k| k.makes_unique(column)) {
        return KeyPlan::Active {
            name: key.name.clone(),
        };
    }
    match keys.iter().find(|k| k.columns == [column]) {
        Some(key) => KeyPlan::Building {
            name: key.name.clone(),
            status: key.status.clone(),
        },
        None => KeyPlan::Missing {
            schema_name: prefix.key_for(column),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(mappings: serde_json::Value, upsert: bool) -> Config {
        Config::from_json_for_setup(
            &json!({
                "client_id": "c", "client_secret": "s", "tenant_id": "t",
                "server_instance": "https://x.crm.dynamics.com",
                "upsert_mode": upsert,
                "mappings": mappings,
                "didomi": {"organization_id": "o", "api_key": "k", "api_secret": "s"}
            })
            .to_string(),
        )
        .unwrap()
    }

    fn purpose(id: &str, name: &str) -> Purpose {
        Purpose {
            id: id.into(),
            name: name.into(),
        }
    }

    fn column(name: &str, kind: &str, label: &str) -> Column {
        Column {
            logical_name: name.into(),
            attribute_type: kind.into(),
            label: (!label.is_empty()).then(|| label.to_string()),
        }
    }

    fn actions(plan: &Plan) -> Vec<(String, Action)> {
        plan.purposes
            .iter()
            .map(|p| (p.purpose.id.clone(), p.action.clone()))
            .collect()
    }

    #[test]
    fn each_rule_in_its_order() {
        let config = config(
            json!([{"column": "donotbulkemail", "purpose": "marketing", "invert": true},
                   {"column": "new_topics", "purpose": "newsletter", "preference": "topics"}]),
            false,
        );
        let purposes = [
            purpose("marketing", "Commercial communications"),
            purpose("newsletter", "Newsletter"),
            purpose("Sports-Offers", "Sports offers"),
            purpose("news", "News"),
            purpose("surveys", "  SURVEYS "),
            purpose("profiling", "Profiling"),
            purpose("partners", "Partners"),
            purpose("bulk", "Do not allow Bulk Emails"),
            purpose("analytics", "Analytics"),
        ];
        let columns = [
            column("emailaddress1", "String", "Email"),
            column("donotbulkemail", "Boolean", "Do not allow Bulk Emails"),
            column("new_topics", "String", "Topics"),
            column("new_sports_offers", "Boolean", "Sports"),
            column("new_news", "Boolean", "Headlines"),
            column("cr1_surveyoptin", "Boolean", "Surveys"),
            column("new_profiling", "Picklist", "Profiling"),
            column("new_partners_a", "Boolean", "Partners"),
            column("new_partners_b", "Boolean", "partners"),
            column("new_analytics_text", "String", "Analytics"),
        ];
        let prefix = Prefix::parse("new").unwrap();
        let plan = plan(&config, &purposes, &columns, &[], &prefix);
        let exists = |column: &str, by| Action::Exists {
            column: column.into(),
            by,
        };
        assert_eq!(
            actions(&plan),
            vec![
                ("marketing".into(), Action::Mapped { columns: vec!["donotbulkemail".into()] }),
                ("newsletter".into(), Action::Mapped { columns: vec!["new_topics".into()] }),
                ("Sports-Offers".into(), exists("new_sports_offers", Found::Name)),
                ("news".into(), exists("new_news", Found::Name)),
                ("surveys".into(), exists("cr1_surveyoptin", Found::Label)),
                ("profiling".into(), Action::Conflict {
                    column: "new_profiling".into(),
                    reason: "column new_profiling exists as Picklist, not Yes/No: map it by hand, or choose another --prefix".into()
                }),
                ("partners".into(), Action::Conflict {
                    column: String::new(),
                    reason: "2 Yes/No columns are labelled \"Partners\": new_partners_a, new_partners_b; map one by hand".into()
                }),
                ("bulk".into(), Action::Conflict {
                    column: "donotbulkemail".into(),
                    reason: "column donotbulkemail is already used by mappings[0]".into()
                }),
                ("analytics".into(), Action::Create { column: "new_analytics".into() }),
            ]
        );
        assert_eq!(plan.key, KeyPlan::NotNeeded);
        assert_eq!(
            plan.new_mappings(false),
            vec![
                NewMapping {
                    column: "new_sports_offers".into(),
                    purpose: "Sports-Offers".into()
                },
                NewMapping {
                    column: "new_news".into(),
                    purpose: "news".into()
                },
                NewMapping {
                    column: "cr1_surveyoptin".into(),
                    purpose: "surveys".into()
                },
            ]
        );
        assert_eq!(plan.new_mappings(true).len(), 4);
        assert_eq!(
            plan.to_create().map(|(c, _)| c).collect::<Vec<_>>(),
            ["new_analytics"]
        );
    }

    #[test]
    fn two_purposes_never_share_a_column() {
        let config = config(json!([]), false);
        let purposes = [purpose("a-b", "One"), purpose("a_b", "Two")];
        let plan = plan(&config, &purposes, &[], &[], &Prefix::parse("cr5").unwrap());
        assert_eq!(
            plan.purposes[0].action,
            Action::Create {
                column: "cr5_a_b".into()
            }
        );
        assert_eq!(
            plan.purposes[1].action,
            Action::Conflict {
                column: "cr5_a_b".into(),
                reason: "column cr5_a_b is already used by purpose \"a-b\"".into()
            }
        );
    }

    #[test]
    fn the_key_in_upsert_mode() {
        let config = config(json!([]), true);
        let prefix = Prefix::parse("new").unwrap();
        let key = |status: &str| AlternateKey {
            name: "k".into(),
            columns: vec!["emailaddress1".into()],
            status: status.into(),
        };
        assert_eq!(
            plan(&config, &[], &[], &[], &prefix).key,
            KeyPlan::Missing {
                schema_name: "new_emailaddress1_key".into()
            }
        );
        assert_eq!(
            plan(&config, &[], &[], &[key("Pending")], &prefix).key,
            KeyPlan::Building {
                name: "k".into(),
                status: "Pending".into()
            }
        );
        assert_eq!(
            plan(&config, &[], &[], &[key("Active")], &prefix).key,
            KeyPlan::Active { name: "k".into() }
        );
    }

    #[test]
    fn prefixes_follow_the_publisher_rule() {
        assert_eq!(
            Prefix::parse("Contoso").unwrap().column_for("Éco News!"),
            "contoso__co_news_"
        );
        for bad in ["n", "toolongprefix", "1ab", "mscrmx", "a_b", ""] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }
}
