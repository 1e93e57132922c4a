//! What a handled delivery came to, in either direction: the answer's body,
//! the `Outcome` metric dimension and the log line's `outcome` all read it
//! from here, so the two functions name their results one way.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::dataverse::consent_records::RecordWrites;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Didomi → Dynamics: matching contacts (or only their consent records)
    /// brought in line.
    Updated {
        contacts: usize,
        columns: BTreeSet<String>,
        records: RecordWrites,
    },
    /// Didomi → Dynamics with `upsert_mode`: the missing contact created.
    Created {
        contact_id: String,
        records: RecordWrites,
    },
    /// Dynamics → Didomi: one consent event sent.
    Sent {
        purposes: Vec<String>,
        channels: Vec<String>,
    },
    /// Nothing to do, and why: an answer of 200, not a failure.
    Skipped { reason: String },
}

impl Outcome {
    pub fn skipped(reason: impl Into<String>) -> Self {
        Outcome::Skipped {
            reason: reason.into(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Updated { .. } => "updated",
            Outcome::Created { .. } => "created",
            Outcome::Sent { .. } => "sent",
            Outcome::Skipped { .. } => "skipped",
        }
    }

    /// Why nothing was done, when nothing was.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Skipped { reason } => Some(reason),
            _ => None,
        }
    }

    /// The body of the 200 answer.
    pub fn to_json(&self) -> Value {
        let outcome = self.name();
        let mut answer = match self {
            Outcome::Updated {
                contacts, columns, ..
            } => json!({"outcome": outcome, "contacts": contacts, "columns": columns}),
            Outcome::Created { contact_id, .. } => {
                json!({"outcome": outcome, "contact_id": contact_id})
            }
            Outcome::Sent { purposes, channels } => {
                json!({"outcome": outcome, "purposes": purposes, "channels": channels})
            }
            Outcome::Skipped { reason } => json!({"outcome": outcome, "reason": reason}),
        };
        if let Outcome::Updated { records, .. } | Outcome::Created { records, .. } = self {
            if records.any() {
                answer["consent_records"] =
                    json!({"created": records.created, "updated": records.updated});
            }
        }
        answer
    }
}

/// As a replay reports it to the operator.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let records = |f: &mut std::fmt::Formatter<'_>, r: &RecordWrites| {
            if r.any() {
                write!(
                    f,
                    "; consent records: {} created, {} updated",
                    r.created, r.updated
                )?;
            }
            Ok(())
        };
        match self {
            Outcome::Updated {
                contacts,
                columns,
                records: written,
            } => {
                let columns = columns.iter().map(String::as_str).collect::<Vec<_>>();
                write!(f, "updated {contacts} contact(s): {}", columns.join(", "))?;
                records(f, written)
            }
            Outcome::Created {
                contact_id,
                records: written,
            } => {
                write!(f, "created contact {contact_id}")?;
                records(f, written)
            }
            Outcome::Sent { purposes, channels } => write!(
                f,
                "sent a consent event: purposes {}; channels {}",
                purposes.join(", "),
                channels.join(", ")
            ),
            Outcome::Skipped { reason } => write!(f, "nothing to apply: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_answers_with_its_name_and_what_it_did() {
        let records = RecordWrites {
            created: 1,
            updated: 2,
        };
        let updated = Outcome::Updated {
            contacts: 2,
            columns: BTreeSet::from(["emailaddress1".to_string()]),
            records,
        };
        assert_eq!(
            updated.to_json(),
            json!({"outcome": "updated", "contacts": 2, "columns": ["emailaddress1"],
                   "consent_records": {"created": 1, "updated": 2}})
        );
        let created = Outcome::Created {
            contact_id: "c1".into(),
            records: RecordWrites::default(),
        };
        assert_eq!(
            created.to_json(),
            json!({"outcome": "created", "contact_id": "c1"})
        );
        let sent = Outcome::Sent {
            purposes: vec!["newsletter".into()],
            channels: vec![],
        };
        assert_eq!(
            sent.to_json(),
            json!({"outcome": "sent", "purposes": ["newsletter"], "channels": []})
        );
        let skipped = Outcome::skipped("the contact is already up to date");
        assert_eq!(skipped.reason(), Some("the contact is already up to date"));
        assert_eq!(sent.reason(), None);
        assert_eq!(
            skipped.to_json(),
            json!({"outcome": "skipped", "reason": "the contact is already up to date"})
        );
        assert_eq!(
            updated.to_string(),
            "updated 2 contact(s): emailaddress1; consent records: 1 created, 2 updated"
        );
        assert_eq!(created.to_string(), "created contact c1");
        assert_eq!(
            skipped.to_string(),
            "nothing to apply: the contact is already up to date"
        );
    }
}
