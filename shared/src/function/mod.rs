//! What a webhook function is: the trait both directions implement, and
//! what they set up at init. Below the flows, which implement it, and the
//! dispatch (`invocation`) and the drain, which run it.

mod setup;

pub use setup::Setup;

use std::future::Future;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};

use crate::config::ConfigError;
use crate::retry::Deadline;

/// A function that answers webhooks and drains its parked queue.
pub trait Function {
    fn handle(
        &self,
        request: &ApiGatewayV2httpRequest,
        deadline: Deadline,
    ) -> impl Future<Output = Result<ApiGatewayV2httpResponse, ConfigError>> + Send;

    /// Its configuration and clients, which draining its parked queue takes too.
    fn setup(&self) -> &Setup;
}
