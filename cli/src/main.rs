//! `consent-sync`: the operator tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use consent_sync_cli::error::CliError;
use consent_sync_cli::{report, webhook};

#[derive(Parser)]
#[command(
    name = "consent-sync",
    version,
    about = "Keeps Didomi consent choices and Dynamics 365 contacts in step"
)]
struct Cli {
    /// The configuration (the secret's JSON) in a file, instead of the
    /// secret; `local` uses its embedded default without it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The Secrets Manager secret (name or ARN) holding the configuration,
    /// read with your AWS credentials when --config is not given.
    #[arg(long, global = true, value_name = "ID", env = "CONFIG_SECRET_ID")]
    secret_id: Option<String>,
    /// Print one JSON document instead of a summary, for scripts (every
    /// command but `local`, whose walkthrough is for a person).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs didomi-to-dynamics on this machine: against a simulated Dataverse
    /// seeded with sample contacts or, with --config, a real environment. It
    /// replays a sample Didomi delivery and prints what changed on the contact.
    Local {
        /// The Didomi delivery to replay (default: events/didomi-user-updated.json).
        #[arg(long, value_name = "FILE")]
        event: Option<PathBuf>,
        /// Port of the local HTTP endpoint on 127.0.0.1 (default: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Keep serving the endpoint after the replay, until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// The first day: builds `mappings` from Didomi's purposes and the
    /// contact table's columns. Shows the plan and changes nothing unless
    /// --write is given.
    Init {
        /// The solution publisher's prefix of new columns (`{prefix}_{purpose id}`).
        #[arg(long, value_name = "P", default_value = consent_sync::setup::DEFAULT_PREFIX, value_parser = consent_sync::setup::Prefix::parse)]
        prefix: consent_sync::setup::Prefix,
        /// With --write: create the Yes/No columns that are missing, then publish.
        #[arg(long)]
        create_columns: bool,
        /// With --write and upsert_mode: define the alternate key on
        /// contact_key, so that a new person's contact is created once.
        #[arg(long)]
        create_key: bool,
        /// Apply the plan: create what is asked, then write the mappings
        /// back where the configuration came from (only `mappings` changes).
        #[arg(long)]
        write: bool,
        /// Do not ask before changing anything (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// The Dataverse webhook that sends contact changes to dynamics-to-didomi.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Drains parked deliveries completely (a dead-letter queue, typically):
    /// reads each one's current truth from its source and applies it;
    /// deletes a record once applied or up to date.
    Replay {
        /// A queue's URL; repeat for several (both dead-letter queues).
        #[arg(long = "queue", value_name = "URL", env = "PARKED_QUEUE_URL")]
        queues: Vec<String>,
        /// Go through every record and say what each would do; change
        /// nothing, and leave each record visible as it was.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compares every Didomi user with the contacts of the same key and
    /// reports what differs per column; with --apply, writes the chosen
    /// side's state to the other.
    Reconcile {
        /// The side whose state is the truth.
        #[arg(long, value_enum, default_value = "didomi")]
        from: Side,
        /// Write the differences (default: report only).
        #[arg(long)]
        apply: bool,
        /// Handle at most N differing contacts (a first trial run).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Contacts per UpdateMultiple / CreateMultiple request (1-1000,
        /// default 100); smaller when plug-ins make contact writes slow.
        #[arg(long, value_name = "N")]
        batch_size: Option<usize>,
        /// Exit with status 2 when a report (without --apply) found
        /// differences, for scripts and scheduled checks; without it a run
        /// that worked exits 0 whatever it found.
        #[arg(long)]
        exit_code: bool,
        /// Read Didomi's side from its batch export instead of its API: a
        /// directory or s3://bucket/prefix, naming the export (its latest
        /// complete partition is read) or one date=YYYY-MM-DD partition.
        #[arg(long, value_name = "SOURCE")]
        didomi_export: Option<String>,
        /// The IAM role to assume to read Didomi's export bucket (Didomi's
        /// bucket_access_role_arn).
        #[arg(
            long,
            value_name = "ARN",
            env = "DIDOMI_EXPORT_ROLE_ARN",
            requires = "didomi_export"
        )]
        role_arn: Option<String>,
    },
    /// Runs the watch once, as the consent-watch function does on its
    /// schedule: registration health, failed webhook jobs of the last 24
    /// hours, drift, optional repair. Prints one figure per line.
    Watch {
        /// Compare every user of Didomi's batch export (directory or
        /// s3://…) instead of the contacts modified in the last 24 hours.
        #[arg(long, value_name = "SOURCE", env = "DIDOMI_EXPORT")]
        didomi_export: Option<String>,
        /// The IAM role to assume to read Didomi's export bucket.
        #[arg(long, value_name = "ARN", env = "DIDOMI_EXPORT_ROLE_ARN")]
        role_arn: Option<String>,
        /// Write Didomi's state to the differing contacts, as
        /// `reconcile --apply` would.
        #[arg(long)]
        repair: bool,
        /// At most N recently modified contacts (without an export).
        #[arg(long, value_name = "N", default_value_t = consent_sync::watch::DEFAULT_SAMPLE)]
        sample: usize,
        /// Name of the service endpoint `webhook register` created.
        #[arg(long, default_value = consent_sync::dataverse::registration::DEFAULT_NAME)]
        name: String,
    },
    /// Prints the pseudonym that stands for a Didomi organization_user_id in
    /// the functions' logs (keyed by log_pseudonym_key), to find its lines.
    Pseudonym {
        /// The organization_user_id, e.g. an e-mail address.
        organization_user_id: String,
    },
    /// Checks the configuration and what it points at.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Side {
    Didomi,
    Dynamics,
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Creates the service endpoint and the contact Create/Update steps, or
    /// brings them in line with the configuration (url, key, columns).
    Register {
        /// The deployed dynamics-to-didomi URL (https), e.g. the stack's DynamicsWebhookUrl output.
        #[arg(long)]
        url: String,
        /// Name of the service endpoint, to keep several deployments apart.
        #[arg(long, default_value = consent_sync::dataverse::registration::DEFAULT_NAME)]
        name: String,
    },
    /// Removes exactly what `register` made.
    Unregister {
        /// Name of the service endpoint `register` created.
        #[arg(long, default_value = consent_sync::dataverse::registration::DEFAULT_NAME)]
        name: String,
    },
    /// Shows the registration, whether it matches the configuration, and
    /// recent failed deliveries.
    Status {
        /// Name of the service endpoint `register` created.
        #[arg(long, default_value = consent_sync::dataverse::registration::DEFAULT_NAME)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates the configuration, the mapped columns against the
    /// environment's metadata, the Entra ID token, WhoAmI and a Didomi session.
    Check,
}

/// Runs `command` with the configuration (`--config FILE`, else the secret).
async fn with_config<F, Fut>(path: Option<&PathBuf>, command: F) -> Result<report::Report, CliError>
where
    F: FnOnce(consent_sync::Config) -> Fut,
    Fut: std::future::Future<Output = Result<report::Report, CliError>>,
{
    let config = consent_sync_cli::load_config(path).await?;
    command(config).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The local run prints a narrative: the functions' log lines go to a
    // file it names. Elsewhere they go around the reconcile progress line,
    // never into it.
    let local_log = matches!(cli.command, Command::Local { .. })
        .then(|| {
            std::env::temp_dir().join(format!("consent-sync-local-{}.log", std::process::id()))
        })
        .and_then(|path| Some((std::fs::File::create(&path).ok()?, path)))
        .map(|(file, path)| {
            consent_sync::logging::init_with(std::sync::Arc::new(file), "info");
            path
        });
    if local_log.is_none() {
        consent_sync::logging::init_with(
            || consent_sync_cli::reconcile::progress::AroundProgress,
            "warn",
        );
    }
    if let Some(secret_id) = &cli.secret_id {
        // The one place the configuration loaders read it from.
        std::env::set_var(consent_sync::config_source::CONFIG_SECRET_ID, secret_id);
    }
    let ok = match cli.command {
        Command::Local { .. } if cli.json => {
            eprintln!("consent-sync: `local` prints a walkthrough for a person; --json is not available for it");
            false
        }
        Command::Local { event, port, serve } => {
            let result = consent_sync_cli::local::run(consent_sync_cli::local::Options {
                config: cli.config,
                event,
                port,
                serve,
                log: local_log,
            })
            .await;
            if let Err(reason) = &result {
                eprintln!("consent-sync: {reason}");
            }
            result.is_ok()
        }
        Command::Init {
            prefix,
            create_columns,
            create_key,
            write,
            yes,
        } => {
            let options = consent_sync_cli::init::Options {
                prefix,
                create_columns,
                create_key,
                write,
                yes,
                json: cli.json,
            };
            let result = match consent_sync_cli::config_source(cli.config.as_ref()).await {
                Ok(source) => consent_sync_cli::init::run(source, options).await,
                Err(e) => Err(e),
            };
            report::print(result, cli.json)
        }
        Command::Webhook { command } => {
            let result = with_config(cli.config.as_ref(), |config| async move {
                match command {
                    WebhookCommand::Register { url, name } => {
                        webhook::register(&config, &name, &url).await
                    }
                    WebhookCommand::Unregister { name } => {
                        webhook::unregister(&config, &name).await
                    }
                    WebhookCommand::Status { name } => webhook::status(&config, &name).await,
                }
            })
            .await;
            report::print(result, cli.json)
        }
        Command::Replay { queues, dry_run } => {
            let result = with_config(cli.config.as_ref(), |config| async move {
                consent_sync_cli::replay::run(&config, queues, dry_run).await
            })
            .await;
            report::print(result, cli.json)
        }
        Command::Reconcile {
            from,
            apply,
            limit,
            batch_size,
            exit_code,
            didomi_export,
            role_arn,
        } => {
            use consent_sync_cli::reconcile::{Options, Truth};
            let from = match from {
                Side::Didomi => Truth::Didomi,
                Side::Dynamics => Truth::Dynamics,
            };
            let result = with_config(cli.config.as_ref(), |config| async move {
                let export = didomi_export
                    .map(|source| consent_sync::didomi::export::Export::parse(&source, role_arn))
                    .transpose()?;
                let options = Options {
                    limit,
                    batch_size,
                    export,
                    ..Options::new(from, apply)
                };
                consent_sync_cli::reconcile::run(&config, options).await
            })
            .await;
            let differing = result
                .as_ref()
                .map(|r| r.json["differing"].as_u64().unwrap_or(0) > 0)
                .unwrap_or(false);
            let ok = report::print(result, cli.json);
            if ok && exit_code && !apply && differing {
                return ExitCode::from(2);
            }
            ok
        }
        Command::Watch {
            didomi_export,
            role_arn,
            repair,
            sample,
            name,
        } => {
            let result = with_config(cli.config.as_ref(), |config| async move {
                consent_sync_cli::watch::run(config, didomi_export, role_arn, repair, sample, name)
                    .await
            })
            .await;
            report::print(result, cli.json)
        }
        Command::Pseudonym {
            organization_user_id,
        } => {
            let result = consent_sync_cli::load_config(cli.config.as_ref())
                .await
                .map(|config| {
                    let pseudonym = config.pseudonyms().of(&organization_user_id);
                    report::Report::success(
                        format!("{pseudonym}\n"),
                        serde_json::json!({ "pseudonym": pseudonym }),
                    )
                });
            report::print(result, cli.json)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let result = with_config(cli.config.as_ref(), |config| async move {
                consent_sync_cli::check::run(&config).await
            })
            .await;
            report::print(result, cli.json)
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
