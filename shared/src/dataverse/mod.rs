//! The Dataverse Web API, as far as consent-sync uses it: contacts (find by
//! the key column, read, update changed columns, create), `WhoAmI`, and the
//! plain row operations that webhook registration and metadata checks use.

#[cfg(feature = "jobs")]
pub mod bulk;
pub mod consent_records;
pub mod metadata;
pub mod pacing;
pub mod registration;
pub mod webhook;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::retry::{Deadline, Replay, RetryPolicy, SendError};
use crate::token::{dataverse_token_key, request_dataverse_token, TokenCache, TokenError};

pub(crate) const API_PATH: &str = "/api/data/v9.2";

/// Everything but RFC 3986's unreserved characters is percent-encoded, so
/// that `+ & # % / ? = '` inside a value can never read as query syntax.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters Dataverse does not allow in a key value addressed in a URL
/// (REFERENCE: alternate keys); such a value is created the plain way.
pub(crate) const NOT_IN_KEY_SYNTAX: &[char] = &['/', '<', '>', '*', '%', '&', ':', '\\', '?', '+'];

/// A key segment `column='value'` in a URL path: everything but unreserved
/// characters and the literal's own syntax is percent-encoded.
const KEY_SEGMENT: &AsciiSet = &QUERY_VALUE.remove(b'=').remove(b'\'');

/// An OData string literal: single quotes inside are doubled.
pub(crate) fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes one query parameter value.
pub(crate) fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// One contact row: its id and the columns that were read.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: String,
    pub columns: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataverseError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("Dataverse unavailable: {0}")]
    Unavailable(#[from] SendError),
    #[error("Dataverse answered HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("Dataverse answered in an unexpected form: {0}")]
    BadAnswer(String),
    #[error(
        "the environment lacks what the configuration names: {0} (run `consent-sync config check`)"
    )]
    Unresolved(String),
    /// A row id that is not a GUID: refused before any request.
    #[error("{0} is not a GUID")]
    NotAGuid(&'static str),
}

impl DataverseError {
    /// True when the same request may succeed later (throttling, outages);
    /// false when it needs a change of configuration or data.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            DataverseError::Token(e) => e.is_transient(),
            DataverseError::Unavailable(_) => true,
            DataverseError::Api { status, .. } => *status == 429 || *status >= 500,
            DataverseError::BadAnswer(_)
            | DataverseError::Unresolved(_)
            | DataverseError::NotAGuid(_) => false,
        }
    }

    /// What a parked record says of this failure.
    pub fn error_class(&self) -> &'static str {
        match self {
            DataverseError::Token(TokenError::Refused { status: 429, .. }) => "entra_throttled",
            DataverseError::Token(_) => "entra_unavailable",
            DataverseError::Unavailable(SendError {
                kind: crate::retry::SendErrorKind::Timeout,
                ..
            }) => "dataverse_timeout",
            DataverseError::Unavailable(SendError {
                kind: crate::retry::SendErrorKind::Paused,
                ..
            }) => "dataverse_throttled",
            DataverseError::Unavailable(_) => "dataverse_unavailable",
            DataverseError::Api { status: 429, .. } => "dataverse_throttled",
            DataverseError::Api { .. } | DataverseError::BadAnswer(_) => "dataverse_unavailable",
            DataverseError::Unresolved(_) => "configuration",
            DataverseError::NotAGuid(_) => "bad_input",
        }
    }

    /// The privilege Dataverse said the application user lacks
    /// (`prvCreateAttribute` in "… is missing prvCreateAttribute privilege …").
    pub fn missing_privilege(&self) -> Option<&str> {
        let DataverseError::Api {
            status: 403,
            message,
            ..
        } = self
        else {
            return None;
        };
        let after = &message[message.find("missing prv")? + "missing ".len()..];
        let name = after
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .filter(|name| name.len() > 3)?;
        Some(name)
    }

    /// What happened, for whoever decides the answer.
    pub fn failure(&self) -> crate::gateway::Failure {
        use crate::gateway::Failure;
        match self {
            _ if self.is_transient() => Failure::MayPass,
            DataverseError::Token(TokenError::Refused { .. }) | DataverseError::Unresolved(_) => {
                Failure::Configuration
            }
            DataverseError::NotAGuid(_) => Failure::BadInput,
            _ => Failure::Refused,
        }
    }
}

#[derive(Deserialize)]
struct ODataError {
    error: ODataErrorBody,
}

