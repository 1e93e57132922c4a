//! API Gateway HTTP API (payload v2.0) requests and responses: body
//! decoding, the size limit, webhook authentication, JSON answers.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use base64::Engine;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::Method;
use serde_json::{json, Value};

use crate::config::{DidomiWebhookAuth, WebhookAuthMode};
use crate::secret::Secret;

/// The header a Dataverse webhook registration sends the shared key in.
pub(crate) const WEBHOOK_KEY_HEADER: &str = "x-consent-sync-key";

pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An answer other than success, with a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
}

impl Rejection {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

/// What a downstream failure was, as errors say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Unavailable or throttling: a later attempt may work.
    MayPass,
    /// A service refused what consent-sync sent.
    Refused,
    /// The credentials or the configuration need the operator.
    Configuration,
    /// What the request carries no system could accept.
    BadInput,
}

/// The answer a sender gets for a failure that was not parked: 503 when a
/// later attempt may work (both senders redeliver), 502 when a service
/// refused what consent-sync sent, 500 when the operator must fix the
/// credentials or configuration, 400 when the request is at fault.
pub(crate) fn status_for(failure: Failure) -> u16 {
    match failure {
        Failure::MayPass => 503,
        Failure::Refused => 502,
        Failure::Configuration => 500,
        Failure::BadInput => 400,
    }
}

/// Answers a request refused before any work, and says so in the log and
/// the metrics.
pub(crate) fn rejected(
    rejection: Rejection,
    started: std::time::Instant,
) -> ApiGatewayV2httpResponse {
    crate::metrics::count("rejected");
    tracing::warn!(
        status = rejection.status,
        error = %rejection.message,
        duration_ms = started.elapsed().as_millis() as u64,
        "request rejected"
    );
    rejection.into()
}

pub(crate) fn json_response(status: u16, body: &Value) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status.into();
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(body.to_string()));
    response
}

