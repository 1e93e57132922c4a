//! Registration of the Dataverse webhook that feeds `dynamics-to-didomi`: one
//! service endpoint (`contract` 8 webhook, `authtype` 5 HTTP header) and, for
//! Create and Update of each table that flows to Didomi — contacts when
//! columns are mapped towards Didomi, Contact Point Consent records when
//! that section is configured — an asynchronous post-operation step with a
//! post image of the columns the function reads.
//!
//! consent-sync only ever touches rows it made: its service endpoint carries
//! a marker in `description`, and its steps and images hang off that endpoint.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::dataverse::{encode_query_value, guid, odata_string, Dataverse, DataverseError};
use crate::gateway::WEBHOOK_KEY_HEADER;

pub const DEFAULT_NAME: &str = "consent-sync";
/// Marks the service endpoints consent-sync created.
const MARKER: &str = "Managed by consent-sync";
const MESSAGES: [&str; 2] = ["Create", "Update"];
const STAGE_POST_OPERATION: i64 = 40;
const MODE_ASYNCHRONOUS: i64 = 1;
const IMAGE_POST: i64 = 1;
const STATUS_FAILED: i64 = 31;
const IMAGE_ALIAS: &str = "consent-sync";

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(transparent)]
    Dataverse(#[from] DataverseError),
    #[error("{0}")]
    Refused(String),
}

/// What one row became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowAction {
    pub table: &'static str,
    pub id: String,
    pub name: String,
    pub action: Action,
}

/// What the webhook should look like for a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    /// The tables whose changes go to Didomi.
    pub tables: Vec<DesiredTable>,
}

/// The steps of one table: the columns whose change fires them, and the
/// columns of their post image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTable {
    pub entity: String,
    pub filtering: Vec<String>,
    pub image: Vec<String>,
}

/// The consent record columns `dynamics-to-didomi` reads from the image.
const CONSENT_IMAGE: [&str; 6] = [
    "msdynmkt_contactpointconsenttype",
    "msdynmkt_contactpointtype",
    "msdynmkt_contactpointvalue",
    "msdynmkt_purposeid",
    "msdynmkt_topicid",
    "msdynmkt_value",
];

impl Desired {
    pub fn new(config: &Config, name: &str) -> Self {
        let mut tables = Vec::new();
        let mut attributes: BTreeSet<String> =
            config.columns_to_didomi().map(str::to_string).collect();
        if !attributes.is_empty() {
            attributes.insert(config.contact_key.clone());
            let attributes: Vec<String> = attributes.into_iter().collect();
            tables.push(DesiredTable {
                entity: "contact".into(),
                filtering: attributes.clone(),
                image: attributes,
            });
        }
        if config
            .contact_point_consent
            .as_ref()
            .is_some_and(|section| section.any_to_didomi())
        {
            tables.push(DesiredTable {
                entity: crate::contact_point_consent::ENTITY.into(),
                // A person's choice, or a one-click unsubscribe, changes the value.
                filtering: vec!["msdynmkt_value".into()],
                image: CONSENT_IMAGE.iter().map(|c| c.to_string()).collect(),
            });
        }
        Desired {
            name: name.to_string(),
            tables,
        }
    }

    fn step_name(&self, entity: &str, message: &str) -> String {
        format!("{}: {entity} {message} -> Didomi", self.name)
    }
}

/// The rows consent-sync made, as they are now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Registration {
    pub endpoint: Option<EndpointRow>,
    pub steps: Vec<StepRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointRow {
    pub id: String,
    pub name: String,
    pub url: Option<String>,
    pub authtype: Option<i64>,
    pub contract: Option<i64>,
    pub messageformat: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub id: String,
    pub name: String,
    /// The table, from the step's message filter.
    pub entity: Option<String>,
    /// `Create` or `Update`, from the step's message.
    pub message: Option<String>,
    pub stage: Option<i64>,
    pub mode: Option<i64>,
    pub filteringattributes: Option<String>,
    /// 0 enabled, 1 disabled.
    pub statecode: Option<i64>,
    pub images: Vec<ImageRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    pub id: String,
    pub imagetype: Option<i64>,
    pub attributes: Option<String>,
    pub messagepropertyname: Option<String>,
}

