//! consent-sync keeps consent and preference choices collected in Didomi in
//! step with Dataverse (Dynamics 365) contacts.
//!
//! This crate holds everything the Lambda functions and the operator CLI
//! share. One folder per outside system — `dataverse/` (Web API client,
//! webhook payloads, webhook registration, metadata) and `didomi/`
//! (deliveries, API client, batch export) — and one per flow or job:
//! `flows/` (the two directions), `parking/` (the parked queue and its
//! drain), `reconcile/`, `watch/`, `setup/` (`consent-sync init`).
//! `function/` is what a webhook function is, below the flows and the
//! dispatch (`invocation`). The jobs (reconcile, the watch, the export) are
//! the `jobs` feature: the webhook functions build without them.
//!
//! What the functions, the CLI and the tests do not use is `pub(crate)`; a
//! type that a public item hands out must also be nameable outside.
#![warn(unnameable_types)]

pub mod config;
pub mod config_source;
pub mod consents;
pub mod contact_point_consent;
pub mod dataverse;
pub mod didomi;
pub mod flows;
pub mod function;
pub mod gateway;
pub mod input;
pub mod invocation;
pub mod logging;
pub mod mapping;
pub(crate) mod metrics;
pub mod parking;
#[cfg(feature = "jobs")]
pub mod reconcile;
pub mod retry;
pub mod secret;
pub mod setup;
pub mod time;
pub mod tls;
pub mod token;
#[cfg(feature = "jobs")]
pub mod watch;

pub use config::{Config, ConfigError};
pub use config_source::ConfigSource;
pub use flows::didomi_to_dynamics::{self, DidomiToDynamics};
pub use flows::dynamics_to_didomi::{self, DynamicsToDidomi};
pub use retry::{Deadline, RetryPolicy};
pub use tls::http_client;
