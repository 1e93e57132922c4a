//! What Dataverse does after a contact is written: for each enabled
//! asynchronous step registered on the message (and, for Update, on one of
//! the columns sent), it posts the `RemoteExecutionContext` to the step's
//! webhook with the registered header, the initiating user and a post image
//! of the registered columns. A delivery that fails becomes a failed system
//! job (`asyncoperations`, statuscode 31); 502/503/504 get one more attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::odata::ColumnType;
use crate::schema::{MESSAGE_CREATE, MESSAGE_UPDATE};
use crate::{Outgoing, SimState};

const NS: &str = "http://schemas.microsoft.com/xrm/2011/Contracts";
/// Over this, Dataverse drops `InputParameters` and the images.
const MAX_CONTEXT_BYTES: usize = 256 * 1024;

fn text<'a>(row: &'a Map<String, Value>, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or_default()
}

fn millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// A column value in the data contract's typed form.
fn typed(kind: Option<&ColumnType>, value: &Value) -> Value {
    match (kind, value) {
        (Some(ColumnType::Picklist), Value::Number(n)) => {
            json!({"__type": format!("OptionSetValue:{NS}"), "Value": n})
        }
        _ => value.clone(),
    }
}

fn entity(
    state: &SimState,
    logical_name: &str,
    id: &str,
    attributes: &Map<String, Value>,
) -> Value {
    let attributes: Vec<Value> = attributes
        .iter()
        .map(|(k, v)| {
            let (key, value) = attribute(state, logical_name, k, v);
            json!({"key": key, "value": value})
        })
        .collect();
    json!({
        "__type": format!("Entity:{NS}"),
        "Attributes": attributes,
        "EntityState": null, "FormattedValues": [], "Id": id, "KeyAttributes": [],
        "LogicalName": logical_name, "RelatedEntities": [], "RowVersion": null
    })
}

/// A stored column as the context carries it: a lookup (`_x_value` in the
/// Web API) becomes attribute `x` holding an `EntityReference`, a choice an
/// `OptionSetValue`.
fn attribute(state: &SimState, logical_name: &str, column: &str, value: &Value) -> (String, Value) {
    if let Some(name) = column
        .strip_prefix('_')
        .and_then(|c| c.strip_suffix("_value"))
    {
        let target = name.strip_suffix("id").unwrap_or(name);
        let reference = json!({"__type": format!("EntityReference:{NS}"), "Id": value,
            "KeyAttributes": [], "LogicalName": target, "Name": null, "RowVersion": null});
        return (
            name.to_string(),
            if value.is_null() {
                Value::Null
            } else {
                reference
            },
        );
    }
    let kind = if logical_name == "contact" {
        state.columns.get(column).copied()
    } else if crate::schema::consent_choice_range(column).is_some() {
        Some(ColumnType::Picklist)
    } else {
        None
    };
    (column.to_string(), typed(kind.as_ref(), value))
}

/// The image columns of `row`: a lookup attribute `x` reads the row's `_x_value`.
fn image_column(row: &Map<String, Value>, attribute: &str) -> Option<(String, Value)> {
    if let Some(value) = row.get(attribute) {
        return Some((attribute.to_string(), value.clone()));
    }
    let lookup = format!("_{attribute}_value");
    row.get(&lookup).map(|v| (lookup, v.clone()))
}

