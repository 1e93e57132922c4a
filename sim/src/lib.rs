//! Local stand-ins for the services consent-sync talks to, speaking their
//! documented wire formats on 127.0.0.1:
//!
//! - [`Simulator`]: the Entra ID token endpoint (client credentials), the
//!   Dataverse Web API (`contacts`, `WhoAmI`, contact metadata, the webhook
//!   registration tables, and webhooks fired by contact writes) and the
//!   Didomi API (sessions, consent events, users, webhook deliveries), with
//!   injectable faults;
//! - [`gateway`]: API Gateway's HTTP API, turning HTTP requests into
//!   payload v2.0 events for a function handler;
//! - [`runtime_api`]: the Lambda Runtime API, to run a compiled function
//!   binary as Lambda does;
//! - [`sqs`]: the few Amazon SQS calls of the parked queues, on the
//!   simulator's own port.

pub mod contacts;
pub mod dataverse;
pub mod didomi;
pub mod entra;
pub mod gateway;
pub mod keys;
pub mod metadata;
pub mod odata;
pub mod query;
pub mod registration;
pub mod runtime_api;
pub mod schema;
pub mod serve;
pub mod sqs;
pub mod table;
pub mod webhooks;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use odata::ColumnType;

/// The identity the simulated environment expects.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The application user's `systemuserid`, returned by `WhoAmI`.
    pub application_user_id: String,
    /// A person working in Dynamics, for edits made "by hand".
    pub person_user_id: String,
    pub didomi_organization_id: String,
    pub didomi_api_key: String,
    pub didomi_api_secret: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            tenant_id: "00000000-0000-0000-0000-0000000000a1".into(),
            client_id: "00000000-0000-0000-0000-0000000000c1".into(),
            client_secret: "local-client-secret".into(),
            application_user_id: "00000000-0000-0000-0000-0000000000e1".into(),
            person_user_id: "75c2dd85-6a0b-4c1e-9d4f-2b3a4c5d6e7f".into(),
            didomi_organization_id: "acme".into(),
            didomi_api_key: "local-api-key".into(),
            didomi_api_secret: "local-api-secret".into(),
        }
    }
}

/// A failure to answer with, instead of serving a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and an OData (or OAuth) error body.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Wait this long, then serve the request normally: a slow service.
    Delay(Duration),
}

/// One request as the simulator received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// The path with the query exactly as sent (percent-encoding included).
    pub path_and_query: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<Value>,
}

/// A webhook delivery waiting to be sent (Dataverse's or Didomi's).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The Dataverse step that fired it; a failure becomes its failed system job.
    pub step_id: Option<String>,
}

/// A webhook delivery that was sent, and its answer (status and body) or failure.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub url: String,
    pub body: Value,
    pub result: Result<(u16, String), String>,
}

#[derive(Debug, Clone)]
pub struct DidomiUser {
    pub id: String,
    pub organization_user_id: String,
    pub consents: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// The simulated Didomi organization.
#[derive(Debug, Default)]
pub struct DidomiState {
    pub organization_id: String,
    pub api_key: String,
    pub api_secret: String,
    pub tokens: HashSet<String>,
    pub session_requests: usize,
    /// Lifetime of issued session tokens (their `exp`), in seconds.
    pub token_lifetime: u64,
    pub users: Vec<DidomiUser>,
    /// Consent events as created (with id, status, created_at).
    pub events: Vec<Value>,
    /// Where consent events are delivered as `event.created` webhooks.
    pub webhook_url: Option<String>,
    pub faults: VecDeque<Fault>,
    /// The Data Manager purposes (`/metadata/purposes`), in order.
    pub purposes: Vec<Value>,
    /// The most purposes one page holds, whatever `$limit` asks.
    pub purposes_page_cap: usize,
}

/// One HTTP request as a simulated service reads it: the path below the
/// service's root and the query's parameters.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub params: &'a HashMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

type Parts<'a> = (
    &'a Method,
    &'a str,
    &'a HashMap<String, String>,
    &'a HeaderMap,
    &'a [u8],
);

