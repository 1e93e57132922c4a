//! The one rule for applying a parked record, used by both functions'
//! drains and by `consent-sync replay`. A parked record carries no payload:
//! the current truth is read from the source — the Didomi user, the
//! contact, the consent record — and applied through the live path's code,
//! so that applying a record after a newer change is harmless.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::config::Config;
use crate::consents::{Consents, PreferenceChoice};
use crate::dataverse::consent_records::Resolved;
use crate::dataverse::{DataverseClient, DataverseError};
use crate::didomi::deliveries::{ConsentChange, Scope};
use crate::didomi::{DidomiClient, DidomiError};
use crate::flows::didomi_to_dynamics::apply;
use crate::flows::dynamics_to_didomi::consent_event_for_record;
use crate::mapping::{
    columns_differing_from_didomi, columns_from_consents, consents_for_changes, differences,
};
use crate::parking::{ParkedDelivery, DIDOMI_TO_DYNAMICS, DYNAMICS_TO_DIDOMI};
use crate::retry::Deadline;

/// What a replay needs: the configuration and the clients of both systems.
pub struct Replayer<'a> {
    pub config: &'a Config,
    pub dataverse: &'a DataverseClient,
    pub didomi: &'a DidomiClient,
    /// The consent purposes and topics, when consent records are configured.
    pub resolved: Option<&'a Resolved>,
}

/// Why a record was not applied. `transient`: a later attempt may work
/// (a service unavailable or throttling); otherwise it needs a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayFailure {
    pub reason: String,
    pub transient: bool,
}

impl ReplayFailure {
    fn lasting(reason: impl Into<String>) -> Self {
        ReplayFailure {
            reason: reason.into(),
            transient: false,
        }
    }
}

impl std::fmt::Display for ReplayFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Whether the replay writes, or only says what it would write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    DryRun,
}

