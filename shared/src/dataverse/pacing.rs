//! Pacing by Dataverse's own signals, for every request one application
//! user makes from this process.
//!
//! Service protection counts per user, not per connection: when one request
//! is answered 429, every other request of the same user would be too, and
//! each one sent during the pause makes the pause longer. So a 429's
//! `Retry-After` pauses all requests (one pause shared by every worker), and
//! at most `x-ms-dop-hint` requests are in flight at once — Dataverse's own
//! recommendation of parallelism, read from each answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// In flight at first and after each 429: one, then one more per answer up
/// to Dataverse's hint — the gradual ramp-up Microsoft advises, so that a
/// burst of requests sent at once cannot all be throttled together.
const FIRST_IN_FLIGHT: usize = 1;

/// Never more in flight than service protection's concurrency limit per user.
const MAX_IN_FLIGHT: usize = 52;

#[derive(Debug)]
struct State {
    in_flight: usize,
    limit: usize,
    paused_until: Option<Instant>,
    /// After a pause, one request at a time until then: the window Dataverse
    /// counts in is still nearly full, and a burst would only collect 429s.
    single_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Pacing {
    state: Mutex<State>,
    changed: Notify,
    throttled: AtomicU64,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            state: Mutex::new(State {
                in_flight: 0,
                limit: FIRST_IN_FLIGHT,
                paused_until: None,
                single_until: None,
            }),
            changed: Notify::new(),
            throttled: AtomicU64::new(0),
        }
    }
}

/// A request's place among those in flight; released when dropped.
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    pacing: &'a Pacing,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.pacing.lock().in_flight -= 1;
        self.pacing.changed.notify_waiters();
    }
}

pub(crate) use crate::retry::PausedPastDeadline;

impl crate::retry::Pace for Pacing {
    type Turn<'a> = InFlight<'a>;

    async fn ready(&self, remaining: Duration) -> Result<InFlight<'_>, PausedPastDeadline> {
        Pacing::ready(self, remaining).await
    }

    fn observe(&self, response: &reqwest::Response) {
        Pacing::observe(
            self,
            response.status().as_u16(),
            dop_hint(response),
            crate::retry::retry_after(response),
        );
    }
}

/// `x-ms-dop-hint`: Dataverse's recommended number of requests in flight.
fn dop_hint(response: &reqwest::Response) -> Option<usize> {
    response
        .headers()
        .get("x-ms-dop-hint")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Pacing {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no pause is running and a place is free, then takes it.
    /// Gives up at once when a running pause outlasts `remaining`: the caller
    /// then reports throttling while it still has time to.
    pub(crate) async fn ready(
        &self,
        remaining: Duration,
    ) -> Result<InFlight<'_>, PausedPastDeadline> {
        let give_up_at = Instant::now() + remaining;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pause = {
                let mut state = self.lock();
                match state.paused_until {
                    Some(until) if until > Instant::now() => Some(until),
                    _ => {
                        state.paused_until = None;
                        if state.in_flight < state.limit {
                            state.in_flight += 1;
                            return Ok(InFlight { pacing: self });
                        }
                        None
                    }
                }
            };
            match pause {
                Some(until) if until >= give_up_at => return Err(PausedPastDeadline),
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Reads an answer's pacing signals: the parallelism hint, and on a 429
    /// the pause every request now waits out.
    pub(crate) fn observe(
        &self,
        status: u16,
        dop_hint: Option<usize>,
        retry_after: Option<Duration>,
    ) {
        let mut state = self.lock();
        let single = state
            .single_until
            .is_some_and(|until| until > Instant::now());
        if status == 429 {
            state.limit = FIRST_IN_FLIGHT;
        } else if let Some(hint) = dop_hint {
            let hint = hint.clamp(1, MAX_IN_FLIGHT);
            state.limit = if single {
                FIRST_IN_FLIGHT
            } else {
                (state.limit + 1).min(hint)
            };
        }
        if status == 429 {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            // Without Retry-After (or with 0), a short pause rather than none:
            // sending on regardless is what makes Dataverse's wait grow.
            let pause = retry_after
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(100));
            let until = Instant::now() + pause;
            if state.paused_until.is_none_or(|current| current < until) {
                state.paused_until = Some(until);
                state.single_until = Some(until + pause);
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The service protection 429s received so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// How much longer the current pause lasts, if one is running.
    pub fn pause_left(&self) -> Option<Duration> {
        let until = self.lock().paused_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The number of requests allowed in flight now.
    #[cfg(any(test, feature = "jobs"))]
    pub(crate) fn in_flight_limit(&self) -> usize {
        self.lock().limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn at_most_the_hinted_number_are_in_flight() {
        let pacing = Arc::new(Pacing::default());
        let first = pacing.ready(Duration::from_secs(1)).await.unwrap();
        // Before any hint: one at a time.
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            pacing.ready(Duration::from_secs(1)),
        )
        .await;
        assert!(waiting.is_err(), "a second request went out before a hint");
        // The hint is reached one answer at a time.
        pacing.observe(204, Some(3), None);
        assert_eq!(pacing.in_flight_limit(), 2);
        pacing.observe(204, Some(3), None);
        pacing.observe(204, Some(3), None);
        assert_eq!(pacing.in_flight_limit(), 3);
        let second = pacing.ready(Duration::from_secs(1)).await.unwrap();
        let third = pacing.ready(Duration::from_secs(1)).await.unwrap();
        assert!(tokio::time::timeout(
            Duration::from_millis(50),
            pacing.ready(Duration::from_secs(1))
        )
        .await
        .is_err());
        drop(first);
        let fourth = tokio::time::timeout(
            Duration::from_millis(500),
            pacing.ready(Duration::from_secs(1)),
        )
        .await;
        assert!(fourth.is_ok(), "a freed place was not handed on");
        drop((second, third));
    }

    #[tokio::test]
    async fn a_429_pauses_every_request_for_retry_after() {
        let pacing = Pacing::default();
        pacing.observe(204, Some(8), None);
        pacing.observe(429, None, Some(Duration::from_millis(300)));
        let started = Instant::now();
        let turn = || async { pacing.ready(Duration::from_secs(5)).await.map(drop) };
        let (a, b) = tokio::join!(turn(), turn());
        assert!(a.is_ok() && b.is_ok());
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(pacing.throttled(), 1);
        assert_eq!(pacing.pause_left(), None);
        // After a 429, one at a time again.
        assert_eq!(pacing.in_flight_limit(), 1);
    }

    #[tokio::test]
    async fn a_pause_past_the_deadline_gives_up_at_once() {
        let pacing = Pacing::default();
        pacing.observe(429, None, Some(Duration::from_secs(30)));
        let started = Instant::now();
        let answer = pacing.ready(Duration::from_secs(2)).await;
        assert_eq!(answer.err(), Some(PausedPastDeadline));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(pacing.pause_left().unwrap() > Duration::from_secs(29));
    }
}