impl<'a> Request<'a> {
    pub fn parts(&self) -> Parts<'a> {
        (self.method, self.path, self.params, self.headers, self.body)
    }
}

#[derive(Debug, Default)]
pub struct SimState {
    pub identity: Identity,
    /// Base URL, e.g. `http://127.0.0.1:4567`.
    pub base_url: String,
    pub issued_tokens: HashSet<String>,
    pub token_requests: usize,
    /// `expires_in` of issued tokens; `as_text` mimics the v1 endpoint's string.
    pub token_lifetime: u64,
    pub token_lifetime_as_text: bool,
    pub columns: BTreeMap<String, ColumnType>,
    /// The contact columns' display names (a column may have none).
    pub column_labels: BTreeMap<String, String>,
    /// Columns created and not yet published (`PublishXml`).
    pub unpublished: BTreeSet<String>,
    /// The entities `PublishXml` published, in order.
    pub published: Vec<String>,
    /// Privileges the application user's role lacks (`prvCreateAttribute`, …).
    pub denied_privileges: BTreeSet<String>,
    pub contacts: Vec<Map<String, Value>>,
    pub dataverse_faults: VecDeque<Fault>,
    pub token_faults: VecDeque<Fault>,
    /// The most recent requests (at most `RECORDED_WINDOW`).
    pub requests: Vec<Recorded>,
    /// Dataverse and Didomi requests since the last `clear_requests`,
    /// beyond the recorded window too.
    pub dataverse_total: usize,
    pub didomi_total: usize,
    /// The webhook registration tables, by entity set.
    pub tables: BTreeMap<&'static str, registration::Table>,
    pub didomi: DidomiState,
    pub outgoing: Vec<Outgoing>,
    pub delivered: Vec<Delivered>,
    pub pending: Vec<JoinHandle<()>>,
    /// Where each contact sits in `contacts`, by id; checked on use and
    /// rebuilt when stale, so tests may edit `contacts` directly.
    pub contact_positions: HashMap<String, usize>,
    /// Dataverse's service protection limit, when a test sets one.
    pub service_protection: Option<ServiceProtection>,
    /// The times of the Dataverse requests inside the current window.
    pub recent_requests: VecDeque<Instant>,
    /// The service protection 429s answered so far.
    pub throttled: usize,
    /// The `x-ms-dop-hint` every Dataverse answer carries (0: none).
    pub dop_hint: u32,
    /// Amazon SQS queues (the local run's parked queue).
    pub sqs: sqs::Queues,
    /// The contact table's alternate keys.
    pub contact_keys: Vec<keys::AlternateKey>,
    /// The next contact create meets a competitor that created the same
    /// person an instant before (a race two deliveries can run).
    pub race_next_create: bool,
}

/// Service protection as Dataverse applies it per user: at most `requests`
/// in any sliding `window`; over it, 429 with `Retry-After` (whole seconds)
/// and error `0x80072322`, the wait being until the oldest request in the
/// window leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceProtection {
    pub requests: usize,
    pub window: Duration,
}

impl SimState {
    /// Adds a contact row, keeping the position index in step.
    pub fn push_contact(&mut self, row: Map<String, Value>) {
        let id = row
            .get("contactid")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(id) = id {
            if self.contact_positions.len() == self.contacts.len() {
                self.contact_positions.insert(id, self.contacts.len());
            }
        }
        self.contacts.push(row);
    }

    /// The position of contact `id` in `contacts`.
    pub fn contact_position(&mut self, id: &str) -> Option<usize> {
        let fresh = |state: &SimState, at: usize| {
            state
                .contacts
                .get(at)
                .and_then(|row| row.get("contactid"))
                .and_then(Value::as_str)
                == Some(id)
        };
        if let Some(&at) = self.contact_positions.get(id) {
            if fresh(self, at) {
                return Some(at);
            }
        }
        let stale = self.contact_positions.contains_key(id)
            || self.contact_positions.len() != self.contacts.len();
        if !stale {
            return None;
        }
        self.contact_positions = self
            .contacts
            .iter()
            .enumerate()
            .filter_map(|(at, row)| Some((row.get("contactid")?.as_str()?.to_string(), at)))
            .collect();
        let at = *self.contact_positions.get(id)?;
        fresh(self, at).then_some(at)
    }
}

