//! Where the configuration comes from, and how long a warm function keeps it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::config::{Config, ConfigError};

pub const CONFIG_SECRET_ID: &str = "CONFIG_SECRET_ID";
pub const CONFIG_CACHE_SECONDS: &str = "CONFIG_CACHE_SECONDS";
pub(crate) const DEFAULT_CACHE_SECONDS: u64 = 300;

/// The place the secret's JSON is read from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        secret_id: String,
    },
    File(PathBuf),
    /// A document held in memory: the local run's embedded default, tests.
    Inline(String),
}

impl ConfigSource {
    /// The Secrets Manager secret named by `CONFIG_SECRET_ID`, with the AWS
    /// settings (region, credentials, `AWS_ENDPOINT_URL…`) from the environment.
    pub async fn from_env() -> Result<ConfigSource, ConfigError> {
        let aws = crate::tls::aws_sdk_config().await;
        Self::from_aws(&aws)
    }

    /// The same, with AWS settings already loaded (shared with other clients).
    pub(crate) fn from_aws(aws: &aws_config::SdkConfig) -> Result<ConfigSource, ConfigError> {
        let secret_id = std::env::var(CONFIG_SECRET_ID)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or(ConfigError::Environment {
                name: CONFIG_SECRET_ID,
                reason: "is required: set it to the name or ARN of the configuration secret".into(),
            })?;
        Ok(ConfigSource::SecretsManager {
            client: aws_sdk_secretsmanager::Client::new(aws),
            secret_id,
        })
    }

    /// The configuration's JSON as stored.
    pub async fn read(&self) -> Result<String, ConfigError> {
        match self {
            ConfigSource::SecretsManager { client, secret_id } => {
                let unreadable = |reason: String| ConfigError::Unreadable {
                    secret_id: secret_id.clone(),
                    reason,
                };
                let output = client
                    .get_secret_value()
                    .secret_id(secret_id)
                    .send()
                    .await
                    .map_err(|e| {
                        unreadable(
                            aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                        )
                    })?;
                output.secret_string.ok_or_else(|| {
                    unreadable(
                        "the secret has no SecretString (binary secrets are not supported)".into(),
                    )
                })
            }
            ConfigSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                    secret_id: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
            ConfigSource::Inline(text) => Ok(text.clone()),
        }
    }

    pub async fn load(&self) -> Result<Config, ConfigError> {
        Config::from_json(&self.read().await?)
    }

    /// Where the configuration is, as an operator names it.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::SecretsManager { secret_id, .. } => format!("the secret {secret_id}"),
            ConfigSource::File(path) => format!("the file {}", path.display()),
            ConfigSource::Inline(_) => "the configuration in memory".into(),
        }
    }

    /// Stores `text` where the configuration was read from: a new version of
    /// the secret (the functions pick it up when their cache expires), or the
    /// file replaced in one step, keeping its permissions, so that a reader
    /// never sees half a document.
    pub async fn write(&self, text: &str) -> Result<(), ConfigError> {
        match self {
            ConfigSource::SecretsManager { client, secret_id } => client
                .put_secret_value()
                .secret_id(secret_id)
                .secret_string(text)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| ConfigError::Unwritable {
                    secret_id: secret_id.clone(),
                    reason: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                }),
            ConfigSource::File(path) => {
                let unwritable = |e: std::io::Error| ConfigError::Unwritable {
                    secret_id: path.display().to_string(),
                    reason: e.to_string(),
                };
                let mut staged = path.clone().into_os_string();
                staged.push(".consent-sync-new");
                let staged = PathBuf::from(staged);
                std::fs::write(&staged, text).map_err(unwritable)?;
                let kept = std::fs::metadata(path)
                    .and_then(|m| std::fs::set_permissions(&staged, m.permissions()))
                    .and_then(|()| std::fs::rename(&staged, path));
                if let Err(e) = kept {
                    let _ = std::fs::remove_file(&staged);
                    return Err(unwritable(e));
                }
                Ok(())
            }
            ConfigSource::Inline(_) => Err(ConfigError::Unwritable {
                secret_id: "the configuration in memory".into(),
                reason: "it has no place to be written to: pass --config FILE or CONFIG_SECRET_ID"
                    .into(),
            }),
        }
    }
}

/// Reads `CONFIG_CACHE_SECONDS` (default 300).
pub(crate) fn cache_ttl_from_env() -> Result<Duration, ConfigError> {
    match std::env::var(CONFIG_CACHE_SECONDS) {
        Err(_) => Ok(Duration::from_secs(DEFAULT_CACHE_SECONDS)),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| ConfigError::Environment {
                name: CONFIG_CACHE_SECONDS,
                reason: format!("must be a whole number of seconds, not {v:?}"),
            }),
    }
}

/// Keeps the loaded configuration for `ttl`, so warm invocations do not read
/// the secret each time. A failed load is not cached: the next call retries.
#[derive(Debug)]
pub struct ConfigCache {
    source: ConfigSource,
    ttl: Duration,
    loaded: Mutex<Option<(Instant, Arc<Config>)>>,
}

impl ConfigCache {
    pub fn new(source: ConfigSource, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            loaded: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<Arc<Config>, ConfigError> {
        // Held across the read so that concurrent requests share one read.
        let mut loaded = self.loaded.lock().await;
        if let Some((at, config)) = loaded.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.source.load().await?);
        *loaded = Some((Instant::now(), config.clone()));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_source_is_reread_only_after_the_ttl() {
        let dir = std::env::temp_dir().join(format!("consent-sync-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        let config = |org: &str| {
            serde_json::json!({
                "client_id": "c", "client_secret": "s", "tenant_id": "t",
                "server_instance": "https://x.crm.dynamics.com",
                "mappings": [{"column": "donotemail", "channel": "email", "invert": true}],
                "didomi": {"organization_id": org, "api_key": "k", "api_secret": "s"},
                "didomi_webhook": {"auth": "none"}
            })
            .to_string()
        };
        std::fs::write(&path, config("first")).unwrap();
        let cache = ConfigCache::new(ConfigSource::File(path.clone()), Duration::from_millis(200));

        assert_eq!(cache.get().await.unwrap().didomi.organization_id, "first");
        std::fs::write(&path, config("second")).unwrap();
        assert_eq!(cache.get().await.unwrap().didomi.organization_id, "first");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cache.get().await.unwrap().didomi.organization_id, "second");

        std::fs::write(&path, "{").unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(cache.get().await, Err(ConfigError::NotJson(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
