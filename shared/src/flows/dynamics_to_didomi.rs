//! The `dynamics-to-didomi` function: a Dataverse webhook delivery (a contact
//! created or changed) becomes one Didomi consent event.

use std::collections::BTreeSet;
use std::time::Instant;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::config::{Config, ConfigError};
use crate::config_source::ConfigCache;
use crate::consents::Consents;
use crate::dataverse::webhook::{parse_row_change, RowChange, SIZE_EXCEEDED_HEADER};
use crate::dataverse::{DataverseClient, DataverseError};
use crate::didomi::{DidomiClient, DidomiError};
use crate::flows::didomi_to_dynamics::rejected;
use crate::gateway::{
    authenticate_key, body_bytes, header, json_response, require_post, Rejection,
};
use crate::mapping::{columns_for_changes, consents_from_columns};
use crate::parking::{
    failure_response, now_utc, park_failure, ParkedDelivery, Parking, DYNAMICS_TO_DIDOMI,
};
use crate::retry::Deadline;
use crate::token::dataverse_token_key;

/// What the function keeps between invocations: the configuration, both
/// clients with their tokens and connections, and the integration's own
/// Dataverse user id.
#[derive(Debug)]
pub struct DynamicsToDidomi {
    pub config: ConfigCache,
    pub dataverse: DataverseClient,
    pub didomi: DidomiClient,
    pub parking: Parking,
    /// `WhoAmI`'s `UserId` for the credentials it was asked with.
    own_user: Mutex<Option<(u64, String)>>,
}

/// The result of a change that was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        purposes: Vec<String>,
        channels: Vec<String>,
    },
    Skipped {
        reason: String,
    },
}

impl Outcome {
    fn skipped(reason: impl Into<String>) -> Self {
        Outcome::Skipped {
            reason: reason.into(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Skipped { .. } => "skipped",
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Sent { purposes, channels } => {
                json!({"outcome": self.name(), "purposes": purposes, "channels": channels})
            }
            Outcome::Skipped { reason } => json!({"outcome": self.name(), "reason": reason}),
        }
    }
}

/// Why a change could not be carried to Didomi.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Dataverse(#[from] DataverseError),
    #[error(transparent)]
    Didomi(#[from] DidomiError),
}

impl SyncError {
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Dataverse(e) => e.is_transient(),
            SyncError::Didomi(e) => e.is_transient(),
        }
    }

    pub fn error_class(&self) -> &'static str {
        match self {
            SyncError::Dataverse(e) => e.error_class(),
            SyncError::Didomi(e) => e.error_class(),
        }
    }

    /// 503 when a later attempt may work, 502 when a service refused what
    /// consent-sync sent (or Entra ID the credentials: 500).
    pub fn http_status(&self) -> u16 {
        match self {
            SyncError::Dataverse(e) => e.http_status(),
            SyncError::Didomi(e) if e.is_transient() => 503,
            SyncError::Didomi(_) => 502,
        }
    }
}