/// The header name and value from `<settings><setting name="…" value="…"/></settings>`.
fn auth_header(authvalue: &str) -> Option<(String, String)> {
    let attribute = |name: &str| {
        let start = authvalue.find(&format!("{name}=\""))? + name.len() + 2;
        let end = authvalue[start..].find('"')? + start;
        Some(
            authvalue[start..end]
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    Some((attribute("name")?, attribute("value")?))
}

/// Queues the webhook deliveries that a write of `sent` columns to contact
/// `id` by `user` fires.
pub fn contact_written(
    state: &mut SimState,
    message: &str,
    id: &str,
    sent: &Map<String, Value>,
    user: &str,
) {
    let Some(row) = state
        .contact_position(id)
        .map(|at| state.contacts[at].clone())
    else {
        return;
    };
    row_written(state, "contact", message, id, &row, sent, user);
}

/// Queues the webhook deliveries that a write of `sent` columns to row `id`
/// (now `row`) of table `logical_name` by `user` fires.
pub fn row_written(
    state: &mut SimState,
    logical_name: &str,
    message: &str,
    id: &str,
    row: &Map<String, Value>,
    sent: &Map<String, Value>,
    user: &str,
) {
    let message_id = match message {
        "Create" => MESSAGE_CREATE,
        "Update" => MESSAGE_UPDATE,
        _ => return,
    };
    let filters: Vec<String> = state.tables["sdkmessagefilters"]
        .rows
        .iter()
        .filter(|f| text(f, "primaryobjecttypecode") == logical_name)
        .map(|f| text(f, "sdkmessagefilterid").to_string())
        .collect();
    let steps: Vec<Map<String, Value>> = state.tables["sdkmessageprocessingsteps"]
        .rows
        .iter()
        .filter(|s| {
            text(s, "_sdkmessageid_value") == message_id
                && filters
                    .iter()
                    .any(|f| f == text(s, "_sdkmessagefilterid_value"))
                && s.get("statecode").and_then(Value::as_i64) == Some(0)
        })
        .cloned()
        .collect();
    for step in steps {
        let filtering = text(&step, "filteringattributes");
        if message == "Update"
            && !filtering.is_empty()
            && !filtering
                .split(',')
                .any(|a| image_column(sent, a.trim()).is_some())
        {
            continue;
        }
        let step_id = text(&step, "sdkmessageprocessingstepid").to_string();
        let Some(endpoint) = state.tables["serviceendpoints"]
            .rows
            .iter()
            .find(|e| text(e, "serviceendpointid") == text(&step, "_eventhandler_value"))
            .cloned()
        else {
            continue;
        };
        let images: Vec<Value> = state.tables["sdkmessageprocessingstepimages"]
            .rows
            .iter()
            .filter(|i| {
                text(i, "_sdkmessageprocessingstepid_value") == step_id
                    && matches!(i.get("imagetype").and_then(Value::as_i64), Some(1 | 2))
            })
            .map(|image| {
                // Images leave out columns that hold no value, as Dataverse does.
                let columns: Map<String, Value> = text(image, "attributes")
                    .split(',')
                    .map(str::trim)
                    .filter_map(|c| image_column(row, c).filter(|(_, v)| !v.is_null()))
                    .collect();
                json!({"key": text(image, "entityalias"), "value": entity(state, logical_name, id, &columns)})
            })
            .collect();
        let mut target = sent.clone();
        target.insert(format!("{logical_name}id"), json!(id));
        let now = millis();
        target.insert("modifiedon".into(), json!(format!("/Date({now})/")));
        let mut target = entity(state, logical_name, id, &target);
        if let Some(attributes) = target["Attributes"].as_array_mut() {
            attributes.push(json!({"key": "modifiedby", "value": {
                "__type": format!("EntityReference:{NS}"), "Id": user, "KeyAttributes": [],
                "LogicalName": "systemuser", "Name": null, "RowVersion": null}}));
        }
        let correlation = uuid::Uuid::new_v4().to_string();
        let mut context = json!({
            "BusinessUnitId": "00000000-0000-0000-0000-0000000000b1",
            "CorrelationId": correlation,
            "Depth": 1,
            "InitiatingUserId": user,
            "InputParameters": [{"key": "Target", "value": target}],
            "IsExecutingOffline": false, "IsInTransaction": false, "IsOfflinePlayback": false,
            "IsolationMode": 1,
            "MessageName": message,
            "Mode": 1,
            "OperationCreatedOn": format!("/Date({now}+0000)/"),
            "OperationId": uuid::Uuid::new_v4().to_string(),
            "OrganizationId": "00000000-0000-0000-0000-0000000000f1",
            "OrganizationName": "sim",
            "OutputParameters": if message == "Create" { json!([{"key": "id", "value": id}]) } else { json!([]) },
            "OwningExtension": {"__type": format!("EntityReference:{NS}"), "Id": step_id, "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep", "Name": null, "RowVersion": null},
            "ParentContext": null,
            "PostEntityImages": images,
            "PreEntityImages": [],
            "PrimaryEntityId": id,
            "PrimaryEntityName": logical_name,
            "RequestId": uuid::Uuid::new_v4().to_string(),
            "SecondaryEntityName": "none",
            "SharedVariables": [],
            "Stage": 40,
            "UserId": user
        });
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-ms-dynamics-organization".into(), "sim".into()),
            ("x-ms-dynamics-entity-name".into(), logical_name.into()),
            ("x-ms-dynamics-request-name".into(), message.into()),
            ("x-ms-correlation-request-id".into(), correlation),
        ];
        let mut body = context.to_string();
        if body.len() > MAX_CONTEXT_BYTES {
            context["InputParameters"] = json!([]);
            context["PostEntityImages"] = json!([]);
            context.as_object_mut().map(|c| c.remove("ParentContext"));
            body = context.to_string();
            headers.push(("x-ms-dynamics-msg-size-exceeded".into(), "true".into()));
        }
        if let Some(header) = auth_header(text(&endpoint, "authvalue")) {
            headers.push(header);
        }
        state.outgoing.push(Outgoing {
            url: text(&endpoint, "url").to_string(),
            headers,
            body,
            step_id: Some(step_id),
        });
    }
}

fn is_loopback(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    })
}

