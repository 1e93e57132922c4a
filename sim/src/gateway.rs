//! A local stand-in for API Gateway's HTTP API: every HTTP request becomes a
//! payload v2.0 event, as the `$default` route of an HTTP API (or a Lambda
//! function URL) delivers it, and the handler's v2.0 response becomes the
//! HTTP answer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the function returns: its response, or a function error (which API
/// Gateway turns into a bare 500).
pub type HandlerResult = Result<ApiGatewayV2httpResponse, String>;
pub type Handler = Arc<
    dyn Fn(ApiGatewayV2httpRequest) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct Route {
    handler: Handler,
    /// Claims a JWT authorizer would attach after validating a token.
    jwt_claims: Option<Map<String, Value>>,
}

/// The running gateway. Dropping it stops the server.
pub struct Gateway {
    pub url: String,
    server: JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Gateway {
    /// Serves `handler` on `address` (port 0 for an ephemeral one).
    pub async fn start(
        address: SocketAddr,
        handler: Handler,
        jwt_claims: Option<Map<String, Value>>,
    ) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(address).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(invoke).with_state(Route {
            handler,
            jwt_claims,
        });
        let server = tokio::spawn(crate::serve::serve(listener, app));
        Ok(Gateway { url, server })
    }
}

fn is_text(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("x-www-form-urlencoded")
}

/// Builds the v2.0 event for one HTTP request.
pub fn event(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    source_ip: &str,
    jwt_claims: Option<&Map<String, Value>>,
) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Repeated headers are joined with commas, as API Gateway does.
    let mut header_map = Map::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or_default();
        header_map
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                *v = Value::String(format!("{},{value}", v.as_str().unwrap_or_default()))
            })
            .or_insert_with(|| Value::String(value.to_string()));
    }
    let mut query = Map::new();
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        query.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    let (body, encoded) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) if is_text(headers) => (Value::String(text.to_string()), false),
        _ => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "local",
        "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"),
        "domainPrefix": "local",
        "http": {
            "method": method.as_str(),
            "path": uri.path(),
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or("")
        },
        "requestId": uuid::Uuid::new_v4().to_string(),
        "routeKey": "$default",
        "stage": "$default",
        "time": "26/Nov/2026:10:00:00 +0000",
        "timeEpoch": now.as_millis() as u64
    });
    if let Some(claims) = jwt_claims {
        context["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or_default(),
        "headers": header_map,
        "requestContext": context,
        "isBase64Encoded": encoded
    });
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !body.is_null() {
        event["body"] = body;
    }
    event
}

/// Turns the function's v2.0 response into the HTTP answer.
pub fn http_response(response: ApiGatewayV2httpResponse) -> Response {
    let status = u16::try_from(response.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match response.body {
        Some(Body::Text(text)) if response.is_base64_encoded => {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default()
        }
        Some(Body::Text(text)) => text.into_bytes(),
        Some(Body::Binary(bytes)) => bytes,
        _ => Vec::new(),
    };
    let mut answer = (status, body).into_response();
    for (name, value) in &response.headers {
        answer.headers_mut().insert(name, value.clone());
    }
    answer
}

async fn invoke(
    State(route): State<Route>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // API Gateway accepts payloads up to 10 MB; the function enforces its
    // own, lower limit.
    let body = match crate::serve::read_body(&headers, body, 10 * 1024 * 1024).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let event = event(
        &method,
        &uri,
        &headers,
        &body,
        &peer.ip().to_string(),
        route.jwt_claims.as_ref(),
    );
    let request: ApiGatewayV2httpRequest = match serde_json::from_value(event) {
        Ok(request) => request,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("gateway could not build the event: {e}"),
            )
                .into_response()
        }
    };
    match (route.handler)(request).await {
        Ok(response) => http_response(response),
        // What API Gateway answers when the function fails.
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"message": "Internal Server Error"})),
        )
            .into_response(),
    }
}
