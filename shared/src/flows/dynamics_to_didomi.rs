//! The `dynamics-to-didomi` function: a Dataverse webhook delivery (a contact
//! created or changed) becomes one Didomi consent event.

use std::collections::BTreeSet;
use std::time::Instant;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::config::{Config, ConfigError};
use crate::consents::{Consents, PreferenceChoice, PurposeChoice};
use crate::contact_point_consent::{ContactPoint, Entry, OPTED_IN, OPTED_OUT};
use crate::dataverse::consent_records::{effective_value, entry_of, is_record_of, ConsentRecord};
use crate::dataverse::webhook::{is_truncated, parse_row_change, RowChange, SIZE_EXCEEDED_HEADER};
use crate::dataverse::DataverseError;
use crate::didomi::DidomiError;
use crate::flows::Outcome;
use crate::function::Setup;
use crate::gateway::{authenticate_key, body_bytes, header, json_response, rejected, Rejection};
use crate::mapping::{columns_for_changes, consents_from_columns};
use crate::parking::{failure_response, now_utc, park_failure, ParkedDelivery, DYNAMICS_TO_DIDOMI};
use crate::retry::Deadline;
use crate::token::dataverse_token_key;

/// What the function keeps between invocations: the configuration, both
/// clients with their tokens and connections, and the integration's own
/// Dataverse user id.
#[derive(Debug)]
pub struct DynamicsToDidomi {
    pub setup: Setup,
    /// `WhoAmI`'s `UserId` for the credentials it was asked with.
    own_user: Mutex<Option<(u64, String)>>,
}

/// Why a change could not be carried to Didomi.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error(transparent)]
    Dataverse(#[from] DataverseError),
    #[error(transparent)]
    Didomi(#[from] DidomiError),
    /// What the change carries cannot be sent (a key no system could take).
    #[error("{0}")]
    BadInput(String),
}

impl SyncError {
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            SyncError::Dataverse(e) => e.is_transient(),
            SyncError::Didomi(e) => e.is_transient(),
            SyncError::BadInput(_) => false,
        }
    }

    pub fn error_class(&self) -> &'static str {
        match self {
            SyncError::Dataverse(e) => e.error_class(),
            SyncError::Didomi(e) => e.error_class(),
            SyncError::BadInput(_) => "bad_input",
        }
    }

    /// What happened, for whoever decides the answer.
    pub fn failure(&self) -> crate::gateway::Failure {
        use crate::gateway::Failure;
        match self {
            SyncError::Dataverse(e) => e.failure(),
            SyncError::Didomi(e) if e.is_transient() => Failure::MayPass,
            SyncError::Didomi(_) => Failure::Refused,
            SyncError::BadInput(_) => Failure::BadInput,
        }
    }
}

impl DynamicsToDidomi {
    /// From the Lambda environment; the secret is read on the first
    /// invocation.
    pub async fn from_env() -> Result<Self, ConfigError> {
        Ok(DynamicsToDidomi {
            setup: Setup::from_env().await?,
            own_user: Mutex::new(None),
        })
    }

    pub fn new(source: crate::config_source::ConfigSource, ttl: std::time::Duration) -> Self {
        DynamicsToDidomi {
            setup: Setup::new(source, ttl),
            own_user: Mutex::new(None),
        }
    }

    /// The integration's own Dataverse user, asked once per warm function
    /// and set of credentials.
    async fn own_user_id(
        &self,
        config: &Config,
        deadline: Deadline,
    ) -> Result<String, DataverseError> {
        let key = dataverse_token_key(&config.dataverse);
        let mut slot = self.own_user.lock().await;
        if let Some((cached_key, id)) = slot.as_ref() {
            if *cached_key == key {
                return Ok(id.clone());
            }
        }
        let id = self
            .setup
            .dataverse
            .session(config, deadline)
            .who_am_i()
            .await?;
        *slot = Some((key, id.clone()));
        Ok(id)
    }
}

