//! `consent-sync`: the operator tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "consent-sync",
    version,
    about = "Keeps Didomi consent choices and Dynamics 365 contacts in step"
)]
struct Cli {
    /// The configuration (the secret's JSON) in a file. Without it, the secret
    /// named by CONFIG_SECRET_ID; `local` uses its embedded default instead.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    consent_sync::logging::init_stderr("warn");
    let result = match cli.command {
        Command::Local { event, port, serve } => {
            consent_sync_cli::local::run(consent_sync_cli::local::Options {
                config: cli.config,
                event,
                port,
                serve,
            })
            .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("consent-sync: {reason}");
            ExitCode::FAILURE
        }
    }
}
