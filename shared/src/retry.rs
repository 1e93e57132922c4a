//! Retries of downstream HTTP calls, bounded by the invocation's deadline.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{RequestBuilder, Response, StatusCode};

/// What paces a service's requests by its own signals (Dataverse's shared
/// pause and parallelism hint): each attempt waits for its turn, and every
/// answer is shown to it.
pub(crate) trait Pace {
    /// A request's place among those in flight; released when dropped.
    type Turn<'a>
    where
        Self: 'a;

    /// Waits for a turn; gives up at once when the pause outlasts `remaining`.
    fn ready(
        &self,
        remaining: Duration,
    ) -> impl std::future::Future<Output = Result<Self::Turn<'_>, PausedPastDeadline>>;

    /// Reads an answer's pacing signals.
    fn observe(&self, response: &Response);
}

/// The pause a service asked for is longer than the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PausedPastDeadline;

/// No pacing: every attempt goes at once.
pub(crate) struct Unpaced;

impl Pace for Unpaced {
    type Turn<'a> = ();

    async fn ready(&self, _: Duration) -> Result<(), PausedPastDeadline> {
        Ok(())
    }

    fn observe(&self, _: &Response) {}
}

/// The moment by which the current invocation must have answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Deadline(Instant::now() + budget)
    }

    /// From Lambda's deadline (milliseconds since the epoch), keeping `reserve`
    /// to build and send the answer: an answer that arrives after the deadline
    /// is lost, and the caller sees a timeout.
    pub fn from_epoch_millis(deadline_ms: u64, reserve: Duration) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        Deadline(Instant::now() + left.saturating_sub(reserve))
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest one attempt may take, before the deadline cuts it shorter.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(15),
        }
    }
}

/// Whether a failed request may have been carried out all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Repeating it is harmless (GET, PATCH, token requests): retry on every transient failure.
    Safe,
    /// Repeating it after an unclear outcome (timeout, 502, 504) could do it
    /// twice (POST create): retry only when the server said it did nothing
    /// (429, 503, a refused connection).
    OnlyIfNotProcessed,
}

/// A request that produced no HTTP answer.
#[derive(Debug, thiserror::Error)]
#[error("{kind} after {attempts} attempt(s)")]
pub struct SendError {
    pub attempts: u32,
    pub kind: SendErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum SendErrorKind {
    #[error("no answer within the time budget")]
    Timeout,
    #[error("could not connect")]
    Connect,
    #[error("service protection asked to pause longer than the time left")]
    Paused,
    #[error("the request failed ({0})")]
    Other(String),
}

fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

fn not_processed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

/// `Retry-After` in seconds (Dataverse and Entra send seconds).
pub fn retry_after(response: &Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        // Bounded: an absurd value must not overflow a Duration (a panic).
        .filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s))
        .map(Duration::from_secs_f64)
}