impl crate::function::Function for DynamicsToDidomi {
    /// Handles one HTTP request. A configuration that cannot be loaded (or
    /// lacks `dynamics_webhook_key`) fails the invocation itself, naming the
    /// field; every other failure is an HTTP answer.
    async fn handle(
        &self,
        request: &ApiGatewayV2httpRequest,
        deadline: Deadline,
    ) -> Result<ApiGatewayV2httpResponse, ConfigError> {
        let started = Instant::now();
        let config = match self.setup.accept(request, started).await? {
            Ok(config) => config,
            Err(answer) => return Ok(answer),
        };
        let key = config
            .dynamics_webhook_key()
            .inspect_err(|e| tracing::error!(error = %e, "configuration"))?;
        let change = match authenticate_key(request, key)
            .and_then(|()| body_bytes(request))
            .and_then(|body| parse_row_change(&body).map_err(|e| Rejection::new(400, e.0)))
        {
            Ok(change) => change,
            Err(rejection) => return Ok(rejected(rejection, started)),
        };
        let size_exceeded = is_truncated(&change, header(request, SIZE_EXCEEDED_HEADER));
        let context = Context {
            config: &config,
            function: self,
            deadline,
        };
        match context.apply(&change, size_exceeded).await {
            Ok((outcome, user)) => {
                let user = user.as_deref().map(|id| config.pseudonyms().of(id));
                let purposes = match &outcome {
                    Outcome::Sent { purposes, channels } => {
                        Some(json!({"purposes": purposes, "channels": channels}).to_string())
                    }
                    _ => None,
                };
                crate::metrics::count(outcome.name());
                tracing::info!(
                    message_name = %crate::input::logged(&change.message, crate::input::MESSAGES, "message"),
                    entity = %crate::input::logged(&change.entity, crate::input::TABLES, "table"),
                    user = user.as_deref().unwrap_or("-"),
                    outcome = outcome.name(),
                    reason = outcome.reason(),
                    choices = purposes,
                    truncated = size_exceeded,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "change handled"
                );
                Ok(json_response(200, &outcome.to_json()))
            }
            Err((SyncError::BadInput(message), _)) => {
                Ok(rejected(Rejection::new(400, message), started))
            }
            Err((error, user)) => {
                let pseudonyms = config.pseudonyms();
                let message =
                    pseudonyms.redact(&error.to_string(), user.as_deref().unwrap_or_default());
                let status = crate::gateway::status_for(error.failure());

                let consent_record = change.entity == crate::contact_point_consent::ENTITY;
                let record = ParkedDelivery {
                    direction: DYNAMICS_TO_DIDOMI.into(),
                    organization_user_id: None,
                    contact_id: (!consent_record).then(|| change.entity_id.clone()),
                    consent_record_id: consent_record.then(|| change.entity_id.clone()),
                    // What the person changed: a replay sends these even
                    // where Didomi holds no choice yet.
                    columns: (!consent_record)
                        .then(|| changed_columns(&config, &change, size_exceeded))
                        .filter(|columns| !columns.is_empty())
                        .map(|columns| columns.into_iter().collect()),
                    delivery_id: change.correlation_id.clone(),
                    delivery_time: change.operation_created_on.clone(),
                    error_class: error.error_class().into(),
                    parked_at: now_utc(),
                };
                let parked = park_failure(&self.setup.parking, error.is_transient(), record).await;
                let user = user.as_deref().map(|id| pseudonyms.of(id));
                let user = user.as_deref().unwrap_or("-");
                // Parked is handled, only later: a warning. Not parked is
                // a change resting on Dataverse's one retry: an error.
                if parked.is_parked() {
                    tracing::warn!(
                        error_class = error.error_class(),
                        parked = %parked.describe(),
                        message_name = %crate::input::logged(&change.message, crate::input::MESSAGES, "message"),
                        entity = %crate::input::logged(&change.entity, crate::input::TABLES, "table"),
                        user,
                        status = 202,
                        error = %message,
                        duration_ms = started.elapsed().as_millis() as u64,
                        "change failed; parked for the drain"
                    );
                } else {
                    tracing::error!(
                        error_class = error.error_class(),
                        parked = %parked.describe(),
                        message_name = %crate::input::logged(&change.message, crate::input::MESSAGES, "message"),
                        entity = %crate::input::logged(&change.entity, crate::input::TABLES, "table"),
                        user,
                        status,
                        error = %message,
                        duration_ms = started.elapsed().as_millis() as u64,
                        "change failed; not acknowledged"
                    );
                }
                Ok(failure_response(
                    status,
                    &message,
                    error.error_class(),
                    &parked,
                ))
            }
        }
    }

