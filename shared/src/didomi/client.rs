//! The Didomi API, as far as consent-sync uses it: a session token from the
//! API key (`POST /sessions`), consent events (`POST /consents/events`),
//! users (`GET /consents/users`) and the organization's purposes
//! (`GET /metadata/purposes`, for `init`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Config;
use crate::consents::Consents;
use crate::dataverse::encode_query_value;
use crate::didomi::deliveries::{DELEGATE_ID, DELEGATE_NAME};
use crate::retry::{Deadline, Replay, RetryPolicy, SendError};
use crate::secret::Secret;
use crate::token::{credentials_key, AccessToken, TokenCache};

/// Didomi documents one hour; used when a token's `exp` cannot be read.
const DOCUMENTED_SESSION_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum DidomiError {
    #[error("Didomi unavailable: {0}")]
    Unavailable(#[from] SendError),
    #[error("Didomi answered HTTP {status}{}: {message}", name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Api {
        status: u16,
        name: Option<String>,
        message: String,
    },
    #[error("Didomi refused the API key (HTTP {status}): {message}; check didomi.api_key and didomi.api_secret")]
    SessionRefused { status: u16, message: String },
    #[error("Didomi answered in an unexpected form: {0}")]
    BadAnswer(String),
}

impl DidomiError {
    /// What a parked record says of this failure.
    pub fn error_class(&self) -> &'static str {
        match self {
            DidomiError::Unavailable(SendError {
                kind: crate::retry::SendErrorKind::Timeout,
                ..
            }) => "didomi_timeout",
            DidomiError::Api { status: 429, .. } => "didomi_throttled",
            _ => "didomi_unavailable",
        }
    }

    /// True when the same request may succeed later (throttling, outages);
    /// false when Didomi refused what was sent.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            DidomiError::Unavailable(_) => true,
            DidomiError::Api { status, .. } | DidomiError::SessionRefused { status, .. } => {
                *status == 429 || *status >= 500
            }
            DidomiError::BadAnswer(_) => false,
        }
    }
}

/// A Didomi user as `/consents/users` returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DidomiUser {
    pub id: Option<String>,
    pub organization_user_id: Option<String>,
    #[serde(default)]
    pub consents: Consents,
    #[serde(default)]
    pub updated_at: Option<String>,
}

#[derive(Deserialize)]
struct Users {
    #[serde(default)]
    data: Vec<DidomiUser>,
    #[cfg(feature = "jobs")]
    #[serde(default)]
    cursor: Option<String>,
}

/// A purpose of the organization: its id (what consents carry) and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    pub id: String,
    pub name: String,
}

/// Purposes asked for per page.
const PURPOSES_PAGE: usize = 100;

#[derive(Deserialize)]
struct PurposesPage {
    total: usize,
    #[serde(default)]
    data: Vec<RawPurpose>,
}

#[derive(Deserialize)]
struct RawPurpose {
    id: String,
    #[serde(default)]
    description: Option<Value>,
}

impl RawPurpose {
    /// `description` is the name: a string, or (with `$translations`) an
    /// object of translations, of which English is taken, else the first.
    fn into_purpose(self) -> Purpose {
        let name = match &self.description {
            Some(Value::String(name)) => Some(name.clone()),
            Some(Value::Object(translations)) => translations
                .get("en")
                .or_else(|| translations.values().next())
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        Purpose {
            name: name.unwrap_or_else(|| self.id.clone()),
            id: self.id,
        }
    }
}

#[derive(Deserialize)]
struct SessionAnswer {
    access_token: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    name: Option<String>,
}

/// The body of `POST /consents/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ConsentEvent<'a> {
    pub user: EventUser<'a>,
    pub consents: &'a Consents,
    pub regulation: &'a str,
    pub delegate: Delegate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct EventUser<'a> {
    pub organization_user_id: &'a str,
}

/// Signs every event consent-sync writes, so that its delivery back to
/// `didomi-to-dynamics` is recognised as an echo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Delegate {
    pub id: &'static str,
    pub name: &'static str,
}

impl<'a> ConsentEvent<'a> {
    pub fn new(organization_user_id: &'a str, consents: &'a Consents, regulation: &'a str) -> Self {
        ConsentEvent {
            user: EventUser {
                organization_user_id,
            },
            consents,
            regulation,
            delegate: Delegate {
                id: DELEGATE_ID,
                name: DELEGATE_NAME,
            },
        }
    }
}