impl DynamicsToDidomi {
    /// Builds the function's state from the Lambda environment; the secret
    /// itself is read on the first invocation.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let (source, ttl, parking) = crate::config_source::function_environment().await?;
        let mut function = Self::new(source, ttl);
        function.parking = parking;
        Ok(function)
    }

    pub fn new(source: crate::config_source::ConfigSource, ttl: std::time::Duration) -> Self {
        let http = crate::http_client();
        DynamicsToDidomi {
            config: ConfigCache::new(source, ttl),
            dataverse: DataverseClient::new(http.clone(), crate::RetryPolicy::default()),
            didomi: DidomiClient::new(http, crate::RetryPolicy::default()),
            parking: Parking::disabled(),
            own_user: Mutex::new(None),
        }
    }

    /// Handles one HTTP request. A configuration that cannot be loaded (or
    /// lacks `dynamics_webhook_key`) fails the invocation itself, naming the
    /// field; every other failure is an HTTP answer.
    pub async fn handle(
        &self,
        request: &ApiGatewayV2httpRequest,
        deadline: Deadline,
    ) -> Result<ApiGatewayV2httpResponse, ConfigError> {
        let started = Instant::now();
        if let Err(rejection) = require_post(request) {
            return Ok(rejected(rejection, started));
        }
        let config = self
            .config
            .get()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "configuration"))?;
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
        let size_exceeded = header(request, SIZE_EXCEEDED_HEADER).is_some();
        let context = Context {
            config: &config,
            function: self,
            deadline,
        };
        match context.apply(&change, size_exceeded).await {
            Ok((outcome, user)) => {
                let user = user.as_deref().map(|id| config.pseudonyms().of(id));
                let (reason, purposes) = match &outcome {
                    Outcome::Skipped { reason } => (Some(reason.as_str()), None),
                    Outcome::Sent { purposes, channels } => (
                        None,
                        Some(json!({"purposes": purposes, "channels": channels}).to_string()),
                    ),
                };
                crate::metrics::count(outcome.name());
                tracing::info!(
                    message_name = %change.message,
                    entity = %change.entity,
                    user = user.as_deref().unwrap_or("-"),
                    outcome = outcome.name(),
                    reason,
                    choices = purposes,
                    truncated = size_exceeded,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "change handled"
                );
                Ok(json_response(200, &outcome.to_json()))
            }
            Err((error, user)) => {
                let pseudonyms = config.pseudonyms();
                let message =
                    pseudonyms.redact(&error.to_string(), user.as_deref().unwrap_or_default());
                let status = error.http_status();
                crate::metrics::count("failed");
                let record = ParkedDelivery {
                    direction: DYNAMICS_TO_DIDOMI.into(),
                    organization_user_id: None,
                    contact_id: Some(change.entity_id.clone()),
                    delivery_id: change.correlation_id.clone(),
                    delivery_time: change.operation_created_on.clone(),
                    error_class: error.error_class().into(),
                    parked_at: now_utc(),
                };
                let parked = park_failure(&self.parking, error.is_transient(), record).await;
                tracing::error!(
                    error_class = error.error_class(),
                    parked = %parked.describe(),
                    message_name = %change.message,
                    entity = %change.entity,
                    user = user.as_deref().map(|id| pseudonyms.of(id)).as_deref().unwrap_or("-"),
                    status,
                    error = %message,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "change failed; not acknowledged"
                );
                Ok(failure_response(status, &message, &parked))
            }
        }
    }

    /// The integration's own Dataverse user, asked once per warm function
    /// and set of credentials.
    async fn own_user_id(
        &self,
        config: &Config,
        deadline: Deadline,
    ) -> Result<String, DataverseError> {
        let key = dataverse_token_key(config);
        let mut slot = self.own_user.lock().await;
        if let Some((cached_key, id)) = slot.as_ref() {
            if *cached_key == key {
                return Ok(id.clone());
            }
        }
        let id = self.dataverse.session(config, deadline).who_am_i().await?;
        *slot = Some((key, id.clone()));
        Ok(id)
    }
}

struct Context<'a> {
    config: &'a Config,
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
        if change.entity != "contact" {
            return skipped(format!(
                "changes of table {:?} are not synced",
                change.entity
            ));
        }
        if !matches!(change.message.as_str(), "Create" | "Update") {
            return skipped(format!(
                "message {:?} is not synced (only Create and Update)",
                change.message
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

        let config = self.config;
        let to_didomi: BTreeSet<String> = config.columns_to_didomi().map(str::to_string).collect();
        let target = change.target.as_ref().filter(|_| !size_exceeded);
        // Which columns the change is about: the mapped ones in Target — for
        // an Update the changed ones, for a Create the ones its author set.
        // A column the image or a read fills in only because Dataverse gave
        // it a default (a new contact's `donotbulkemail` is `false`) is not a
        // choice the person made, and must not opt anyone in. Only when
        // Dataverse dropped Target is every mapped column sent.
        let changed: BTreeSet<String> = match target {
            Some(target) => to_didomi
                .iter()
                .filter(|c| target.contains_key(*c))
                .cloned()
                .collect(),
            None => to_didomi.clone(),
        };
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
        self.function
            .didomi
            .session(config, self.deadline)
            .create_consent_event(&user, &consents)
            .await
            .map_err(|e| (e.into(), Some(user.clone())))?;
        Ok((sent(&consents), Some(user)))
    }
}

fn sent(consents: &Consents) -> Outcome {
    Outcome::Sent {
        purposes: consents.purposes.iter().map(|p| p.id.clone()).collect(),
        channels: consents.channels.iter().map(|c| c.id.clone()).collect(),
    }
}
