//! consent-sync keeps consent and preference choices collected in Didomi in
//! step with Dataverse (Dynamics 365) contacts.
//!
//! This crate holds everything the Lambda functions and the operator CLI
//! share. One folder per outside system — `dataverse/` (Web API client,
//! webhook payloads, webhook registration, metadata) and `didomi/`
//! (deliveries, API client) — and one per direction of the sync in `flows/`.

pub mod config;
pub mod config_source;
pub mod consents;
pub mod dataverse;
pub mod didomi;
pub mod flows;
pub mod gateway;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod parking;
pub mod retry;
pub mod secret;
pub mod time;
pub mod token;

pub use config::{Config, ConfigError};
pub use config_source::{ConfigCache, ConfigSource};
pub use flows::didomi_to_dynamics::{self, DidomiToDynamics};
pub use flows::dynamics_to_didomi::{self, DynamicsToDidomi};
pub use retry::{Deadline, RetryPolicy};

/// The HTTP client every downstream call goes through: rustls, pooled
/// connections kept warm between invocations, a connect timeout well inside
/// any invocation budget.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .pool_idle_timeout(std::time::Duration::from_secs(50))
        .user_agent(concat!("consent-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}