#[derive(Deserialize)]
struct ODataErrorBody {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Rows {
    value: Vec<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoAmI {
    user_id: String,
}

/// What stays the same from one invocation to the next: the HTTP client
/// (and its pooled connections), the cached token, the retry policy and
/// the pacing Dataverse asks for.
#[derive(Debug)]
pub struct DataverseClient {
    pub http: reqwest::Client,
    pub tokens: TokenCache,
    pub policy: RetryPolicy,
    /// Shared by every request of this client: one pause, one parallelism.
    pub pacing: std::sync::Arc<pacing::Pacing>,
    /// Whether the contact table has an active alternate key on the key
    /// column, for the environment and column it was asked for.
    unique_key: tokio::sync::Mutex<Option<(String, bool)>>,
}

/// The client bound to one configuration and one invocation's deadline.
pub struct Dataverse<'a> {
    client: &'a DataverseClient,
    config: &'a Config,
    deadline: Deadline,
}

impl DataverseClient {
    pub fn new(http: reqwest::Client, policy: RetryPolicy) -> Self {
        DataverseClient {
            http,
            tokens: TokenCache::default(),
            policy,
            pacing: Default::default(),
            unique_key: Default::default(),
        }
    }

    /// This client's connections, token and pacing, retried by `policy`.
    #[cfg(feature = "jobs")]
    pub(crate) fn with_policy(&self, policy: RetryPolicy) -> Self {
        DataverseClient {
            http: self.http.clone(),
            tokens: self.tokens.clone(),
            policy,
            pacing: self.pacing.clone(),
            unique_key: Default::default(),
        }
    }