impl From<Rejection> for ApiGatewayV2httpResponse {
    fn from(rejection: Rejection) -> Self {
        let mut response = json_response(rejection.status, &json!({ "error": rejection.message }));
        if rejection.status == 405 {
            response
                .headers
                .insert(ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

pub(crate) fn require_post(request: &ApiGatewayV2httpRequest) -> Result<(), Rejection> {
    let method = &request.request_context.http.method;
    if method == Method::POST {
        Ok(())
    } else {
        Err(Rejection::new(
            405,
            format!("method {method} is not allowed; webhooks are delivered with POST"),
        ))
    }
}

/// The request body as bytes, decoded from base64 when API Gateway encoded
/// it, and refused above 1 MiB.
pub fn body_bytes(request: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, Rejection> {
    let too_large = || {
        Rejection::new(
            413,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let Some(body) = request.body.as_deref() else {
        return Err(Rejection::new(400, "the request has no body"));
    };
    if request.is_base64_encoded {
        // Four base64 characters carry three bytes: refuse before decoding.
        if body.len() / 4 * 3 > MAX_BODY_BYTES + 3 {
            return Err(too_large());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| {
                Rejection::new(400, "the body is marked base64 but is not valid base64")
            })?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        Ok(bytes)
    } else if body.len() > MAX_BODY_BYTES {
        Err(too_large())
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// Checks that a delivery comes from Didomi: the client id that API
/// Gateway's JWT authorizer validated, and the source address when an
/// allow-list is configured.
pub(crate) fn authenticate_didomi(
    request: &ApiGatewayV2httpRequest,
    auth: &DidomiWebhookAuth,
) -> Result<(), Rejection> {
    if !auth.allowed_source_ips.is_empty() {
        let source = request
            .request_context
            .http
            .source_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok());
        if !source.is_some_and(|ip| auth.allowed_source_ips.contains(&ip)) {
            return Err(Rejection::new(
                403,
                "the source address is not allowed to deliver webhooks",
            ));
        }
    }
    match auth.mode {
        WebhookAuthMode::None => Ok(()),
        WebhookAuthMode::Jwt => {
            let claims = request
                .request_context
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .map(|j| &j.claims);
            let Some(client_id) = claims.and_then(|c| c.get("client_id")) else {
                return Err(Rejection::new(
                    401,
                    "no validated JWT client_id: the route needs API Gateway's JWT authorizer and a bearer token",
                ));
            };
            if auth.client_ids.iter().any(|allowed| allowed == client_id) {
                Ok(())
            } else {
                Err(Rejection::new(
                    403,
                    "the token's client_id is not allowed to deliver webhooks",
                ))
            }
        }
    }
}

/// Checks the key Dataverse sends in `x-consent-sync-key`: 401 when it is
/// missing, 403 when it is wrong. Compared in constant time, over digests so
/// that not even the key's length shows in the timing.
pub(crate) fn authenticate_key(
    request: &ApiGatewayV2httpRequest,
    key: &Secret,
) -> Result<(), Rejection> {
    let Some(sent) = request.headers.get(WEBHOOK_KEY_HEADER) else {
        return Err(Rejection::new(
            401,
            format!("the {WEBHOOK_KEY_HEADER} header is missing"),
        ));
    };
    if same_secret(sent.as_bytes(), key.expose().trim().as_bytes()) {
        Ok(())
    } else {
        Err(Rejection::new(
            403,
            format!("the {WEBHOOK_KEY_HEADER} header does not hold the configured key"),
        ))
    }
}

fn same_secret(sent: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(sent), Sha256::digest(expected));
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// A header's value, when present and readable.
pub fn header<'a>(request: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_key_must_be_present_and_equal() {
        let key = Secret::new("0123456789abcdef-key");
        let mut request = event("POST", None, "1.1.1.1");
        assert_eq!(authenticate_key(&request, &key).unwrap_err().status, 401);
        request.headers.insert(
            WEBHOOK_KEY_HEADER,
            HeaderValue::from_static("0123456789abcdef-kez"),
        );
        let wrong = authenticate_key(&request, &key).unwrap_err();
        assert_eq!(wrong.status, 403);
        assert!(!wrong.message.contains("0123456789"));
        request.headers.insert(
            WEBHOOK_KEY_HEADER,
            HeaderValue::from_static("0123456789abcdef-key"),
        );
        assert_eq!(authenticate_key(&request, &key), Ok(()));
        assert!(same_secret(b"a", b"a") && !same_secret(b"a", b"ab"));
    }

    fn request(value: Value) -> ApiGatewayV2httpRequest {
        serde_json::from_value(value).unwrap()
    }

    fn event(method: &str, claims: Option<Value>, source_ip: &str) -> ApiGatewayV2httpRequest {
        let mut context = json!({
            "http": {"method": method, "path": "/", "protocol": "HTTP/1.1", "sourceIp": source_ip, "userAgent": "t"},
            "requestId": "r", "routeKey": "$default", "stage": "$default", "timeEpoch": 0
        });
        if let Some(claims) = claims {
            context["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
        }
        request(json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": context, "body": "{}", "isBase64Encoded": false
        }))
    }

    fn jwt(client_ids: &[&str], ips: &[&str]) -> DidomiWebhookAuth {
        DidomiWebhookAuth {
            mode: WebhookAuthMode::Jwt,
            client_ids: client_ids.iter().map(|s| s.to_string()).collect(),
            allowed_source_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn jwt_claims_must_name_an_allowed_client() {
        let auth = jwt(&["didomi"], &[]);
        assert_eq!(
            authenticate_didomi(
                &event("POST", Some(json!({"client_id": "didomi"})), "1.1.1.1"),
                &auth
            ),
            Ok(())
        );
        assert_eq!(
            authenticate_didomi(&event("POST", None, "1.1.1.1"), &auth)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            authenticate_didomi(
                &event("POST", Some(json!({"client_id": "other"})), "1.1.1.1"),
                &auth
            )
            .unwrap_err()
            .status,
            403
        );
    }

    #[test]
    fn the_source_ip_allow_list_applies_in_every_mode() {
        let mut auth = jwt(&["didomi"], &["203.0.113.7"]);
        let claims = Some(json!({"client_id": "didomi"}));
        assert_eq!(
            authenticate_didomi(&event("POST", claims.clone(), "203.0.113.7"), &auth),
            Ok(())
        );
        assert_eq!(
            authenticate_didomi(&event("POST", claims, "198.51.100.1"), &auth)
                .unwrap_err()
                .status,
            403
        );
        auth.mode = WebhookAuthMode::None;
        assert_eq!(
            authenticate_didomi(&event("POST", None, "198.51.100.1"), &auth)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn only_post_is_allowed_and_the_answer_says_so() {
        assert!(require_post(&event("POST", None, "1.1.1.1")).is_ok());
        let rejection = require_post(&event("GET", None, "1.1.1.1")).unwrap_err();
        let response = ApiGatewayV2httpResponse::from(rejection);
        assert_eq!(response.status_code, 405);
        assert_eq!(response.headers.get(ALLOW).unwrap(), "POST");
    }

    #[test]
    fn bodies_are_decoded_and_limited_to_one_mebibyte() {
        let mut request = event("POST", None, "1.1.1.1");
        request.body = Some(base64::engine::general_purpose::STANDARD.encode(b"{\"a\":1}"));
        request.is_base64_encoded = true;
        assert_eq!(body_bytes(&request).unwrap(), b"{\"a\":1}");

        request.body = Some("not base64!".into());
        assert_eq!(body_bytes(&request).unwrap_err().status, 400);

        request.body =
            Some(base64::engine::general_purpose::STANDARD.encode(vec![b' '; MAX_BODY_BYTES + 1]));
        assert_eq!(body_bytes(&request).unwrap_err().status, 413);

        request.is_base64_encoded = false;
        request.body = Some(" ".repeat(MAX_BODY_BYTES));
        assert!(body_bytes(&request).is_ok());
        request.body = Some(" ".repeat(MAX_BODY_BYTES + 1));
        assert_eq!(body_bytes(&request).unwrap_err().status, 413);
    }
}