    fn setup(&self) -> &Setup {
        &self.setup
    }
}

struct Context<'a> {
    config: &'a std::sync::Arc<Config>,
    function: &'a DynamicsToDidomi,
    deadline: Deadline,
}

/// A failure, with the user it concerned when known (to redact it).
type Failure = (SyncError, Option<String>);

impl Context<'_> {
    async fn apply(
        &self,
        change: &RowChange,
        size_exceeded: bool,
    ) -> Result<(Outcome, Option<String>), Failure> {
        let skipped = |reason: String| Ok((Outcome::skipped(reason), None));
        let consent_record = change.entity == crate::contact_point_consent::ENTITY
            && self.config.contact_point_consent.is_some();
        if change.entity != "contact" && !consent_record {
            return skipped(format!(
                "changes of table {} are not synced",
                crate::input::shown(&change.entity, crate::input::TABLES, "table")
            ));
        }
        if !matches!(change.message.as_str(), "Create" | "Update") {
            return skipped(format!(
                "message {} is not synced (only Create and Update)",
                crate::input::shown(&change.message, crate::input::MESSAGES, "message")
            ));
        }
        let own = self
            .function
            .own_user_id(self.config, self.deadline)
            .await
            .map_err(|e| (e.into(), None))?;
        if change
            .initiating_user_id
            .as_deref()
            .is_some_and(|user| user.eq_ignore_ascii_case(&own))
        {
            return skipped(
                "written by consent-sync's own application user; not synced back".into(),
            );
        }
        if consent_record {
            return self.apply_consent_record(change, size_exceeded).await;
        }

        let config: &Config = self.config;
        let target = change.target.as_ref().filter(|_| !size_exceeded);
        let changed = changed_columns(config, change, size_exceeded);
        if changed.is_empty() {
            return skipped("no column mapped towards Didomi changed".into());
        }
        let needed = columns_for_changes(&config.mappings, &changed);

        // Target is the change itself; the post image and, failing both, a
        // read of the contact fill in the rest.
        let mut columns = Map::new();
        for source in [target, change.post_image.as_ref()].into_iter().flatten() {
            for (name, value) in source {
                if (needed.contains(name.as_str()) || *name == config.contact_key)
                    && !columns.contains_key(name)
                {
                    columns.insert(name.clone(), value.clone());
                }
            }
        }
        let missing = needed.iter().any(|c| !columns.contains_key(*c))
            || !columns.contains_key(&config.contact_key);
        if missing {
            let mut select: Vec<&str> = needed.iter().copied().collect();
            select.push(&config.contact_key);
            let contact = self
                .function
                .setup
                .dataverse
                .session(config, self.deadline)
                .get_contact(&change.entity_id, &select)
                .await
                .map_err(|e| (e.into(), None))?;
            let Some(contact) = contact else {
                return skipped("the contact no longer exists".into());
            };
            for (name, value) in contact.columns {
                columns.entry(name).or_insert(value);
            }
        }

        let user = match columns.get(&config.contact_key) {
            Some(Value::String(user)) if !user.trim().is_empty() => user.trim().to_string(),
            _ => {
                return skipped(format!(
                    "the contact has no {} value to identify the Didomi user",
                    config.contact_key
                ))
            }
        };
        if let Some(problem) = crate::input::key_problem(&user) {
            let message = format!("the contact's {} {problem}", config.contact_key);
            return Err((SyncError::BadInput(message), None));
        }
        columns.retain(|name, _| needed.contains(name.as_str()));
        let consents = match consents_from_columns(&config.mappings, &columns) {
            Ok(consents) => consents,
            Err(e) => {
                return Ok((
                    Outcome::skipped(format!("cannot be expressed in Didomi: {e}")),
                    Some(user),
                ))
            }
        };
        if consents.is_empty() {
            return Ok((
                Outcome::skipped("the changed columns hold no choice to send"),
                Some(user),
            ));
        }
        self.send(user, &consents).await
    }
}

