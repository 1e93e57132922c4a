//! Access tokens: Entra ID client credentials for Dataverse, kept until
//! shortly before they expire.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::DataverseSettings;
use crate::retry::{Deadline, Replay, RetryPolicy, SendError};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct AccessToken {
    pub value: Secret,
    /// When to stop using it: somewhat before it really expires, so that a
    /// token never runs out in the middle of an invocation.
    pub renew_at: Instant,
}

impl AccessToken {
    pub fn new(value: Secret, lifetime: Duration) -> Self {
        let margin = Duration::from_secs(300).min(lifetime / 2);
        AccessToken {
            value,
            renew_at: Instant::now() + lifetime - margin,
        }
    }
}

/// One cached token, tied to the credentials it was issued for: a changed
/// secret (rotated client secret, other tenant) gets a new token at once.
/// Clones share the token: a client derived with another retry policy
/// does not ask for a second one.
#[derive(Debug, Default, Clone)]
pub struct TokenCache {
    slot: std::sync::Arc<Mutex<Option<(u64, AccessToken)>>>,
}

/// A fingerprint of the credentials, kept in memory only.
pub(crate) fn credentials_key(parts: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

impl TokenCache {
    /// The cached token for `key`, or a new one from `fetch`. Concurrent
    /// callers wait for one fetch instead of each requesting a token.
    pub async fn get<E, Fut>(&self, key: u64, fetch: impl FnOnce() -> Fut) -> Result<Secret, E>
    where
        Fut: Future<Output = Result<AccessToken, E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((cached_key, token)) = slot.as_ref() {
            if *cached_key == key && Instant::now() < token.renew_at {
                return Ok(token.value.clone());
            }
        }
        let token = fetch().await?;
        let value = token.value.clone();
        *slot = Some((key, token));
        Ok(value)
    }

    /// Forgets `token` after the server refused it, unless a newer one
    /// already replaced it.
    pub(crate) async fn reject(&self, token: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|(_, cached)| &cached.value == token)
        {
            *slot = None;
        }
    }

    /// Sends with this cache's token (`token()` gets it, `send` sends with
    /// it); a 401 rejects that token and sends once more with a fresh one,
    /// since a token can be revoked or expire before its time. An answer
    /// other than 2xx becomes the API's error (`refused`).
    pub(crate) async fn send_authorized<E, T, S, R>(
        &self,
        token: impl Fn() -> T,
        send: impl Fn(Secret) -> S,
        refused: impl FnOnce(reqwest::Response) -> R,
    ) -> Result<reqwest::Response, E>
    where
        T: Future<Output = Result<Secret, E>>,
        S: Future<Output = Result<reqwest::Response, E>>,
        R: Future<Output = E>,
    {
        let mut renewed = false;
        loop {
            let current = token().await?;
            let response = send(current.clone()).await?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && !renewed {
                self.reject(&current).await;
                renewed = true;
                continue;
            }
            if !response.status().is_success() {
                return Err(refused(response).await);
            }
            return Ok(response);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("Entra ID refused the token request (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(" — {d}")).unwrap_or_default())]
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("Entra ID token endpoint unavailable: {0}")]
    Unavailable(#[from] SendError),
    #[error("Entra ID token endpoint answered HTTP {status} without a token")]
    BadAnswer { status: u16 },
}

impl TokenError {
    /// True when retrying later may help; false for a configuration problem.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            TokenError::Refused { status, .. } | TokenError::BadAnswer { status } => {
                *status >= 500 || *status == 429
            }
            TokenError::Unavailable(_) => true,
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: ExpiresIn,
}

/// The v2 endpoint sends a number, the v1 endpoint a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
struct TokenRefusal {
    error: String,
    error_description: Option<String>,
}

/// `POST {authority_host}/{tenant_id}/oauth2/v2.0/token` with the client
/// credentials grant and the scope `{server_instance}/.default`.
pub(crate) async fn request_dataverse_token(
    http: &reqwest::Client,
    policy: &RetryPolicy,
    deadline: Deadline,
    dataverse: &DataverseSettings,
) -> Result<AccessToken, TokenError> {
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        dataverse.authority_host, dataverse.tenant_id
    );
    let scope = format!("{}/.default", dataverse.server_instance);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", dataverse.client_id.as_str()),
        ("client_secret", dataverse.client_secret.expose()),
        ("scope", scope.as_str()),
    ];
    let response = policy
        .send(deadline, Replay::Safe, || http.post(&url).form(&form))
        .await?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|_| TokenError::BadAnswer { status })?;
    if status == 200 {
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|_| TokenError::BadAnswer { status })?;
        let seconds = match answer.expires_in {
            ExpiresIn::Seconds(s) => s,
            ExpiresIn::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| TokenError::BadAnswer { status })?,
        };
        return Ok(AccessToken::new(
            Secret::new(answer.access_token),
            Duration::from_secs(seconds),
        ));
    }
    match serde_json::from_slice::<TokenRefusal>(&body) {
        Ok(refusal) => Err(TokenError::Refused {
            status,
            error: refusal.error,
            // The first line names the AADSTS code and the reason; the rest is trace ids.
            description: refusal
                .error_description
                .map(|d| d.lines().next().unwrap_or_default().to_string()),
        }),
        Err(_) => Err(TokenError::BadAnswer { status }),
    }
}

/// The key under which a Dataverse token is cached.
pub(crate) fn dataverse_token_key(dataverse: &DataverseSettings) -> u64 {
    credentials_key(&[
        &dataverse.authority_host,
        &dataverse.tenant_id,
        &dataverse.client_id,
        dataverse.client_secret.expose(),
        &dataverse.server_instance,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_is_reused_until_renewal_and_replaced_for_new_credentials() {
        let cache = TokenCache::default();
        let mut fetches = 0;
        for _ in 0..3 {
            let token: Result<Secret, ()> = cache
                .get(1, || {
                    fetches += 1;
                    async {
                        Ok(AccessToken::new(
                            Secret::new("a"),
                            Duration::from_secs(3600),
                        ))
                    }
                })
                .await;
            assert_eq!(token.unwrap().expose(), "a");
        }
        assert_eq!(fetches, 1);

        let other: Result<Secret, ()> = cache
            .get(2, || async {
                Ok(AccessToken::new(
                    Secret::new("b"),
                    Duration::from_secs(3600),
                ))
            })
            .await;
        assert_eq!(other.unwrap().expose(), "b");
    }

    #[tokio::test]
    async fn a_rejected_token_is_fetched_again() {
        let cache = TokenCache::default();
        let first: Result<Secret, ()> = cache
            .get(1, || async {
                Ok(AccessToken::new(
                    Secret::new("a"),
                    Duration::from_secs(3600),
                ))
            })
            .await;
        cache.reject(&first.unwrap()).await;
        let second: Result<Secret, ()> = cache
            .get(1, || async {
                Ok(AccessToken::new(
                    Secret::new("b"),
                    Duration::from_secs(3600),
                ))
            })
            .await;
        assert_eq!(second.unwrap().expose(), "b");
    }

    #[test]
    fn short_lived_tokens_are_renewed_at_half_their_life() {
        let token = AccessToken::new(Secret::new("a"), Duration::from_secs(60));
        let left = token.renew_at - Instant::now();
        assert!(
            left <= Duration::from_secs(30) && left > Duration::from_secs(29),
            "{left:?}"
        );
    }
}