/// The `x-ms-dop-hint` the simulated environment sends unless a test sets another.
pub const DEFAULT_DOP_HINT: u32 = 8;

/// The running simulator. Dropping it stops the server.
pub struct Simulator {
    pub url: String,
    state: Arc<Mutex<SimState>>,
    server: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Sample contacts for the local run and the tests.
pub fn sample_contacts() -> Vec<Map<String, Value>> {
    let contact = |id: &str, first: &str, last: &str, email: &str| {
        let mut row = Map::new();
        row.insert("contactid".into(), Value::String(id.into()));
        row.insert("firstname".into(), Value::String(first.into()));
        row.insert("lastname".into(), Value::String(last.into()));
        row.insert("emailaddress1".into(), Value::String(email.into()));
        row
    };
    vec![
        contact(
            "6d81597f-0d1a-4b8c-9f1a-2d3e4f5a6b7c",
            "Jane",
            "Doe",
            "jane.doe@example.com",
        ),
        contact(
            "3b0e6f2a-8c1d-4e5f-a6b7-c8d9e0f1a2b3",
            "Seán",
            "O'Brien",
            "o'brien+news&co@example.com",
        ),
        contact(
            "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "Ada",
            "Lovelace",
            "ada@example.com",
        ),
    ]
}

impl Simulator {
    /// Starts on an ephemeral loopback port with the standard contact
    /// columns and the given contacts (unset columns get their defaults).
    pub async fn start(
        identity: Identity,
        contacts: Vec<Map<String, Value>>,
    ) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let columns = contacts::standard_columns();
        let contacts = contacts
            .into_iter()
            .map(|c| contacts::with_defaults(&columns, c))
            .collect();
        let didomi = DidomiState {
            organization_id: identity.didomi_organization_id.clone(),
            api_key: identity.didomi_api_key.clone(),
            api_secret: identity.didomi_api_secret.clone(),
            token_lifetime: 3600,
            purposes: didomi::sample_purposes(),
            purposes_page_cap: 100,
            ..DidomiState::default()
        };
        let state = Arc::new(Mutex::new(SimState {
            identity,
            base_url: url.clone(),
            token_lifetime: 3599,
            columns,
            column_labels: contacts::standard_labels(),
            contacts,
            tables: registration::standard_tables(),
            didomi,
            dop_hint: DEFAULT_DOP_HINT,
            sqs: sqs::Queues::default(),
            contact_keys: Vec::new(),
            race_next_create: false,
            ..SimState::default()
        }));
        let app = axum::Router::new()
            .fallback(dispatch)
            .with_state(state.clone());
        let server = tokio::spawn(serve::serve(listener, app));
        Ok(Simulator { url, state, server })
    }

    /// Locks the state, to seed, inspect or inject faults.
    pub fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets columns of a contact directly, as seed data (no webhook fires).
    pub fn set_contact_columns(&self, id: &str, columns: Value) {
        let mut state = self.state();
        let row = state
            .contacts
            .iter_mut()
            .find(|c| c["contactid"] == id)
            .unwrap_or_else(|| panic!("no contact {id}"));
        if let Value::Object(columns) = columns {
            row.extend(columns);
        }
    }

    pub fn contact_by_id(&self, id: &str) -> Option<Map<String, Value>> {
        self.state()
            .contacts
            .iter()
            .find(|c| c.get("contactid").and_then(Value::as_str) == Some(id))
            .cloned()
    }

