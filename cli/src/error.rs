//! What stops a command, as the operator reads it: one line that says what
//! failed and, where there is one, what to do. A command that ran but found
//! something (a check that failed, writes refused) is a `Report` that is not
//! ok, not an error.

use consent_sync::dataverse::registration::RegistrationError;
use consent_sync::dataverse::DataverseError;
use consent_sync::didomi::export::ExportError;
use consent_sync::didomi::DidomiError;
use consent_sync::reconcile::ReconcileError;
use consent_sync::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no configuration: pass --config FILE or set CONFIG_SECRET_ID to the secret's name or ARN"
    )]
    NoConfiguration,
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An option's value the command cannot use.
    #[error("{0}")]
    Usage(String),
    #[error("webhook {action}: {source}")]
    Registration {
        action: &'static str,
        source: RegistrationError,
    },
    /// A Dataverse read the command needed before it could start.
    #[error("{what}: {source}")]
    Dataverse {
        what: &'static str,
        source: DataverseError,
    },
    /// A Didomi read the command needed before it could start.
    #[error("{what}: {source}")]
    Didomi {
        what: &'static str,
        source: DidomiError,
    },
    /// A customization of the environment that Dataverse refused.
    #[error("{0}")]
    Customization(String),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Export(#[from] ExportError),
    /// An SQS call of `replay` or of the local event source.
    #[error("the queue: {0}")]
    Queue(String),
    /// A step of the local run (the simulators, the sample files).
    #[error("{0}")]
    Local(String),
}

impl CliError {
    /// A Dataverse read the command needed, named by `what`.
    pub fn dataverse(what: &'static str) -> impl FnOnce(DataverseError) -> CliError {
        move |source| CliError::Dataverse { what, source }
    }

    pub fn registration(action: &'static str) -> impl FnOnce(RegistrationError) -> CliError {
        move |source| CliError::Registration { action, source }
    }

    /// An SQS failure with the service's own code and message.
    pub fn queue<E>(error: aws_sdk_sqs::error::SdkError<E>) -> CliError
    where
        E: std::error::Error + 'static,
    {
        CliError::Queue(aws_sdk_sqs::error::DisplayErrorContext(error).to_string())
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