/// A failed system job of one of our steps.
#[derive(Debug, Clone, Serialize)]
pub struct FailedJob {
    pub step: String,
    pub completedon: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub registration: Registration,
    /// What differs from the configuration; empty when all matches.
    pub mismatches: Vec<String>,
    pub failed_jobs: Vec<FailedJob>,
}

fn text(row: &Map<String, Value>, column: &str) -> Option<String> {
    row.get(column).and_then(Value::as_str).map(str::to_string)
}

fn number(row: &Map<String, Value>, column: &str) -> Option<i64> {
    row.get(column).and_then(Value::as_i64)
}

fn id(row: &Map<String, Value>, column: &str) -> Result<String, DataverseError> {
    text(row, column).ok_or_else(|| DataverseError::BadAnswer(format!("a row has no {column}")))
}

fn same_attributes(actual: Option<&str>, desired: &[String]) -> bool {
    let actual: BTreeSet<&str> = actual
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    actual == desired.iter().map(String::as_str).collect()
}

fn attribute_list(attributes: &[String]) -> String {
    attributes.join(",")
}

/// `<settings><setting name="x-consent-sync-key" value="…"/></settings>`,
/// the value escaped for XML.
fn auth_value(key: &str) -> String {
    let escaped = key
        .trim()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;");
    format!("<settings><setting name=\"{WEBHOOK_KEY_HEADER}\" value=\"{escaped}\"/></settings>")
}

/// The function URL must be one Dataverse can call: https on port 443 (http
/// only on a loopback host, for the simulator).
pub(crate) fn check_url(url: &str) -> Result<String, RegistrationError> {
    let checked = crate::config::base_url("--url", url)
        .map_err(|e| RegistrationError::Refused(e.to_string()))?;
    let parsed =
        url::Url::parse(&checked).map_err(|e| RegistrationError::Refused(e.to_string()))?;
    let loopback = checked.starts_with("http://");
    if !loopback && parsed.port().is_some_and(|p| p != 443) {
        return Err(RegistrationError::Refused(
            "--url: Dataverse webhooks only call ports 443 (https) and 80".into(),
        ));
    }
    Ok(url.trim().to_string())
}