/// What stays from one invocation to the next: connections, the session
/// token, the retry policy.
#[derive(Debug)]
pub struct DidomiClient {
    pub http: reqwest::Client,
    pub sessions: TokenCache,
    pub policy: RetryPolicy,
}

/// The client bound to one configuration and one invocation's deadline.
pub struct Didomi<'a> {
    client: &'a DidomiClient,
    config: &'a Config,
    deadline: Deadline,
}

impl DidomiClient {
    pub fn new(http: reqwest::Client, policy: RetryPolicy) -> Self {
        DidomiClient {
            http,
            sessions: TokenCache::default(),
            policy,
        }
    }

    /// This client's connections and session, retried by `policy`.
    #[cfg(feature = "jobs")]
    pub(crate) fn with_policy(&self, policy: RetryPolicy) -> Self {
        DidomiClient {
            http: self.http.clone(),
            sessions: self.sessions.clone(),
            policy,
        }
    }

    pub fn session<'a>(&'a self, config: &'a Config, deadline: Deadline) -> Didomi<'a> {
        Didomi {
            client: self,
            config,
            deadline,
        }
    }
}

/// When a JWT stops being valid, from its `exp` claim; the signature is not
/// ours to check, only the lifetime is of use.
pub(crate) fn jwt_lifetime(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

impl Didomi<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.didomi.api_url)
    }

    fn organization_query(&self) -> String {
        format!(
            "organization_id={}",
            encode_query_value(&self.config.didomi.organization_id)
        )
    }

    async fn token(&self) -> Result<Secret, DidomiError> {
        let key = credentials_key(&[
            &self.config.didomi.api_url,
            self.config.didomi.api_key.expose(),
            self.config.didomi.api_secret.expose(),
        ]);
        self.client.sessions.get(key, || self.new_session()).await
    }

    async fn new_session(&self) -> Result<AccessToken, DidomiError> {
        let body = json!({
            "type": "api-key",
            "key": self.config.didomi.api_key.expose(),
            "secret": self.config.didomi.api_secret.expose(),
        });
        let url = self.url("sessions");
        let response = self
            .client
            .policy
            .send(self.deadline, Replay::Safe, || {
                self.client.http.post(&url).json(&body)
            })
            .await?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(match api_error(response).await {
                DidomiError::Api { message, .. } if status < 500 && status != 429 => {
                    DidomiError::SessionRefused { status, message }
                }
                other => other,
            });
        }
        let answer: SessionAnswer = response.json().await.map_err(|_| {
            DidomiError::BadAnswer("POST /sessions returned no access_token".into())
        })?;
        let lifetime = jwt_lifetime(&answer.access_token).unwrap_or(DOCUMENTED_SESSION_LIFETIME);
        Ok(AccessToken::new(Secret::new(answer.access_token), lifetime))
    }

    /// One request with retries; a 401 renews the session once, since a
    /// session can end before its `exp`.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, DidomiError> {
        let method = &method;
        self.client
            .sessions
            .send_authorized(
                || self.token(),
                |token| async move {
                    // Consent events are retried after unclear outcomes too:
                    // a second event with the same choices leaves the user's
                    // state as it is, while a lost one would leave Didomi wrong.
                    let response = self
                        .client
                        .policy
                        .send(self.deadline, Replay::Safe, || {
                            let request = self
                                .client
                                .http
                                .request(method.clone(), url)
                                .bearer_auth(token.expose())
                                .header("Accept", "application/json");
                            match body {
                                Some(body) => request.json(body),
                                None => request,
                            }
                        })
                        .await?;
                    Ok(response)
                },
                api_error,
            )
            .await
    }

    /// Records a consent event for the user, signed with consent-sync's delegate.
    pub(crate) async fn create_consent_event(
        &self,
        organization_user_id: &str,
        consents: &Consents,
    ) -> Result<(), DidomiError> {
        let event = ConsentEvent::new(
            organization_user_id,
            consents,
            &self.config.didomi.regulation,
        );
        let body = serde_json::to_value(&event).expect("a consent event serializes");
        let url = self.url(&format!("consents/events?{}", self.organization_query()));
        self.send(Method::POST, &url, Some(&body)).await?;
        Ok(())
    }

    /// The user with this `organization_user_id`, if Didomi knows one.
    pub async fn find_user(
        &self,
        organization_user_id: &str,
    ) -> Result<Option<DidomiUser>, DidomiError> {
        let url = self.url(&format!(
            "consents/users?{}&organization_user_id={}",
            self.organization_query(),
            encode_query_value(organization_user_id)
        ));
        let response = self.send(Method::GET, &url, None).await?;
        let users: Users = response.json().await.map_err(|_| {
            DidomiError::BadAnswer("GET /consents/users returned no `data` list".into())
        })?;
        Ok(users.data.into_iter().next())
    }

    /// One page of all users (100, as Didomi pages them): the first when
    /// `cursor` is `None`; the answer's cursor is `None` on the last page.
    #[cfg(feature = "jobs")]
    pub(crate) async fn users_page(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<DidomiUser>, Option<String>), DidomiError> {
        let mut url = self.url(&format!("consents/users?{}", self.organization_query()));
        if let Some(cursor) = cursor {
            url.push_str(&format!("&$cursor={}", encode_query_value(cursor)));
        }
        let response = self.send(Method::GET, &url, None).await?;
        let users: Users = response.json().await.map_err(|_| {
            DidomiError::BadAnswer("GET /consents/users returned no `data` list".into())
        })?;
        Ok((users.data, users.cursor.filter(|c| !c.is_empty())))
    }

    /// Every purpose of the organization, page after page until `total`
    /// are read (a page may hold fewer than asked).
    pub async fn purposes(&self) -> Result<Vec<Purpose>, DidomiError> {
        let mut purposes: Vec<Purpose> = Vec::new();
        loop {
            let url = self.url(&format!(
                "metadata/purposes?{}&$limit={PURPOSES_PAGE}&$skip={}",
                self.organization_query(),
                purposes.len()
            ));
            let response = self.send(Method::GET, &url, None).await?;
            let page: PurposesPage = response.json().await.map_err(|_| {
                DidomiError::BadAnswer(
                    "GET /metadata/purposes returned no `total` and `data` list".into(),
                )
            })?;
            if page.data.is_empty() && purposes.len() < page.total {
                return Err(DidomiError::BadAnswer(format!(
                    "GET /metadata/purposes announced {} purposes but returned none after {}",
                    page.total,
                    purposes.len()
                )));
            }
            purposes.extend(page.data.into_iter().map(RawPurpose::into_purpose));
            if purposes.len() >= page.total {
                return Ok(purposes);
            }
        }
    }

    /// Opens a session: proves the API key and secret work.
    pub async fn check_session(&self) -> Result<(), DidomiError> {
        self.token().await.map(|_| ())
    }
}