impl Context<'_> {
    /// Sends the consent event for `user`, as Didomi spells the id.
    async fn send(
        &self,
        user: String,
        consents: &Consents,
    ) -> Result<(Outcome, Option<String>), Failure> {
        self.function
            .setup
            .didomi
            .session(self.config, self.deadline)
            .create_consent_event(&user, consents)
            .await
            .map_err(|e| (e.into(), Some(user.clone())))?;
        Ok((sent(consents), Some(user)))
    }

    /// A Contact Point Consent record created or changed in Dynamics — a
    /// person's choice, a one-click unsubscribe in a Journeys e-mail —
    /// becomes one consent event for the Didomi purpose it stands for.
    async fn apply_consent_record(
        &self,
        change: &RowChange,
        size_exceeded: bool,
    ) -> Result<(Outcome, Option<String>), Failure> {
        let skipped = |reason: String| Ok((Outcome::skipped(reason), None));
        let config: &Config = self.config;
        let Some(section) = &config.contact_point_consent else {
            return skipped("contact_point_consent is not configured".into());
        };
        let dataverse = &self.function.setup.dataverse;
        let resolved = self
            .function
            .setup
            .resolved
            .get(self.config, dataverse, self.deadline)
            .await
            .map_err(|e| (e.into(), None))?
            .ok_or_else(|| {
                (
                    SyncError::Dataverse(DataverseError::Unresolved(
                        "contact_point_consent".into(),
                    )),
                    None,
                )
            })?;
        let session = dataverse.session(config, self.deadline);

        // Target and the post image carry the record; a truncated context,
        // or one without them, is completed by reading the record.
        let mut columns = Map::new();
        let target = change.target.as_ref().filter(|_| !size_exceeded);
        for source in [target, change.post_image.as_ref()].into_iter().flatten() {
            for (name, value) in source {
                columns.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        let text = |name: &str| {
            columns
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let number = |name: &str| columns.get(name).and_then(Value::as_i64);
        let mut record = ConsentRecord {
            id: change.entity_id.clone(),
            address: text("msdynmkt_contactpointvalue").unwrap_or_default(),
            value: number("msdynmkt_value"),
            kind: number("msdynmkt_contactpointconsenttype"),
            purpose_id: text("msdynmkt_purposeid"),
            topic_id: text("msdynmkt_topicid"),
            modified_on: text("modifiedon"),
        };
        let channel = number("msdynmkt_contactpointtype");
        if record.address.is_empty()
            || record.value.is_none()
            || record.kind.is_none()
            || channel.is_none()
        {
            match session
                .consent_record(&change.entity_id)
                .await
                .map_err(|e| (e.into(), None))?
            {
                Some(read) => record = read,
                None => return skipped("the consent record no longer exists".into()),
            }
        }
        let channel = channel.or(Some(section.channel.code()));
        if channel != Some(section.channel.code()) {
            return skipped(format!(
                "a consent record of another channel than the configured {}",
                section.channel.name()
            ));
        }
        let (user, consents) =
            match consent_event_for_record(&session, config, section, &resolved, &record).await {
                Ok(Ok(event)) => event,
                Ok(Err(reason)) => return skipped(reason),
                Err(e) => return Err((e.into(), None)),
            };
        self.send(user, &consents).await
    }
}

/// Which mapped columns a contact change is about: the ones towards Didomi
/// in Target — for an Update the changed ones, for a Create the ones its
/// author set. A column the image or a read fills in only because Dataverse
/// gave it a default (a new contact's `donotbulkemail` is `false`) is not a
/// choice the person made, and must not opt anyone in. Only when Dataverse
/// dropped Target is every mapped column taken.
pub(crate) fn changed_columns(
    config: &Config,
    change: &RowChange,
    size_exceeded: bool,
) -> BTreeSet<String> {
    let to_didomi = config.columns_to_didomi().map(str::to_string);
    match change.target.as_ref().filter(|_| !size_exceeded) {
        Some(target) => to_didomi.filter(|c| target.contains_key(c)).collect(),
        None => to_didomi.collect(),
    }
}

/// The consent event a consent record calls for: the Didomi user (the
/// address itself, or the key of the contact whose column holds it) and the
/// choice — `enabled` for a purpose record; for a topic record, the
/// preference's values whose topic records are Opted In, without `enabled`.
/// `Ok(Err(reason))` when the record calls for no event.
pub(crate) async fn consent_event_for_record(
    session: &crate::dataverse::Dataverse<'_>,
    config: &Config,
    section: &crate::contact_point_consent::ContactPointConsent,
    resolved: &crate::dataverse::consent_records::Resolved,
    record: &ConsentRecord,
) -> Result<Result<(String, Consents), String>, DataverseError> {
    let Some(entry) = entry_of(record, resolved) else {
        return Ok(Err(
            "the record is not of a configured purpose or topic".into()
        ));
    };
    let value = match record.value {
        Some(OPTED_IN) => true,
        Some(OPTED_OUT) => false,
        _ => {
            return Ok(Err(
                "the record's value is Not Set: no choice to send".into()
            ))
        }
    };

    // The Didomi user: the address itself, or the key of the contact
    // whose column holds it.
    let user = match &section.contact_point {
        ContactPoint::OrganizationUserId => record.address.trim().to_string(),
        ContactPoint::Column(column) => {
            let contacts = session
                .find_contacts_where(column, &record.address, &[&config.contact_key])
                .await?;
            let key = contacts.iter().find_map(|c| {
                c.columns
                    .get(&config.contact_key)?
                    .as_str()
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
            });
            match key {
                Some(key) => key,
                None => {
                    return Ok(Err(format!(
                        "no contact with this {column} has a {} to identify the Didomi user",
                        config.contact_key
                    )))
                }
            }
        }
    };

    let consents = match entry {
        Entry::Purpose(i) => {
            let purpose = &section.purposes[i];
            if !purpose.direction.to_didomi() {
                return Ok(Err("this purpose does not flow to Didomi".into()));
            }
            Consents {
                purposes: vec![PurposeChoice {
                    id: purpose.purpose.clone(),
                    enabled: Some(value),
                    values: Default::default(),
                }],
                channels: Vec::new(),
            }
        }
        Entry::Topic(i) => {
            let topic = &section.topics[i];
            if !topic.direction.to_didomi() {
                return Ok(Err("this topic does not flow to Didomi".into()));
            }
            // Didomi takes a preference's values whole: every value of
            // this preference whose topic record is now Opted In.
            let records = session
                .consent_records(&record.address, section.channel)
                .await?;
            let selected: Vec<&str> = section
                .topics
                .iter()
                .enumerate()
                .filter(|(_, t)| t.purpose == topic.purpose && t.preference == topic.preference)
                .filter(|(j, _)| {
                    if *j == i {
                        return value;
                    }
                    // Among duplicates the most recently modified counts,
                    // as Journeys reads them.
                    let mine = records
                        .iter()
                        .filter(|r| is_record_of(r, resolved, Entry::Topic(*j)))
                        .map(|r| (r.modified_on.as_deref(), r.value));
                    effective_value(mine) == Some(OPTED_IN)
                })
                .map(|(_, t)| t.value.as_str())
                .collect();
            let mut values = std::collections::BTreeMap::new();
            values.insert(
                topic.preference.clone(),
                PreferenceChoice {
                    value: Some(selected.join(",")),
                },
            );
            Consents {
                purposes: vec![PurposeChoice {
                    id: topic.purpose.clone(),
                    enabled: None,
                    values,
                }],
                channels: Vec::new(),
            }
        }
    };
    Ok(Ok((user, consents)))
}

fn sent(consents: &Consents) -> Outcome {
    Outcome::Sent {
        purposes: consents.purposes.iter().map(|p| p.id.clone()).collect(),
        channels: consents.channels.iter().map(|c| c.id.clone()).collect(),
    }
}