impl Dataverse<'_> {
    async fn message_id(&self, message: &str) -> Result<String, RegistrationError> {
        let rows = self
            .get_rows(&format!(
                "sdkmessages?$select=sdkmessageid,name&$filter={}",
                encode_query_value(&format!("name eq {}", odata_string(message)))
            ))
            .await?;
        let row = rows.first().ok_or_else(|| {
            RegistrationError::Refused(format!("the environment has no sdkmessage {message:?}"))
        })?;
        Ok(id(row, "sdkmessageid")?)
    }

    async fn filter_id(&self, entity: &str, message_id: &str) -> Result<String, RegistrationError> {
        let rows = self
            .get_rows(&format!(
                "sdkmessagefilters?$select=sdkmessagefilterid&$filter={}",
                encode_query_value(&format!(
                    "primaryobjecttypecode eq {} and _sdkmessageid_value eq {}",
                    odata_string(entity),
                    guid(message_id)?
                ))
            ))
            .await?;
        let row = rows.first().ok_or_else(|| {
            RegistrationError::Refused(format!(
                "the environment has no message filter for {entity}{}",
                if entity == crate::contact_point_consent::ENTITY {
                    " (is Customer Insights – Journeys installed?)"
                } else {
                    ""
                }
            ))
        })?;
        Ok(id(row, "sdkmessagefilterid")?)
    }

    /// The table a message filter is for.
    async fn filter_entity(&self, filter_id: &str) -> Result<Option<String>, RegistrationError> {
        let rows = self
            .get_rows(&format!(
                "sdkmessagefilters?$select=sdkmessagefilterid,primaryobjecttypecode&$filter={}",
                encode_query_value(&format!("sdkmessagefilterid eq {}", guid(filter_id)?))
            ))
            .await?;
        Ok(rows.first().and_then(|r| text(r, "primaryobjecttypecode")))
    }

    /// The rows registered under `name`, or nothing. A service endpoint of
    /// that name that consent-sync did not create is an error: it is not ours.
    pub async fn registration(&self, name: &str) -> Result<Registration, RegistrationError> {
        let endpoints = self
            .get_rows(&format!(
                "serviceendpoints?$select=serviceendpointid,name,url,contract,authtype,messageformat,description&$filter={}",
                encode_query_value(&format!("name eq {}", odata_string(name)))
            ))
            .await?;
        let (ours, theirs): (Vec<_>, Vec<_>) = endpoints
            .into_iter()
            .partition(|row| text(row, "description").is_some_and(|d| d.starts_with(MARKER)));
        let Some(endpoint) = ours.into_iter().next() else {
            if !theirs.is_empty() {
                return Err(RegistrationError::Refused(format!(
                    "a service endpoint named {name:?} exists that consent-sync did not create; \
                     it is left alone: choose another --name"
                )));
            }
            return Ok(Registration::default());
        };
        let endpoint = EndpointRow {
            id: id(&endpoint, "serviceendpointid")?,
            name: text(&endpoint, "name").unwrap_or_default(),
            url: text(&endpoint, "url"),
            authtype: number(&endpoint, "authtype"),
            contract: number(&endpoint, "contract"),
            messageformat: number(&endpoint, "messageformat"),
        };
        let mut message_names = Vec::new();
        for message in MESSAGES {
            message_names.push((self.message_id(message).await?, message));
        }
        let rows = self
            .get_rows(&format!(
                "sdkmessageprocessingsteps?$select=sdkmessageprocessingstepid,name,stage,mode,filteringattributes,statecode,_sdkmessageid_value,_sdkmessagefilterid_value&$filter={}",
                encode_query_value(&format!("_eventhandler_value eq {}", guid(&endpoint.id)?))
            ))
            .await?;
        let mut steps = Vec::new();
        let mut entities: Vec<(String, Option<String>)> = Vec::new();
        for row in rows {
            let step_id = id(&row, "sdkmessageprocessingstepid")?;
            let entity = match text(&row, "_sdkmessagefilterid_value") {
                None => None,
                Some(filter) => match entities
                    .iter()
                    .find(|(f, _)| f.eq_ignore_ascii_case(&filter))
                {
                    Some((_, entity)) => entity.clone(),
                    None => {
                        let entity = self.filter_entity(&filter).await?;
                        entities.push((filter, entity.clone()));
                        entity
                    }
                },
            };
            let message = text(&row, "_sdkmessageid_value").and_then(|m| {
                message_names
                    .iter()
                    .find(|(id, _)| id.eq_ignore_ascii_case(&m))
                    .map(|(_, name)| name.to_string())
            });
            let images = self
                .get_rows(&format!(
                    "sdkmessageprocessingstepimages?$select=sdkmessageprocessingstepimageid,imagetype,attributes,messagepropertyname&$filter={}",
                    encode_query_value(&format!("_sdkmessageprocessingstepid_value eq {}", guid(&step_id)?))
                ))
                .await?
                .iter()
                .map(|image| {
                    Ok(ImageRow {
                        id: id(image, "sdkmessageprocessingstepimageid")?,
                        imagetype: number(image, "imagetype"),
                        attributes: text(image, "attributes"),
                        messagepropertyname: text(image, "messagepropertyname"),
                    })
                })
                .collect::<Result<_, DataverseError>>()?;
            steps.push(StepRow {
                id: step_id,
                name: text(&row, "name").unwrap_or_default(),
                entity,
                message,
                stage: number(&row, "stage"),
                mode: number(&row, "mode"),
                filteringattributes: text(&row, "filteringattributes"),
                statecode: number(&row, "statecode"),
                images,
            });
        }
        Ok(Registration {
            endpoint: Some(endpoint),
            steps,
        })
    }

    /// Creates the webhook, or brings an existing one in line: the endpoint's
    /// url and key, each step's attributes, each image's columns.
    pub async fn register(
        &self,
        config: &Config,
        name: &str,
        url: &str,
    ) -> Result<Vec<RowAction>, RegistrationError> {
        let url = check_url(url)?;
        let key = config
            .dynamics_webhook_key()
            .map_err(|e| RegistrationError::Refused(e.to_string()))?;
        let desired = Desired::new(config, name);
        let current = self.registration(name).await?;
        let mut actions = Vec::new();

        // The key cannot be read back (Dataverse never returns `authvalue`),
        // so it is always written: a rotated key takes effect on re-register.
        let endpoint_body = json!({
            "name": name,
            "url": url,
            "contract": 8,
            "authtype": 5,
            "messageformat": 2,
            "authvalue": auth_value(key.expose()),
            "description": format!("{MARKER}: Dataverse contact changes to Didomi. Remove with `consent-sync webhook unregister`."),
        });
        let endpoint_id = match &current.endpoint {
            Some(endpoint) => {
                self.update("serviceendpoints", &endpoint.id, &endpoint_body)
                    .await?;
                actions.push(RowAction {
                    table: "serviceendpoint",
                    id: endpoint.id.clone(),
                    name: name.to_string(),
                    action: Action::Updated,
                });
                endpoint.id.clone()
            }
            None => {
                let id = self.create("serviceendpoints", &endpoint_body).await?;
                actions.push(RowAction {
                    table: "serviceendpoint",
                    id: id.clone(),
                    name: name.to_string(),
                    action: Action::Created,
                });
                id
            }
        };

        for table in &desired.tables {
            for message in MESSAGES {
                let message_id = self.message_id(message).await?;
                let mut existing = current.steps.iter().filter(|s| {
                    s.message.as_deref() == Some(message)
                        && s.entity.as_deref() == Some(table.entity.as_str())
                });
                let step_name = desired.step_name(&table.entity, message);
                let step = existing.next();
                // Leftovers of an interrupted run: one step per message is enough.
                for extra in existing {
                    self.delete_step(extra, &mut actions).await?;
                }
                let step_id = match step {
                    Some(step) => {
                        let matches =
                            same_attributes(step.filteringattributes.as_deref(), &table.filtering)
                                && step.stage == Some(STAGE_POST_OPERATION)
                                && step.mode == Some(MODE_ASYNCHRONOUS)
                                && step.name == step_name;
                        if !matches {
                            self.update(
                                "sdkmessageprocessingsteps",
                                &step.id,
                                &json!({
                                    "name": step_name,
                                    "stage": STAGE_POST_OPERATION,
                                    "mode": MODE_ASYNCHRONOUS,
                                    "filteringattributes": attribute_list(&table.filtering),
                                }),
                            )
                            .await?;
                        }
                        actions.push(RowAction {
                            table: "sdkmessageprocessingstep",
                            id: step.id.clone(),
                            name: step_name.clone(),
                            action: if matches {
                                Action::Unchanged
                            } else {
                                Action::Updated
                            },
                        });
                        step.id.clone()
                    }
                    None => {
                        let filter_id = self.filter_id(&table.entity, &message_id).await?;
                        let id = self
                            .create(
                                "sdkmessageprocessingsteps",
                                &json!({
                                    "name": step_name,
                                    "description": format!("{MARKER}"),
                                    "stage": STAGE_POST_OPERATION,
                                    "mode": MODE_ASYNCHRONOUS,
                                    "rank": 1,
                                    "supporteddeployment": 0,
                                    "asyncautodelete": true,
                                    "filteringattributes": attribute_list(&table.filtering),
                                    "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint_id})"),
                                    "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
                                    "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter_id})"),
                                }),
                            )
                            .await?;
                        actions.push(RowAction {
                            table: "sdkmessageprocessingstep",
                            id: id.clone(),
                            name: step_name.clone(),
                            action: Action::Created,
                        });
                        id
                    }
                };
                let images = step.map(|s| s.images.as_slice()).unwrap_or_default();
                self.converge_image(
                    message,
                    &step_id,
                    images,
                    &desired.name,
                    &table.image,
                    &mut actions,
                )
                .await?;
            }
        }
        // Steps of tables the configuration no longer sends (a section removed).
        for step in &current.steps {
            let wanted = desired.tables.iter().any(|t| {
                step.entity.as_deref() == Some(t.entity.as_str())
                    && step
                        .message
                        .as_deref()
                        .is_some_and(|m| MESSAGES.contains(&m))
            });
            if !wanted {
                self.delete_step(step, &mut actions).await?;
            }
        }
        Ok(actions)
    }

    async fn converge_image(
        &self,
        message: &str,
        step_id: &str,
        images: &[ImageRow],
        name: &str,
        attributes: &[String],
        actions: &mut Vec<RowAction>,
    ) -> Result<(), RegistrationError> {
        // A Create has no Target entity to image; its image hangs off the new id.
        let property = if message == "Create" { "id" } else { "Target" };
        let mut post = images.iter().filter(|i| i.imagetype == Some(IMAGE_POST));
        let image_name = format!("{name} post image");
        match post.next() {
            Some(image) => {
                let matches = same_attributes(image.attributes.as_deref(), attributes)
                    && image.messagepropertyname.as_deref() == Some(property);
                if !matches {
                    self.update(
                        "sdkmessageprocessingstepimages",
                        &image.id,
                        &json!({"attributes": attribute_list(attributes), "messagepropertyname": property}),
                    )
                    .await?;
                }
                actions.push(RowAction {
                    table: "sdkmessageprocessingstepimage",
                    id: image.id.clone(),
                    name: image_name.clone(),
                    action: if matches {
                        Action::Unchanged
                    } else {
                        Action::Updated
                    },
                });
            }
            None => {
                let id = self
                    .create(
                        "sdkmessageprocessingstepimages",
                        &json!({
                            "sdkmessageprocessingstepid@odata.bind": format!("/sdkmessageprocessingsteps({step_id})"),
                            "imagetype": IMAGE_POST,
                            "entityalias": IMAGE_ALIAS,
                            "name": image_name,
                            "messagepropertyname": property,
                            "attributes": attribute_list(attributes),
                        }),
                    )
                    .await?;
                actions.push(RowAction {
                    table: "sdkmessageprocessingstepimage",
                    id,
                    name: image_name.clone(),
                    action: Action::Created,
                });
            }
        }
        for extra in post.chain(images.iter().filter(|i| i.imagetype != Some(IMAGE_POST))) {
            self.delete("sdkmessageprocessingstepimages", &extra.id)
                .await?;
            actions.push(RowAction {
                table: "sdkmessageprocessingstepimage",
                id: extra.id.clone(),
                name: image_name.clone(),
                action: Action::Deleted,
            });
        }
        Ok(())
    }

    async fn delete_step(
        &self,
        step: &StepRow,
        actions: &mut Vec<RowAction>,
    ) -> Result<(), RegistrationError> {
        for image in &step.images {
            self.delete("sdkmessageprocessingstepimages", &image.id)
                .await?;
            actions.push(RowAction {
                table: "sdkmessageprocessingstepimage",
                id: image.id.clone(),
                name: String::new(),
                action: Action::Deleted,
            });
        }
        self.delete("sdkmessageprocessingsteps", &step.id).await?;
        actions.push(RowAction {
            table: "sdkmessageprocessingstep",
            id: step.id.clone(),
            name: step.name.clone(),
            action: Action::Deleted,
        });
        Ok(())
    }

    /// Removes exactly what `register` made under `name`: images, steps, endpoint.
    pub async fn unregister(&self, name: &str) -> Result<Vec<RowAction>, RegistrationError> {
        let current = self.registration(name).await?;
        let mut actions = Vec::new();
        for step in &current.steps {
            self.delete_step(step, &mut actions).await?;
        }
        if let Some(endpoint) = &current.endpoint {
            self.delete("serviceendpoints", &endpoint.id).await?;
            actions.push(RowAction {
                table: "serviceendpoint",
                id: endpoint.id.clone(),
                name: endpoint.name.clone(),
                action: Action::Deleted,
            });
        }
        Ok(actions)
    }

    /// The registration, what differs from the configuration, and the recent
    /// failed system jobs of its steps.
    pub async fn webhook_status(
        &self,
        config: &Config,
        name: &str,
    ) -> Result<Status, RegistrationError> {
        let registration = self.registration(name).await?;
        let desired = Desired::new(config, name);
        let mismatches = mismatches(&registration, &desired);
        let mut failed_jobs = Vec::new();
        for step in &registration.steps {
            let rows = self
                .get_rows(&format!(
                    "asyncoperations?$select=name,message,friendlymessage,completedon&$filter={}&$orderby={}&$top=5",
                    encode_query_value(&format!(
                        "statuscode eq {STATUS_FAILED} and _owningextensionid_value eq {}",
                        guid(&step.id)?
                    )),
                    encode_query_value("completedon desc")
                ))
                .await?;
            for row in rows {
                failed_jobs.push(FailedJob {
                    step: step.name.clone(),
                    completedon: text(&row, "completedon"),
                    message: text(&row, "friendlymessage")
                        .filter(|m| !m.is_empty())
                        .or_else(|| text(&row, "message"))
                        .unwrap_or_default()
                        .chars()
                        .take(500)
                        .collect(),
                });
            }
        }
        Ok(Status {
            registration,
            mismatches,
            failed_jobs,
        })
    }

    /// How many system jobs of the registration's steps failed at or after
    /// `since` (seconds since the epoch).
    #[cfg(feature = "jobs")]
    pub(crate) async fn failed_jobs_since(
        &self,
        registration: &Registration,
        since: i64,
    ) -> Result<usize, RegistrationError> {
        let mut count = 0;
        for step in &registration.steps {
            let filter = format!(
                "statuscode eq {STATUS_FAILED} and _owningextensionid_value eq {} and completedon ge {}",
                guid(&step.id)?,
                crate::time::iso_utc(since)
            );
            let first = || {
                format!(
                    "asyncoperations?$select=asyncoperationid&$filter={}",
                    encode_query_value(&filter)
                )
            };
            let (mut rows, mut next) = self.rows_page(None, first, 5000, "system jobs").await?;
            loop {
                count += rows.len();
                match next {
                    Some(link) => {
                        (rows, next) = self
                            .rows_page(Some(&link), String::new, 5000, "system jobs")
                            .await?
                    }
                    None => break,
                }
            }
        }
        Ok(count)
    }
}

