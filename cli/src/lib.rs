//! The operator tool `consent-sync`: its commands as plain functions, so that
//! tests drive the same code as the binary.

pub mod check;
pub mod error;
pub mod event_source;
pub mod init;
pub mod local;
pub mod reconcile;
pub mod replay;
pub mod report;
pub mod watch;
pub mod webhook;

use std::path::PathBuf;
use std::time::Duration;

use consent_sync::{Config, ConfigSource, Deadline};
use error::CliError;

/// How long one operator command may take against the services.
pub const COMMAND_BUDGET: Duration = Duration::from_secs(120);

/// The configuration the command works with: `--config FILE`, else the
/// secret named by `CONFIG_SECRET_ID`.
pub async fn load_config(path: Option<&PathBuf>) -> Result<Config, CliError> {
    Ok(config_source(path).await?.load().await?)
}

/// Where the configuration is: `--config FILE`, else the secret named by
/// `CONFIG_SECRET_ID`.
pub async fn config_source(path: Option<&PathBuf>) -> Result<ConfigSource, CliError> {
    Ok(match path {
        Some(path) => ConfigSource::File(path.clone()),
        None => {
            if std::env::var(consent_sync::config_source::CONFIG_SECRET_ID)
                .map_or(true, |v| v.trim().is_empty())
            {
                return Err(CliError::NoConfiguration);
            }
            ConfigSource::from_env().await?
        }
    })
}

pub fn deadline() -> Deadline {
    Deadline::after(COMMAND_BUDGET)
}
