//! The HTTPS clients, and the system's trusted root certificates they share.
//!
//! reqwest (Dataverse, Entra ID, Didomi) and the AWS SDK (Secrets Manager,
//! SQS) would each read the certificate store on their own — about 300
//! files on a Debian host — during a function's init. Here it is read once
//! per process, and both are given the same roots.

use std::sync::OnceLock;
use std::time::Duration;

use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use base64::Engine;

/// The system's root certificates (DER), read on first use.
pub(crate) fn native_roots() -> &'static [Vec<u8>] {
    static ROOTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::warn!(
                errors = found.errors.len(),
                "no trusted root certificates found: HTTPS requests will fail"
            );
        }
        found.certs.iter().map(|der| der.to_vec()).collect()
    })
}

/// The HTTP client every downstream call goes through: rustls with the
/// shared roots, pooled connections kept warm between invocations, a
/// connect timeout well inside any invocation budget.
pub fn http_client() -> reqwest::Client {
    let roots = native_roots()
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok());
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(concat!("consent-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}

/// The AWS settings from the environment, with an HTTPS client that trusts
/// the shared roots instead of reading the store again.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};

    let mut pem = String::new();
    for der in native_roots() {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let trust = TrustStore::empty().with_native_roots(false);
    let trust = if pem.is_empty() {
        trust
    } else {
        trust.with_pem_certificate(pem.into_bytes())
    };
    if let Ok(context) = TlsContext::builder().with_trust_store(trust).build() {
        let client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https();
        loader = loader.http_client(SharedHttpClient::new(TlsOnFirstUse(client)));
    }
    loader.load().await
}

/// The SDK's HTTPS client without its check at client construction. To
/// validate each client it constructs, the SDK builds a connector — a whole
/// TLS set-up, every root certificate parsed — and drops it: three at a
/// function's init (Secrets Manager, SQS, and the STS client of the
/// web-identity credential provider), more CPU than the rest of the init
/// together (`docs/performance.md`). The connector is still built the first
/// time a request needs it, and cached by the SDK per timeout settings.
#[derive(Debug)]
struct TlsOnFirstUse(SharedHttpClient);

impl HttpClient for TlsOnFirstUse {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}