    pub fn session<'a>(&'a self, config: &'a Config, deadline: Deadline) -> Dataverse<'a> {
        Dataverse {
            client: self,
            config,
            deadline,
        }
    }
}

impl Dataverse<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{API_PATH}/{path}", self.config.dataverse.server_instance)
    }

    async fn token(&self) -> Result<crate::secret::Secret, TokenError> {
        let client = self.client;
        client
            .tokens
            .get(dataverse_token_key(&self.config.dataverse), || {
                request_dataverse_token(
                    &client.http,
                    &client.policy,
                    self.deadline,
                    &self.config.dataverse,
                )
            })
            .await
    }

    /// Sends one request with retries; a 401 refreshes the token once, since
    /// a token can be revoked or expire early.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        replay: Replay,
    ) -> Result<Response, DataverseError> {
        self.send_with(method, url, body, replay, &[]).await
    }

    /// `send`, with extra headers (`Prefer`, a condition).
    async fn send_with(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        replay: Replay,
        headers: &[(&str, &str)],
    ) -> Result<Response, DataverseError> {
        let method = &method;
        self.client
            .tokens
            .send_authorized(
                || async { Ok::<_, DataverseError>(self.token().await?) },
                |token| async move {
                    let response = self
                        .client
                        .policy
                        .send_paced(
                            self.deadline,
                            replay,
                            Some(self.client.pacing.as_ref()),
                            || {
                                let mut request = self
                                    .client
                                    .http
                                    .request(method.clone(), url)
                                    .bearer_auth(token.expose())
                                    .header("Accept", "application/json")
                                    .header("OData-MaxVersion", "4.0")
                                    .header("OData-Version", "4.0");
                                // A PATCH without a condition would be an
                                // upsert: update only, unless asked otherwise.
                                if method == Method::PATCH
                                    && !headers.iter().any(|(name, _)| *name == "If-None-Match")
                                {
                                    request = request.header("If-Match", "*");
                                }
                                for (name, value) in headers {
                                    request = request.header(*name, *value);
                                }
                                if let Some(body) = body {
                                    request = request.json(body);
                                }
                                request
                            },
                        )
                        .await?;
                    Ok(response)
                },
                api_error,
            )
            .await
    }

    /// The contacts whose `contact_key` column equals `key` (Dataverse
    /// compares strings case-insensitively), with the given columns.
    pub async fn find_contacts(
        &self,
        key: &str,
        columns: &[&str],
    ) -> Result<Vec<Contact>, DataverseError> {
        self.find_contacts_where(&self.config.contact_key, key, columns)
            .await
    }

    /// The contacts whose `column` equals `value` (case-insensitively), with
    /// the given columns.
    pub(crate) async fn find_contacts_where(
        &self,
        column: &str,
        value: &str,
        columns: &[&str],
    ) -> Result<Vec<Contact>, DataverseError> {
        let mut select = vec!["contactid"];
        select.extend(columns.iter().copied().filter(|c| *c != "contactid"));
        let filter = format!("{column} eq {}", odata_string(value));
        let url = format!(
            "{}?$select={}&$filter={}",
            self.url("contacts"),
            encode_query_value(&select.join(",")),
            encode_query_value(&filter)
        );
        let response = self.send(Method::GET, &url, None, Replay::Safe).await?;
        let rows: Rows = response.json().await.map_err(|_| {
            DataverseError::BadAnswer(
                "the contacts query did not return an OData collection".into(),
            )
        })?;
        rows.value.into_iter().map(contact_of).collect()
    }

    /// Writes `changes` to an existing contact (404 when it is gone).
    pub(crate) async fn update_contact(
        &self,
        id: &str,
        changes: &Map<String, Value>,
    ) -> Result<(), DataverseError> {
        self.update("contacts", id, &Value::Object(changes.clone()))
            .await
    }

    /// Creates a contact and returns its id.
    pub(crate) async fn create_contact(
        &self,
        fields: &Map<String, Value>,
    ) -> Result<String, DataverseError> {
        self.create("contacts", &Value::Object(fields.clone()))
            .await
    }

    /// Creates the contact whose `contact_key` column is `key`, once per
    /// person even when deliveries race: with an active alternate key on
    /// that column, addressed by the key and create-only (`If-None-Match:
    /// *`), so that a row another delivery created meanwhile is refused
    /// rather than overwritten; else a plain create, which the key (when
    /// the value cannot be written in key syntax) still guards.
    /// `Ok(None)`: the contact exists already — apply the change as an update.
    pub(crate) async fn create_contact_once(
        &self,
        key: &str,
        fields: &Map<String, Value>,
    ) -> Result<Option<String>, DataverseError> {
        let by_key = !key.contains(NOT_IN_KEY_SYNTAX) && self.contact_key_is_unique().await?;
        let created = if by_key {
            let mut body = fields.clone();
            body.remove(&self.config.contact_key);
            let segment = format!("{}={}", self.config.contact_key, odata_string(key));
            let url = self.url(&format!(
                "contacts({})",
                utf8_percent_encode(&segment, KEY_SEGMENT)
            ));
            // Safe to repeat: a create that went through makes the repeat a
            // refusal, read below as "exists".
            self.send_with(
                Method::PATCH,
                &url,
                Some(&Value::Object(body)),
                Replay::Safe,
                &[("If-None-Match", "*")],
            )
            .await
            .and_then(|response| entity_id(&response, "contacts"))
        } else {
            self.create_contact(fields).await
        };
        match created {
            Ok(id) => Ok(Some(id)),
            Err(DataverseError::Api { status: 412, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One contact by id with the given columns; `None` when it no longer exists.
    pub(crate) async fn get_contact(
        &self,
        id: &str,
        columns: &[&str],
    ) -> Result<Option<Contact>, DataverseError> {
        let mut select = vec!["contactid"];
        select.extend(columns.iter().copied().filter(|c| *c != "contactid"));
        let path = format!(
            "contacts({})?$select={}",
            guid(id)?,
            encode_query_value(&select.join(","))
        );
        match self.get_json(&path).await {
            Ok(Value::Object(mut row)) => {
                row.remove("contactid");
                row.retain(|k, _| !k.starts_with('@') && !k.contains("@OData"));
                Ok(Some(Contact {
                    id: id.to_string(),
                    columns: row,
                }))
            }
            Ok(_) => Err(DataverseError::BadAnswer(
                "a contact was not returned as a JSON object".into(),
            )),
            Err(DataverseError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET` of a path below the API root (query included, already encoded).
    pub(crate) async fn get_json(&self, path_and_query: &str) -> Result<Value, DataverseError> {
        let response = self
            .send(Method::GET, &self.url(path_and_query), None, Replay::Safe)
            .await?;
        response.json().await.map_err(|_| {
            DataverseError::BadAnswer(format!(
                "the answer to GET {} is not JSON",
                path_and_query.split('?').next().unwrap_or_default()
            ))
        })
    }

    /// The rows of an OData collection query.
    pub(crate) async fn get_rows(
        &self,
        path_and_query: &str,
    ) -> Result<Vec<Map<String, Value>>, DataverseError> {
        let response = self
            .send(Method::GET, &self.url(path_and_query), None, Replay::Safe)
            .await?;
        collection(response, path_and_query).await
    }

    /// Creates a row and returns its id (from `OData-EntityId`). Not repeated
    /// after an unclear outcome, which could create it twice.
    pub async fn create(&self, entity_set: &str, body: &Value) -> Result<String, DataverseError> {
        let response = self
            .send(
                Method::POST,
                &self.url(entity_set),
                Some(body),
                Replay::OnlyIfNotProcessed,
            )
            .await?;
        entity_id(&response, entity_set)
    }

    /// Updates an existing row (`If-Match: *`: never an accidental create).
    pub(crate) async fn update(
        &self,
        entity_set: &str,
        id: &str,
        body: &Value,
    ) -> Result<(), DataverseError> {
        let url = self.url(&format!("{entity_set}({})", guid(id)?));
        self.send(Method::PATCH, &url, Some(body), Replay::Safe)
            .await?;
        Ok(())
    }

    /// Deletes a row; one that is already gone counts as deleted.
    pub async fn delete(&self, entity_set: &str, id: &str) -> Result<(), DataverseError> {
        let url = self.url(&format!("{entity_set}({})", guid(id)?));
        match self.send(Method::DELETE, &url, None, Replay::Safe).await {
            Ok(_) | Err(DataverseError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One page of the contacts that have a key value, with `columns`:
    /// the first page when `next` is `None`, else the `@odata.nextLink` of
    /// the previous page, followed as given. Returns the page's contacts
    /// (with the key column among their columns) and the next link.
    #[cfg(feature = "jobs")]
    pub(crate) async fn contacts_page(
        &self,
        next: Option<&str>,
        columns: &[&str],
        page_size: usize,
    ) -> Result<(Vec<Contact>, Option<String>), DataverseError> {
        let first = || {
            format!(
                "contacts?$select={}&$filter={}",
                self.contact_select(columns),
                encode_query_value(&format!("{} ne null", self.config.contact_key))
            )
        };
        let (rows, next) = self.rows_page(next, first, page_size, "contacts").await?;
        let contacts = rows.into_iter().map(contact_of).collect::<Result<_, _>>()?;
        Ok((contacts, next))
    }

    /// `$select` of a contact query: the id, the key, then `columns`, each
    /// once, encoded.
    #[cfg(feature = "jobs")]
    fn contact_select(&self, columns: &[&str]) -> String {
        let mut select = vec!["contactid", self.config.contact_key.as_str()];
        for column in columns {
            if !select.contains(column) {
                select.push(column);
            }
        }
        encode_query_value(&select.join(","))
    }

    /// The contacts with a key value modified at or after `since` (seconds
    /// since the epoch), newest first, at most `limit`, with `columns`.
    #[cfg(feature = "jobs")]
    pub(crate) async fn contacts_modified_since(
        &self,
        since: i64,
        columns: &[&str],
        limit: usize,
    ) -> Result<Vec<Contact>, DataverseError> {
        let first = || {
            format!(
                "contacts?$select={}&$filter={}&$orderby={}&$top={limit}",
                self.contact_select(columns),
                encode_query_value(&format!(
                    "{} ne null and modifiedon ge {}",
                    self.config.contact_key,
                    crate::time::iso_utc(since)
                )),
                encode_query_value("modifiedon desc"),
            )
        };
        let page_size = limit.clamp(1, 5000);
        let mut contacts = Vec::new();
        let (mut rows, mut next) = self.rows_page(None, first, page_size, "contacts").await?;
        loop {
            for row in rows {
                contacts.push(contact_of(row)?);
            }
            match next {
                Some(link) if contacts.len() < limit => {
                    (rows, next) = self
                        .rows_page(Some(&link), String::new, page_size, "contacts")
                        .await?;
                }
                _ => break,
            }
        }
        contacts.truncate(limit);
        Ok(contacts)
    }

    /// One page of a collection query: the first (`first()`, a path and
    /// query below the API root) when `next` is `None`, else the
    /// `@odata.nextLink` of the previous page, followed as given but only
    /// within the environment, since it carries our token's audience.
    #[cfg(feature = "jobs")]
    pub(crate) async fn rows_page(
        &self,
        next: Option<&str>,
        first: impl FnOnce() -> String,
        page_size: usize,
        what: &str,
    ) -> Result<(Vec<Map<String, Value>>, Option<String>), DataverseError> {
        let url = match next {
            Some(link)
                if link.starts_with(&format!(
                    "{}{API_PATH}/",
                    self.config.dataverse.server_instance
                )) =>
            {
                link.to_string()
            }
            Some(_) => {
                return Err(DataverseError::BadAnswer(
                    "an @odata.nextLink points outside the environment".into(),
                ))
            }
            None => self.url(&first()),
        };
        let prefer = format!("odata.maxpagesize={page_size}");
        let response = self
            .send_with(
                Method::GET,
                &url,
                None,
                Replay::Safe,
                &[("Prefer", &prefer)],
            )
            .await?;
        let not_a_page =
            || DataverseError::BadAnswer(format!("a page of {what} is not an OData collection"));
        let mut page: Map<String, Value> = response.json().await.map_err(|_| not_a_page())?;
        let next = page
            .remove("@odata.nextLink")
            .and_then(|v| v.as_str().map(str::to_string));
        let rows: Rows = serde_json::from_value(Value::Object(page)).map_err(|_| not_a_page())?;
        Ok((rows.value, next))
    }

    /// The id of the user this application acts as.
    pub async fn who_am_i(&self) -> Result<String, DataverseError> {
        let response = self
            .send(Method::GET, &self.url("WhoAmI"), None, Replay::Safe)
            .await?;
        let who: WhoAmI = response
            .json()
            .await
            .map_err(|_| DataverseError::BadAnswer("WhoAmI returned no UserId".into()))?;
        Ok(who.user_id)
    }
}

/// The rows of a collection answer (`{"value": [...]}`).
async fn collection(
    response: Response,
    path_and_query: &str,
) -> Result<Vec<Map<String, Value>>, DataverseError> {
    let what = path_and_query.split('?').next().unwrap_or_default();
    let answer: Value = response
        .json()
        .await
        .map_err(|_| DataverseError::BadAnswer(format!("the answer to GET {what} is not JSON")))?;
    let rows: Rows = serde_json::from_value(answer).map_err(|_| {
        DataverseError::BadAnswer(format!(
            "the query of {what} did not return an OData collection"
        ))
    })?;
    Ok(rows.value)
}

/// The id in a created row's `OData-EntityId` header.
fn entity_id(response: &Response, entity_set: &str) -> Result<String, DataverseError> {
    let entity_id = response
        .headers()
        .get("OData-EntityId")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            DataverseError::BadAnswer(format!(
                "the created {entity_set} row's OData-EntityId header is missing"
            ))
        })?;
    entity_id
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(str::to_string)
        .ok_or_else(|| DataverseError::BadAnswer("the OData-EntityId header holds no id".into()))
}

/// A contact row as the Web API returns it: its id, and its columns
/// without the OData annotations.
fn contact_of(mut row: Map<String, Value>) -> Result<Contact, DataverseError> {
    let id = match row.remove("contactid") {
        Some(Value::String(id)) => id,
        _ => {
            return Err(DataverseError::BadAnswer(
                "a contact row has no contactid".into(),
            ))
        }
    };
    row.retain(|k, _| !k.starts_with('@') && !k.contains("@OData"));
    Ok(Contact { id, columns: row })
}

/// A GUID as it may appear in a URL path; anything else is refused here
/// rather than spliced into the request.
pub(crate) fn guid(id: &str) -> Result<&str, DataverseError> {
    if crate::input::is_guid(id) {
        Ok(id)
    } else {
        Err(DataverseError::NotAGuid("the row id"))
    }
}

async fn api_error(response: Response) -> DataverseError {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ODataError>(&body) {
        Ok(ODataError { error }) => DataverseError::Api {
            status,
            code: error.code,
            message: error
                .message
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect(),
        },
        Err(_) => DataverseError::Api {
            status,
            code: None,
            message: StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_double_quotes_and_values_are_fully_encoded() {
        assert_eq!(odata_string("o'brien"), "'o''brien'");
        let filter = format!(
            "emailaddress1 eq {}",
            odata_string("o'brien+news&co@example.com")
        );
        assert_eq!(
            encode_query_value(&filter),
            "emailaddress1%20eq%20%27o%27%27brien%2Bnews%26co%40example.com%27"
        );
        assert_eq!(encode_query_value("a#b%c/d?e=f"), "a%23b%25c%2Fd%3Fe%3Df");
    }

    #[test]
    fn a_refused_privilege_is_named() {
        let refused = DataverseError::Api {
            status: 403,
            code: Some("0x80042f09".into()),
            message: "Principal user (Id=e1, type=8, roleCount=1) is missing prvCreateAttribute privilege (Id=a1) on OTC=2 for entity 'contact'.".into(),
        };
        assert_eq!(refused.missing_privilege(), Some("prvCreateAttribute"));
        let other = DataverseError::Api {
            status: 403,
            code: None,
            message: "Forbidden".into(),
        };
        assert_eq!(other.missing_privilege(), None);
    }

    #[test]
    fn only_guids_reach_a_url_path() {
        assert!(guid("6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c").is_ok());
        assert!(guid("x') or (1 eq 1").is_err());
    }
}
