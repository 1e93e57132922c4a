//! What a webhook function sets up once at init and every invocation
//! shares, from the Lambda environment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};

use crate::config::{Config, ConfigError};
use crate::config_source::{cache_ttl_from_env, ConfigCache, ConfigSource};
use crate::dataverse::consent_records::ResolvedCache;
use crate::dataverse::DataverseClient;
use crate::didomi::DidomiClient;
use crate::gateway::{rejected, require_post};
use crate::parking::Parking;
use crate::retry::RetryPolicy;

/// What a webhook function sets up once and every invocation shares: the
/// configuration (read from the secret, cached), the Dataverse and Didomi
/// clients with their tokens and connections, its parked queue, and the
/// consent purposes and topics resolved once per configuration load.
#[derive(Debug)]
pub struct Setup {
    pub config: ConfigCache,
    pub dataverse: DataverseClient,
    pub didomi: DidomiClient,
    pub parking: Parking,
    pub resolved: ResolvedCache,
}

impl Setup {
    /// From the Lambda environment (`CONFIG_SECRET_ID`,
    /// `CONFIG_CACHE_SECONDS`, `PARKED_QUEUE_URL`, the AWS variables). The
    /// secret itself is read on the first invocation.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let ttl = cache_ttl_from_env()?;
        // One load of the AWS settings, shared by the Secrets Manager and
        // SQS clients.
        let aws = crate::tls::aws_sdk_config().await;
        let source = ConfigSource::from_aws(&aws)?;
        let mut setup = Self::new(source, ttl);
        setup.parking = Parking::from_env(&aws);
        Ok(setup)
    }

    /// Without a parked queue (tests, the local run).
    pub fn new(source: ConfigSource, ttl: Duration) -> Self {
        let http = crate::http_client();
        Setup {
            config: ConfigCache::new(source, ttl),
            dataverse: DataverseClient::new(http.clone(), RetryPolicy::default()),
            didomi: DidomiClient::new(http, RetryPolicy::default()),
            parking: Parking::disabled(),
            resolved: ResolvedCache::default(),
        }
    }

    /// The start of every request: a POST, and the configuration. `Ok(Err)`
    /// is the answer to send at once; a configuration that cannot be loaded
    /// fails the invocation itself (`Err`), naming the field.
    pub async fn accept(
        &self,
        request: &ApiGatewayV2httpRequest,
        started: Instant,
    ) -> Result<Result<Arc<Config>, ApiGatewayV2httpResponse>, ConfigError> {
        if let Err(rejection) = require_post(request) {
            return Ok(Err(rejected(rejection, started)));
        }
        let config = self
            .config
            .get()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "configuration"))?;
        Ok(Ok(config))
    }
}