    /// Contacts whose column equals `value`, compared as Dataverse compares strings.
    pub fn contacts_where(&self, column: &str, value: &str) -> Vec<Map<String, Value>> {
        self.state()
            .contacts
            .iter()
            .filter(|c| {
                c.get(column)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.to_lowercase() == value.to_lowercase())
            })
            .cloned()
            .collect()
    }

    /// The Dataverse requests received so far (token requests excluded).
    pub fn dataverse_requests(&self) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path_and_query.starts_with("/api/"))
            .cloned()
            .collect()
    }

    pub fn writes(&self) -> Vec<Recorded> {
        self.dataverse_requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    pub fn token_requests(&self) -> usize {
        self.state().token_requests
    }

    /// Sets Dataverse's service protection limit: `requests` per sliding `window`.
    pub fn limit_dataverse(&self, requests: usize, window: Duration) {
        self.state().service_protection = Some(ServiceProtection { requests, window });
    }

    /// Defines an active alternate key on exactly `column` of the contact
    /// table, as an administrator does in Power Apps (Tables → Contact →
    /// Keys) once its index is built.
    pub fn add_contact_key(&self, column: &str) {
        self.state().contact_keys.push(keys::AlternateKey {
            name: format!("{column}_key"),
            columns: vec![column.to_string()],
            status: "Active".into(),
        });
    }

    /// The application user's role lacks `privilege` (e.g. `prvCreateAttribute`):
    /// what needs it is refused with 403, as Dataverse refuses it.
    pub fn deny_privilege(&self, privilege: &str) {
        self.state().denied_privileges.insert(privilege.to_string());
    }

    /// Adds a contact column, as a maker does in Power Apps.
    pub fn add_column(&self, name: &str, kind: ColumnType, label: &str) {
        let mut state = self.state();
        state.columns.insert(name.to_string(), kind);
        state
            .column_labels
            .insert(name.to_string(), label.to_string());
    }

    /// Replaces the Didomi organization's purposes (`(id, name)`), served at
    /// most `page_cap` a page.
    pub fn set_didomi_purposes(&self, purposes: &[(&str, &str)], page_cap: usize) {
        let mut state = self.state();
        state.didomi.purposes = purposes
            .iter()
            .map(|(id, name)| didomi::purpose(id, name))
            .collect();
        state.didomi.purposes_page_cap = page_cap;
    }

    /// The next contact create meets a competitor that created the same
    /// person an instant before, so that Dataverse refuses it.
    pub fn race_next_contact_create(&self) {
        self.state().race_next_create = true;
    }

    /// The service protection 429s answered so far.
    pub fn throttled(&self) -> usize {
        self.state().throttled
    }

    /// Deletes a contact directly, as someone in Dynamics would (no webhook fires).
    pub fn delete_contact(&self, id: &str) {
        let mut state = self.state();
        let at = state
            .contact_position(id)
            .unwrap_or_else(|| panic!("no contact {id}"));
        state.contacts.remove(at);
    }

    /// The next `times` Dataverse requests fail with `fault`.
    pub fn fail_dataverse(&self, times: usize, fault: Fault) {
        let mut state = self.state();
        state
            .dataverse_faults
            .extend(std::iter::repeat_n(fault, times));
    }

    pub fn fail_token_endpoint(&self, times: usize, fault: Fault) {
        let mut state = self.state();
        state.token_faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Invalidates every token issued so far: the next Dataverse call gets 401.
    pub fn revoke_tokens(&self) {
        self.state().issued_tokens.clear();
    }

    pub fn clear_requests(&self) {
        let mut state = self.state();
        state.requests.clear();
        state.dataverse_total = 0;
        state.didomi_total = 0;
    }

    /// (Dataverse, Didomi) requests since the last `clear_requests`, beyond
    /// the recorded window too.
    pub fn request_counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.dataverse_total, state.didomi_total)
    }

    /// The next `times` Didomi API requests fail with `fault`.
    pub fn fail_didomi(&self, times: usize, fault: Fault) {
        let mut state = self.state();
        state
            .didomi
            .faults
            .extend(std::iter::repeat_n(fault, times));
    }

    /// The Didomi API requests received so far.
    pub fn didomi_requests(&self) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path_and_query.starts_with("/v1/"))
            .cloned()
            .collect()
    }

    /// The consent events Didomi recorded.
    pub fn didomi_events(&self) -> Vec<Value> {
        self.state().didomi.events.clone()
    }

    pub fn didomi_sessions(&self) -> usize {
        self.state().didomi.session_requests
    }

    /// A Didomi user's consent status, if the user exists.
    pub fn didomi_user(&self, organization_user_id: &str) -> Option<Map<String, Value>> {
        self.state()
            .didomi
            .users
            .iter()
            .find(|u| u.organization_user_id == organization_user_id)
            .map(|u| u.consents.clone())
    }

    /// Delivers each consent event Didomi records to `url` as an
    /// `event.created` webhook, as a Didomi webhook configured for it would.
    pub fn deliver_didomi_webhooks_to(&self, url: &str) {
        self.state().didomi.webhook_url = Some(url.to_string());
    }

    /// A person edits a contact in Dynamics: the columns change and the
    /// registered webhooks fire with that person as the initiating user.
    pub fn edit_contact_as_person(&self, id: &str, changes: Value) -> Result<(), String> {
        {
            let mut state = self.state();
            let Value::Object(changes) = changes else {
                return Err("changes must be a JSON object".into());
            };
            let person = state.identity.person_user_id.clone();
            let row = state
                .contacts
                .iter_mut()
                .find(|c| c["contactid"] == id)
                .ok_or_else(|| format!("no contact {id}"))?;
            row.extend(changes.clone());
            webhooks::contact_written(&mut state, "Update", id, &changes, &person);
        }
        webhooks::send_outgoing(&self.state);
        Ok(())
    }

    /// Writes a row of a table other than contacts (`POST set` or `PATCH
    /// set(id)`) as `user`, through the Web API's own rules, and fires the
    /// webhooks that write triggers — a person working in Dynamics, or a
    /// Journeys service acting on a one-click unsubscribe.
    pub fn write_row_as(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Value,
    ) -> Result<(), String> {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        {
            let mut state = self.state();
            let body = body.to_string();
            let request = Request {
                method: &method,
                path,
                params: &HashMap::new(),
                headers: &HeaderMap::new(),
                body: body.as_bytes(),
            };
            let response = registration::serve(&mut state, &request, user)
                .ok_or_else(|| format!("{path} is not a table the simulator has"))?;
            if !response.status().is_success() {
                return Err(format!("the write was refused: {}", response.status()));
            }
        }
        webhooks::send_outgoing(&self.state);
        Ok(())
    }

    /// Waits until every webhook delivery in flight (and those they caused)
    /// has been answered.
    pub async fn settle(&self) {
        loop {
            let pending = std::mem::take(&mut self.state().pending);
            if pending.is_empty() {
                return;
            }
            for handle in pending {
                let _ = handle.await;
            }
        }
    }

    /// Webhook deliveries sent so far, to `url_prefix`.
    pub fn deliveries_to(&self, url_prefix: &str) -> Vec<Delivered> {
        self.state()
            .delivered
            .iter()
            .filter(|d| d.url.starts_with(url_prefix))
            .cloned()
            .collect()
    }

    /// Rows of a registration table (`serviceendpoints`, `asyncoperations`, …).
    pub fn rows(&self, entity_set: &str) -> Vec<Map<String, Value>> {
        self.state()
            .tables
            .get(entity_set)
            .map(|t| t.rows.clone())
            .unwrap_or_default()
    }
}