async fn api_error(response: Response) -> DidomiError {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let parsed = serde_json::from_slice::<ErrorBody>(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.clone())
        .unwrap_or_else(|| {
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_string()
        })
        .chars()
        .take(300)
        .collect();
    DidomiError::Api {
        status,
        name: parsed.and_then(|b| b.name),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let part = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!("{}.{}.sig", part(&json!({"alg": "HS256"})), part(&claims))
    }

    #[test]
    fn a_session_lasts_until_its_exp_claim() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let lifetime = jwt_lifetime(&jwt(json!({"exp": now + 600}))).unwrap();
        assert!(lifetime <= Duration::from_secs(600) && lifetime >= Duration::from_secs(598));
        assert_eq!(
            jwt_lifetime(&jwt(json!({"exp": now - 5}))),
            Some(Duration::ZERO)
        );
        assert_eq!(jwt_lifetime(&jwt(json!({"sub": "x"}))), None);
        assert_eq!(jwt_lifetime("not a jwt"), None);
    }

    #[test]
    fn a_consent_event_is_signed_with_the_delegate() {
        let consents: Consents = serde_json::from_value(json!({
            "purposes": [{"id": "newsletter", "enabled": true, "values": {"topics": {"value": "news"}}}],
            "channels": [{"id": "email", "enabled": false}]
        }))
        .unwrap();
        let event =
            serde_json::to_value(ConsentEvent::new("jane@example.com", &consents, "gdpr")).unwrap();
        assert_eq!(
            event,
            json!({
                "user": {"organization_user_id": "jane@example.com"},
                "consents": {
                    "purposes": [{"id": "newsletter", "enabled": true, "values": {"topics": {"value": "news"}}}],
                    "channels": [{"id": "email", "enabled": false}]
                },
                "regulation": "gdpr",
                "delegate": {"id": "consent-sync", "name": "Microsoft Dynamics 365"}
            })
        );
    }
}