/// How a registration differs from what `register` would make of it.
pub fn mismatches(registration: &Registration, desired: &Desired) -> Vec<String> {
    let mut found = Vec::new();
    let Some(endpoint) = &registration.endpoint else {
        return vec!["not registered: run `consent-sync webhook register --url …`".into()];
    };
    if endpoint.contract != Some(8)
        || endpoint.authtype != Some(5)
        || endpoint.messageformat != Some(2)
    {
        found.push("the service endpoint is not a JSON webhook with header authentication".into());
    }
    if desired.tables.is_empty() {
        found.push("the configuration sends nothing to Didomi: no step is needed".into());
    }
    for table in &desired.tables {
        let entity = table.entity.as_str();
        for message in MESSAGES {
            let steps: Vec<&StepRow> = registration
                .steps
                .iter()
                .filter(|s| {
                    s.message.as_deref() == Some(message) && s.entity.as_deref() == Some(entity)
                })
                .collect();
            let Some(step) = steps.first() else {
                found.push(format!("no step for {entity} {message}"));
                continue;
            };
            if steps.len() > 1 {
                found.push(format!("{} steps for {entity} {message}", steps.len()));
            }
            if !same_attributes(step.filteringattributes.as_deref(), &table.filtering) {
                found.push(format!(
                    "the {entity} {message} step filters on {:?}, the configuration needs {:?}",
                    step.filteringattributes.as_deref().unwrap_or_default(),
                    attribute_list(&table.filtering)
                ));
            }
            if step.stage != Some(STAGE_POST_OPERATION) || step.mode != Some(MODE_ASYNCHRONOUS) {
                found.push(format!(
                    "the {entity} {message} step is not asynchronous post-operation"
                ));
            }
            if step.statecode == Some(1) {
                found.push(format!("the {entity} {message} step is disabled"));
            }
            match step.images.iter().find(|i| i.imagetype == Some(IMAGE_POST)) {
                Some(image) if same_attributes(image.attributes.as_deref(), &table.image) => {}
                Some(_) => found.push(format!(
                    "the {entity} {message} step's post image has other columns than the configuration needs"
                )),
                None => found.push(format!("the {entity} {message} step has no post image")),
            }
        }
    }
    for step in &registration.steps {
        let wanted = desired
            .tables
            .iter()
            .any(|t| step.entity.as_deref() == Some(t.entity.as_str()));
        if !wanted {
            found.push(format!(
                "step {:?} is for a table the configuration no longer sends",
                step.name
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_escaped_for_the_settings_xml() {
        assert_eq!(
            auth_value("a\"b<c>&'d"),
            "<settings><setting name=\"x-consent-sync-key\" value=\"a&quot;b&lt;c&gt;&amp;&apos;d\"/></settings>"
        );
    }

    #[test]
    fn only_urls_dataverse_can_call_are_accepted() {
        assert!(check_url("https://abc.execute-api.eu-west-1.amazonaws.com/dynamics").is_ok());
        assert!(check_url("http://127.0.0.1:9000/").is_ok());
        assert!(check_url("http://example.com/").is_err());
        assert!(check_url("https://example.com:8443/").is_err());
        assert!(check_url("not a url").is_err());
    }
}