async fn dispatch(
    State(state): State<Arc<Mutex<SimState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match serve::read_body(&headers, body, MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    if let Some(action) = sqs::action(&headers) {
        return sqs::serve(&state, &action, &headers, &body).await;
    }
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let is_token = path.ends_with("/oauth2/v2.0/token");
    let is_didomi = path.starts_with("/v1/");
    let fault = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        if state.requests.len() >= RECORDED_WINDOW {
            // A bounded window: the oldest tenth goes at once.
            state.requests.drain(..RECORDED_WINDOW / 10);
        }
        if is_didomi {
            state.didomi_total += 1;
        } else if !is_token {
            state.dataverse_total += 1;
        }
        state.requests.push(Recorded {
            method: method.to_string(),
            path_and_query: uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: headers
                .iter()
                .filter(|(name, _)| *name != "authorization")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect(),
            body: (body.len() <= RECORDED_BODY_BYTES)
                .then(|| serde_json::from_slice(&body).ok())
                .flatten(),
        });
        if is_token {
            state.token_faults.pop_front()
        } else if is_didomi {
            state.didomi.faults.pop_front()
        } else if let Some(wait) = over_service_protection(&mut state) {
            Some(Fault::Status {
                status: 429,
                retry_after: Some(wait),
            })
        } else {
            state.dataverse_faults.pop_front()
        }
    };
    match fault {
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            return if is_token {
                entra::fault_response(status, retry_after)
            } else if is_didomi {
                didomi::fault_response(status, retry_after)
            } else {
                odata::fault_response(status, retry_after)
            }
        }
        None => {}
    }
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let request = |path| Request {
        method: &method,
        path,
        params: &params,
        headers: &headers,
        body: &body,
    };
    let response = {
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        if is_token {
            entra::token(&mut guard, &method, &path, &body)
        } else if let Some(rest) = path.strip_prefix("/v1") {
            didomi::serve(&mut guard, &request(rest))
        } else if let Some(rest) = path.strip_prefix(odata::API_PATH) {
            dataverse::serve(&mut guard, &request(rest))
        } else {
            odata::odata_error(
                404,
                "0x80060888",
                &format!("Resource not found for the segment '{path}'."),
            )
        }
    };
    // Asynchronous steps and Didomi webhooks go out after the answer.
    webhooks::send_outgoing(&state);
    with_dop_hint(&state, is_token || is_didomi, response)
}