/// Sends the queued deliveries in the background (they are asynchronous
/// steps); `Simulator::settle` waits for them.
pub fn send_outgoing(state: &Arc<Mutex<SimState>>) {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    let outgoing = std::mem::take(&mut guard.outgoing);
    for delivery in outgoing {
        let state = state.clone();
        let handle = tokio::spawn(async move {
            let result = deliver(&delivery).await;
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.delivered.push(crate::Delivered {
                url: delivery.url.clone(),
                body: serde_json::from_str(&delivery.body).unwrap_or(Value::Null),
                result: result.clone(),
            });
            if let (Err(message), Some(step_id)) = (result, delivery.step_id) {
                tracing::debug!(%message, "webhook delivery failed");
                let now = crate::didomi::iso_seconds();
                state
                    .tables
                    .get_mut("asyncoperations")
                    .expect("known")
                    .rows
                    .push(
                        json!({
                            "asyncoperationid": uuid::Uuid::new_v4().to_string(),
                            "name": "consent-sync webhook",
                            "operationtype": 1,
                            "statuscode": 31,
                            "statecode": 3,
                            "message": message,
                            "friendlymessage": message,
                            "completedon": now,
                            "_owningextensionid_value": step_id,
                        })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    );
            }
        });
        guard.pending.push(handle);
    }
}

/// One delivery; 502/503/504 get one more attempt, as Dataverse gives them.
async fn deliver(delivery: &Outgoing) -> Result<(u16, String), String> {
    if !is_loopback(&delivery.url) {
        return Err(format!(
            "The simulator only delivers to loopback addresses, not {}",
            delivery.url
        ));
    }
    let client = reqwest::Client::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut request = client
            .post(&delivery.url)
            .timeout(Duration::from_secs(60))
            .body(delivery.body.clone());
        for (name, value) in &delivery.headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                let status = response.status().as_u16();
                return Ok((status, response.text().await.unwrap_or_default()));
            }
            Ok(response) if attempts == 1 && matches!(response.status().as_u16(), 502..=504) => {
                continue
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                return Err(format!(
                    "The webhook call failed with HTTP status code {status}: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
            Err(e) => return Err(format!("The webhook call failed: {}", e.without_url())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registered_header_is_read_from_the_settings() {
        assert_eq!(
            auth_header("<settings><setting name=\"x-consent-sync-key\" value=\"a&amp;b&quot;\"/></settings>"),
            Some(("x-consent-sync-key".into(), "a&b\"".into()))
        );
        assert_eq!(auth_header("<settings/>"), None);
    }
}