impl Replayer<'_> {
    /// A failure of either system, with `user` (when known) kept out of its
    /// message.
    fn failed(
        &self,
        user: Option<&str>,
        transient: bool,
        error: &dyn std::fmt::Display,
    ) -> ReplayFailure {
        let text = error.to_string();
        ReplayFailure {
            reason: match user {
                Some(user) => self.config.pseudonyms().redact(&text, user),
                None => text,
            },
            transient,
        }
    }

    fn dataverse_failed(&self, user: Option<&str>, error: DataverseError) -> ReplayFailure {
        self.failed(user, error.is_transient(), &error)
    }

    fn didomi_failed(&self, user: &str, error: DidomiError) -> ReplayFailure {
        self.failed(Some(user), error.is_transient(), &error)
    }

    /// Applies `record` (or, in a dry run, says what applying it would do).
    /// `Ok` with what was done — including "nothing to do" — means the record
    /// may be deleted.
    pub async fn replay(
        &self,
        record: &ParkedDelivery,
        mode: Mode,
        deadline: Deadline,
    ) -> Result<String, ReplayFailure> {
        match record.direction.as_str() {
            DIDOMI_TO_DYNAMICS => {
                let user_id = record.organization_user_id.as_deref().ok_or_else(|| {
                    ReplayFailure::lasting("the record names no organization_user_id")
                })?;
                self.didomi_user(user_id, mode, deadline).await
            }
            DYNAMICS_TO_DIDOMI => match (&record.consent_record_id, &record.contact_id) {
                (Some(id), _) => self.consent_record(id, mode, deadline).await,
                (None, Some(id)) => {
                    self.contact(id, record.columns.as_deref(), mode, deadline)
                        .await
                }
                (None, None) => Err(ReplayFailure::lasting(
                    "the record names neither a contact_id nor a consent_record_id",
                )),
            },
            // Cut: the record may not be ours.
            other => Err(ReplayFailure::lasting(format!(
                "unknown direction {}",
                crate::input::quoted(other)
            ))),
        }
    }

    /// Didomi → Dynamics: the user's current choices, applied as a full status.
    async fn didomi_user(
        &self,
        user_id: &str,
        mode: Mode,
        deadline: Deadline,
    ) -> Result<String, ReplayFailure> {
        let config = self.config;
        let user = self
            .didomi
            .session(config, deadline)
            .find_user(user_id)
            .await
            .map_err(|e| self.didomi_failed(user_id, e))?;
        let Some(user) = user else {
            return Ok("Didomi has no such user any more: nothing to apply".into());
        };
        let change = ConsentChange {
            kind: "replay".into(),
            scope: Scope::User,
            organization_user_id: Some(user_id.to_string()),
            consents: user.consents,
            status: None,
            regulation: Some(config.didomi.regulation.clone()),
            delegate_id: None,
            changed_at: user
                .updated_at
                .as_deref()
                .and_then(crate::time::parse_utc_seconds),
            delivery_id: None,
            delivery_time: user.updated_at,
        };
        if mode == Mode::DryRun {
            let desired = columns_from_consents(&config.mappings, &change.consents);
            let columns: Vec<&str> = desired.keys().map(String::as_str).collect();
            let contacts = self
                .dataverse
                .session(config, deadline)
                .find_contacts(user_id, &columns)
                .await
                .map_err(|e| self.dataverse_failed(Some(user_id), e))?;
            let differing = contacts
                .iter()
                .filter(|c| !differences(&desired, &c.columns).is_empty())
                .count();
            return Ok(format!(
                "would bring {differing} of {} contact(s) to Didomi's current state",
                contacts.len()
            ));
        }
        let outcome = apply(config, self.dataverse, self.resolved, &change, deadline)
            .await
            .map_err(|e| self.dataverse_failed(Some(user_id), e))?;
        Ok(outcome.to_string())
    }

    /// Dynamics → Didomi: the contact's current values of the columns a
    /// person changed (`columns`), sent unless Didomi already holds them.
    /// A record from before `columns` existed falls back to the columns that
    /// differ from a choice Didomi holds, as reconcile compares: without
    /// knowing what changed, a CRM default must not pass for a consent.
    async fn contact(
        &self,
        contact_id: &str,
        columns: Option<&[String]>,
        mode: Mode,
        deadline: Deadline,
    ) -> Result<String, ReplayFailure> {
        let config = self.config;
        let mut select: Vec<&str> = config.columns_to_didomi().collect();
        select.push(&config.contact_key);
        let contact = self
            .dataverse
            .session(config, deadline)
            .get_contact(contact_id, &select)
            .await
            .map_err(|e| self.dataverse_failed(None, e))?;
        let Some(contact) = contact else {
            return Ok("the contact no longer exists: nothing to send".into());
        };
        let user_id = match contact.columns.get(&config.contact_key) {
            Some(Value::String(u)) if !u.trim().is_empty() => u.trim().to_string(),
            _ => return Ok("the contact has no key value: nothing to send".into()),
        };
        let didomi = self.didomi.session(config, deadline);
        let user = didomi
            .find_user(&user_id)
            .await
            .map_err(|e| self.didomi_failed(&user_id, e))?;

        let changed: BTreeSet<String> = match columns {
            Some(columns) => {
                // The mapping may have changed since the record was parked:
                // only what still flows to Didomi is sent.
                let to_didomi: BTreeSet<&str> = config.columns_to_didomi().collect();
                let changed: BTreeSet<String> = columns
                    .iter()
                    .filter(|c| to_didomi.contains(c.as_str()))
                    .cloned()
                    .collect();
                if changed.is_empty() {
                    return Ok(
                        "none of the changed columns flows to Didomi any more: nothing to send"
                            .into(),
                    );
                }
                changed
            }
            None => {
                let Some(user) = &user else {
                    return Ok("Didomi has no such user: nothing to compare, nothing sent".into());
                };
                let differing = columns_differing_from_didomi(
                    &config.mappings,
                    &user.consents,
                    &contact.columns,
                );
                if differing.is_empty() {
                    return Ok("Didomi already holds the contact's choices".into());
                }
                differing.keys().cloned().collect()
            }
        };
        let consents = consents_for_changes(&config.mappings, &changed, &contact.columns)
            .map_err(|e| ReplayFailure::lasting(format!("cannot be expressed in Didomi: {e}")))?;
        if consents.is_empty() {
            return Ok("the changed columns hold no choice to send".into());
        }
        if user.as_ref().is_some_and(|u| holds(&u.consents, &consents)) {
            return Ok("Didomi already holds the contact's choices".into());
        }
        let what = choices(&consents);
        if mode == Mode::DryRun {
            return Ok(format!("would send the contact's current {what}"));
        }
        // The user id as Didomi spells it, when Didomi knows the user.
        let spelled = user.and_then(|u| u.organization_user_id).unwrap_or(user_id);
        didomi
            .create_consent_event(&spelled, &consents)
            .await
            .map_err(|e| self.didomi_failed(&spelled, e))?;
        Ok(format!("sent the contact's current {what}"))
    }

    /// A Contact Point Consent record: the record as it is now, turned into
    /// the event the function would send, sent unless Didomi already holds
    /// that choice.
    async fn consent_record(
        &self,
        id: &str,
        mode: Mode,
        deadline: Deadline,
    ) -> Result<String, ReplayFailure> {
        let config = self.config;
        let (Some(section), Some(resolved)) = (&config.contact_point_consent, self.resolved) else {
            return Err(ReplayFailure::lasting(
                "a consent record was parked, but contact_point_consent is not configured",
            ));
        };
        let session = self.dataverse.session(config, deadline);
        let Some(current) = session
            .consent_record(id)
            .await
            .map_err(|e| self.dataverse_failed(None, e))?
        else {
            return Ok("the consent record no longer exists: nothing to send".into());
        };
        let (user_id, consents) =
            match consent_event_for_record(&session, config, section, resolved, &current)
                .await
                .map_err(|e| self.dataverse_failed(None, e))?
            {
                Ok(event) => event,
                Err(reason) => return Ok(format!("nothing to send: {reason}")),
            };
        let didomi = self.didomi.session(config, deadline);
        let user = didomi
            .find_user(&user_id)
            .await
            .map_err(|e| self.didomi_failed(&user_id, e))?;
        if user.as_ref().is_some_and(|u| holds(&u.consents, &consents)) {
            return Ok("Didomi already holds the record's choice".into());
        }
        let what = choices(&consents);
        if mode == Mode::DryRun {
            return Ok(format!("would send the record's current {what}"));
        }
        let spelled = user.and_then(|u| u.organization_user_id).unwrap_or(user_id);
        didomi
            .create_consent_event(&spelled, &consents)
            .await
            .map_err(|e| self.didomi_failed(&spelled, e))?;
        Ok(format!("sent the record's current {what}"))
    }
}