/// Counts a Dataverse request against the service protection window; the
/// seconds to wait when it is over the limit.
fn over_service_protection(state: &mut SimState) -> Option<u64> {
    let limit = state.service_protection?;
    let now = Instant::now();
    while state
        .recent_requests
        .front()
        .is_some_and(|&at| now.duration_since(at) >= limit.window)
    {
        state.recent_requests.pop_front();
    }
    let over = state.recent_requests.len() >= limit.requests;
    let wait = state.recent_requests.front().map(|&oldest| {
        (oldest + limit.window)
            .saturating_duration_since(now)
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64
    });
    if over {
        state.throttled += 1;
        wait
    } else {
        state.recent_requests.push_back(now);
        None
    }
}

/// Dataverse's recommended number of requests in flight, on every answer.
fn with_dop_hint(state: &Mutex<SimState>, other_service: bool, mut response: Response) -> Response {
    let hint = state.lock().unwrap_or_else(|e| e.into_inner()).dop_hint;
    if !other_service && hint > 0 {
        response
            .headers_mut()
            .insert("x-ms-dop-hint", axum::http::HeaderValue::from(hint));
    }
    response
}

/// Requests kept for inspection: a long local run stays bounded.
pub const RECORDED_WINDOW: usize = 20_000;
/// Bodies larger than this are not kept with their request.
const RECORDED_BODY_BYTES: usize = 256 * 1024;
/// The largest request body the simulator reads (a bulk message of 1,000
/// rows fits many times).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The configuration the local run starts from (`events/local-config.json`).
pub const LOCAL_CONFIG: &str = include_str!("../../events/local-config.json");

impl Simulator {
    /// `events/local-config.json` pointed at this simulator and its identity.
    pub fn config(&self) -> Value {
        let mut config: Value =
            serde_json::from_str(LOCAL_CONFIG).expect("events/local-config.json is valid JSON");
        let identity = self.state().identity.clone();
        config["server_instance"] = Value::String(self.url.clone());
        config["authority_host"] = Value::String(self.url.clone());
        config["didomi_api_url"] = Value::String(format!("{}/v1", self.url));
        config["tenant_id"] = Value::String(identity.tenant_id);
        config["client_id"] = Value::String(identity.client_id);
        config["client_secret"] = Value::String(identity.client_secret);
        config
    }
}