impl RetryPolicy {
    /// Exponential backoff, each wait drawn between half and all of its step,
    /// so that throttled callers do not come back in step.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(fastrand::u64(millis / 2..=millis.max(1)))
    }

    /// Sends the request that `build` makes, again after transient failures,
    /// for as long as the deadline allows. Returns the last response, whatever
    /// its status: the caller reads error bodies and decides what they mean.
    pub async fn send(
        &self,
        deadline: Deadline,
        replay: Replay,
        build: impl FnMut() -> RequestBuilder,
    ) -> Result<Response, SendError> {
        self.send_paced(deadline, replay, None::<&Unpaced>, build)
            .await
    }

    /// `send`, each attempt waiting for its turn under `pacing` (Dataverse's
    /// shared pause and parallelism hint). A service protection 429 then
    /// costs no attempt: the shared pause is the wait, and only the deadline
    /// bounds how often it may come.
    pub(crate) async fn send_paced<P: Pace>(
        &self,
        deadline: Deadline,
        replay: Replay,
        pacing: Option<&P>,
        mut build: impl FnMut() -> RequestBuilder,
    ) -> Result<Response, SendError> {
        let mut attempts = 0;
        let mut throttled: Option<Response> = None;
        loop {
            let remaining = deadline.remaining();
            if remaining.is_zero() {
                return match throttled {
                    Some(response) => Ok(response),
                    None => Err(SendError {
                        attempts,
                        kind: SendErrorKind::Timeout,
                    }),
                };
            }
            let turn = match pacing {
                Some(pacing) => match pacing.ready(remaining).await {
                    Ok(turn) => Some(turn),
                    // Dataverse's pause outlasts the time left: say so now.
                    Err(PausedPastDeadline) => {
                        return match throttled {
                            Some(response) => Ok(response),
                            None => Err(SendError {
                                attempts,
                                kind: SendErrorKind::Paused,
                            }),
                        }
                    }
                },
                None => None,
            };
            attempts += 1;
            let remaining = deadline.remaining();
            let result = build()
                .timeout(self.attempt_timeout.min(remaining))
                .send()
                .await;
            drop(turn);
            let wait = match &result {
                Ok(response) => {
                    let status = response.status();
                    if let Some(pacing) = pacing {
                        pacing.observe(response);
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            attempts -= 1;
                        }
                    }
                    let retry =
                        is_transient(status) && (replay == Replay::Safe || not_processed(status));
                    retry.then(|| match pacing {
                        Some(_) if status == StatusCode::TOO_MANY_REQUESTS => Duration::ZERO,
                        _ => retry_after(response).unwrap_or_else(|| self.backoff(attempts)),
                    })
                }
                Err(e) => {
                    let retry = e.is_connect()
                        || (replay == Replay::Safe && (e.is_timeout() || e.is_request()));
                    retry.then(|| self.backoff(attempts))
                }
            };
            match wait {
                // Another attempt only when it can still finish in time: otherwise
                // the caller reports the failure while it still can.
                Some(wait)
                    if attempts < self.max_attempts
                        && wait + MIN_ATTEMPT < deadline.remaining() =>
                {
                    tracing::debug!(
                        attempt = attempts,
                        wait_ms = wait.as_millis() as u64,
                        "retrying a transient failure"
                    );
                    if let Ok(response) = result {
                        if response.status() == StatusCode::TOO_MANY_REQUESTS {
                            throttled = Some(response);
                        }
                    }
                    tokio::time::sleep(wait).await;
                }
                _ => return result.map_err(|e| send_error(e, attempts)),
            }
        }
    }
}

/// Less time than this left is not worth another attempt.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

fn send_error(error: reqwest::Error, attempts: u32) -> SendError {
    let kind = if error.is_timeout() {
        SendErrorKind::Timeout
    } else if error.is_connect() {
        SendErrorKind::Connect
    } else {
        // Without the URL: its query can hold a contact's identifier.
        SendErrorKind::Other(error.without_url().to_string())
    };
    SendError { attempts, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let first = policy.backoff(1);
            assert!(
                first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
                "{first:?}"
            );
            let third = policy.backoff(3);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            assert!(policy.backoff(30) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_absurd_values_are_ignored() {
        let with = |value: &str| {
            let response = http::Response::builder()
                .header("Retry-After", value)
                .body("")
                .unwrap();
            retry_after(&Response::from(response))
        };
        assert_eq!(with("3"), Some(Duration::from_secs(3)));
        assert_eq!(with(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(with("1e30"), None);
        assert_eq!(with("-1"), None);
        assert_eq!(with("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    }

    #[test]
    fn a_deadline_in_the_past_has_nothing_left() {
        let deadline = Deadline::from_epoch_millis(1_000, Duration::from_millis(10));
        assert_eq!(deadline.remaining(), Duration::ZERO);
        assert!(Deadline::after(Duration::from_secs(5)).remaining() > Duration::from_secs(4));
    }
}