/// The purposes and channels of an event, for a person to read.
fn choices(consents: &Consents) -> String {
    consents
        .purposes
        .iter()
        .map(|p| p.id.as_str())
        .chain(consents.channels.iter().map(|c| c.id.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether Didomi's choices already hold every choice of `event`: each
/// purpose's `enabled` (when the event sets it) and selected values, each
/// channel's `enabled`.
pub fn holds(current: &Consents, event: &Consents) -> bool {
    let set = |c: Option<&PreferenceChoice>| {
        c.map(|c| c.selected().map(str::to_string).collect::<BTreeSet<_>>())
            .unwrap_or_default()
    };
    let purposes = event.purposes.iter().all(|wanted| {
        let Some(held) = current.purpose(&wanted.id) else {
            return false;
        };
        let enabled = wanted.enabled.is_none() || wanted.enabled == held.enabled;
        let values = wanted
            .values
            .iter()
            .all(|(preference, choice)| set(Some(choice)) == set(held.values.get(preference)));
        enabled && values
    });
    let channels = event.channels.iter().all(|wanted| {
        current
            .channel(&wanted.id)
            .is_some_and(|held| wanted.enabled.is_none() || held.enabled == wanted.enabled)
    });
    purposes && channels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consents(value: serde_json::Value) -> Consents {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn didomi_holds_an_event_only_when_every_purpose_value_and_channel_matches() {
        let current = consents(serde_json::json!({
            "purposes": [{"id": "newsletter", "enabled": true, "values": {"topics": {"value": "news,sports"}}}],
            "channels": [{"id": "email", "enabled": false}]
        }));
        let held = consents(serde_json::json!({
            "purposes": [{"id": "newsletter", "values": {"topics": {"value": "sports,news"}}}],
            "channels": [{"id": "email", "enabled": false}]
        }));
        assert!(holds(&current, &held));
        for differing in [
            serde_json::json!({"purposes": [{"id": "newsletter", "enabled": false}]}),
            serde_json::json!({"purposes": [{"id": "newsletter", "values": {"topics": {"value": "news"}}}]}),
            serde_json::json!({"channels": [{"id": "email", "enabled": true}]}),
            serde_json::json!({"channels": [{"id": "sms", "enabled": true}]}),
            serde_json::json!({"purposes": [{"id": "profiling", "enabled": false}]}),
        ] {
            assert!(
                !holds(&current, &consents(differing.clone())),
                "{differing}"
            );
        }
    }
}
