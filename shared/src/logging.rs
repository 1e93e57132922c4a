//! JSON log lines, and pseudonyms for identifiers that must not be logged.

use sha2::{Digest, Sha256};
use tracing_subscriber::EnvFilter;

/// Starts JSON logging to standard output, where Lambda collects it. The
/// level comes from `RUST_LOG`, else from Lambda's `AWS_LAMBDA_LOG_LEVEL`,
/// else `info`.
pub fn init() {
    init_with(std::io::stdout, "info");
}

/// JSON logging to standard error, for the CLI, whose standard output is
/// for the operator; `default_level` applies unless `RUST_LOG` is set.
pub fn init_stderr(default_level: &str) {
    init_with(std::io::stderr, default_level);
}

fn init_with<W>(writer: W, default_level: &str)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::new(directives),
        _ => {
            let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .map(|l| l.trim().to_ascii_lowercase())
                .map(|l| if l == "fatal" { "error".to_string() } else { l })
                .filter(|l| ["trace", "debug", "info", "warn", "error"].contains(&l.as_str()))
                .unwrap_or_else(|| default_level.to_string());
            // The AWS SDK's info lines are noise in every invocation.
            EnvFilter::new(format!(
                "{level},aws_config=warn,aws_smithy_runtime=warn,hyper_util=warn"
            ))
        }
    };
    // try_init: a second call (tests, the local run) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(writer)
        .with_env_filter(filter)
        // The runtime's span carries the invocation's requestId.
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}

/// A short, stable stand-in for a personal identifier (an email address,
/// say), so that log lines about one user can be correlated without naming them.
pub fn pseudonym(identifier: &str) -> String {
    let digest = Sha256::digest(identifier.trim().to_lowercase().as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces every occurrence of `identifier` in `text` by its pseudonym:
/// for downstream error messages that may quote it.
pub fn redact(text: &str, identifier: &str) -> String {
    if identifier.is_empty() {
        return text.to_string();
    }
    text.replace(identifier, &format!("<user {}>", pseudonym(identifier)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_short_stable_and_case_insensitive() {
        let a = pseudonym("Jane.Doe@example.com");
        assert_eq!(a.len(), 12);
        assert_eq!(a, pseudonym("jane.doe@example.com"));
        assert_ne!(a, pseudonym("john@example.com"));
        assert!(!a.contains("jane"));
    }

    #[test]
    fn redaction_removes_the_identifier() {
        let text = redact("duplicate: jane@example.com exists", "jane@example.com");
        assert!(!text.contains("jane@example.com"));
        assert!(text.contains(&pseudonym("jane@example.com")));
    }
}
