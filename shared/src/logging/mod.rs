//! JSON log lines, and pseudonyms for identifiers that must not be logged.

pub mod lambda_format;

use sha2::Sha256;

use crate::secret::Secret;
use tracing_subscriber::EnvFilter;

/// Starts logging to standard output, where Lambda collects it, one flat
/// JSON object a line as Lambda and CloudWatch read them
/// ([`lambda_format`]); `service` names the function. The level comes from
/// `RUST_LOG`, else from Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`.
pub fn init(service: &str) {
    let format = lambda_format::LambdaJson {
        service: std::env::var("POWERTOOLS_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| service.to_string()),
    };
    let _ = tracing_subscriber::fmt()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(format)
        .with_writer(std::io::stdout)
        .with_env_filter(filter("info"))
        .try_init();
}

/// JSON logging for the CLI, whose standard output is for the operator,
/// through `writer` (standard error, kept out of a progress line);
/// `default_level` applies unless `RUST_LOG` is set.
pub fn init_with<W>(writer: W, default_level: &str)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    // try_init: a second call (tests, the local run) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(writer)
        .with_env_filter(filter(default_level))
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}

/// `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `default_level`; the AWS
/// SDK's own info lines are noise in every invocation.
fn filter(default_level: &str) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::new(directives),
        _ => {
            let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .map(|l| l.trim().to_ascii_lowercase())
                .map(|l| if l == "fatal" { "error".to_string() } else { l })
                .filter(|l| ["trace", "debug", "info", "warn", "error"].contains(&l.as_str()))
                .unwrap_or_else(|| default_level.to_string());
            EnvFilter::new(format!(
                "{level},aws_config=warn,aws_smithy_runtime=warn,hyper_util=warn"
            ))
        }
    }
}

/// HMAC-SHA256 (RFC 2104), from the `hmac` crate the AWS SDK compiles too.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // Any key length is valid for HMAC: the error cannot happen.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Keyed, short, stable stand-ins for personal identifiers (an e-mail
/// address, say), so that log lines about one user can be correlated
/// without naming them. Keyed, so that someone holding the logs cannot
/// confirm a guessed address by hashing it.
#[derive(Clone, Copy)]
pub struct Pseudonyms<'a> {
    key: &'a Secret,
}

impl<'a> Pseudonyms<'a> {
    pub fn new(key: &'a Secret) -> Self {
        Pseudonyms { key }
    }

    /// 12 hex digits of HMAC-SHA256(key, the identifier trimmed and lower-cased).
    pub fn of(&self, identifier: &str) -> String {
        let digest = hmac_sha256(
            self.key.expose().as_bytes(),
            identifier.trim().to_lowercase().as_bytes(),
        );
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Replaces every occurrence of `identifier` in `text` by its pseudonym:
    /// for downstream error messages that may quote it.
    pub(crate) fn redact(&self, text: &str, identifier: &str) -> String {
        if identifier.is_empty() {
            return text.to_string();
        }
        text.replace(identifier, &format!("<user {}>", self.of(identifier)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_templates_rust_log_directives_parse() {
        // template.yaml sets RUST_LOG to "<LogLevel>,…" with LogLevel in upper case.
        for level in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] {
            let directives =
                format!("{level},aws_config=warn,aws_smithy_runtime=warn,hyper_util=warn");
            let filter = EnvFilter::try_new(&directives).unwrap();
            assert_eq!(
                filter.max_level_hint(),
                Some(
                    level
                        .parse::<tracing_subscriber::filter::LevelFilter>()
                        .unwrap()
                )
                .map(|l| l.max(tracing_subscriber::filter::LevelFilter::WARN)),
                "{directives}"
            );
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let digest = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        let digest = hmac_sha256(
            &long_key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn pseudonyms_are_short_stable_case_insensitive_and_keyed() {
        let key = Secret::new("k1");
        let pseudonyms = Pseudonyms::new(&key);
        let a = pseudonyms.of("Jane.Doe@example.com");
        assert_eq!(a.len(), 12);
        assert_eq!(a, pseudonyms.of("jane.doe@example.com"));
        assert_ne!(a, pseudonyms.of("john@example.com"));
        let other = Secret::new("k2");
        assert_ne!(a, Pseudonyms::new(&other).of("jane.doe@example.com"));
        // Not the plain hash anyone could compute from a guess.
        let plain: String = Sha256::digest(b"jane.doe@example.com")[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(a, plain);
    }

    #[test]
    fn redaction_removes_the_identifier() {
        let key = Secret::new("k1");
        let pseudonyms = Pseudonyms::new(&key);
        let text = pseudonyms.redact("duplicate: jane@example.com exists", "jane@example.com");
        assert!(!text.contains("jane@example.com"));
        assert!(text.contains(&pseudonyms.of("jane@example.com")));
    }
}
